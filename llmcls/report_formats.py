"""Render a report (tables and PNG figures) as Markdown, CSV, LaTeX (booktabs) and one self-contained HTML page;
and terminal tables (rich), shared by `llmcls compare`, `llmcls evaluate` and `llmcls data`.

The renderers only lay out what `report_tables` and `plots` produced: no number is computed here. Markdown and
LaTeX refer to the PNG files written beside them; HTML embeds the same bytes as base64 data URIs, so the one .html
file can be mailed or archived alone.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import re
from dataclasses import dataclass, field
from typing import Any

from llmcls.report_tables import Interval, Table


@dataclass
class Figure:
    key: str
    title: str
    caption: str
    filename: str  # written beside the report; Markdown and LaTeX link to it by this name
    png: bytes


@dataclass
class Report:
    title: str
    summary: list[str] = field(default_factory=list)
    sections: list[Table | Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def tables(self) -> list[Table]:
        return [s for s in self.sections if isinstance(s, Table)]

    def figures(self) -> list[Figure]:
        return [s for s in self.sections if isinstance(s, Figure)]


# ------------------------------------------------------------------------------------------------ CSV
def csv_text(table: Table) -> str:
    """Raw values (full precision, no thousands separators); a value the run did not record is an empty cell,
    which spreadsheets and pandas read as missing; an interval is two columns, its low and high ends."""
    intervals = {i for row in table.rows for i, value in enumerate(row) if isinstance(value, Interval)}
    header: list[str] = []
    for i, name in enumerate(table.header):
        header += [f"{name} low", f"{name} high"] if i in intervals else [name]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in table.rows:
        cells: list[Any] = []
        for i, value in enumerate(row):
            if i in intervals:
                cells += [value.low, value.high] if isinstance(value, Interval) else ["", ""]
            else:
                cells.append("" if value is None else value)
        writer.writerow(cells)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------------ Markdown
def markdown_table(table: Table) -> str:
    align = "|" + "|".join("---:" if table.numeric(i) else "---" for i in range(len(table.header))) + "|"
    lines = ["| " + " | ".join(_md_cell(h) for h in table.header) + " |", align]
    lines += ["| " + " | ".join(_md_cell(cell) for cell in row) + " |" for row in table.text_rows()]
    return "\n".join(lines) + "\n"


def _md_text(text: str) -> str:
    """Text as itself, not as inline HTML (a label or run name `<script>` stays text): `&`, `<`, `>` as entities."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _md_cell(text: str) -> str:
    return _md_text(text).replace("|", "\\|").replace("\n", " ")


def _md_target(filename: str) -> str:
    """A link destination: as it is when plain, else in `<...>` (CommonMark's form for spaces and parentheses) with
    the characters that would end or change it backslash-escaped."""
    if not re.search(r"[\s()<>\\&]", filename):
        return filename
    return "<" + re.sub(r"([<>\\&])", r"\\\1", filename) + ">"


def markdown(report: Report) -> str:
    parts = [f"# {_md_text(report.title)}\n"]
    if report.summary:
        parts.append("".join(f"- {_md_text(line)}\n" for line in report.summary))
    for section in report.sections:
        title, caption = _md_text(section.title), _md_text(section.caption)
        if isinstance(section, Table):
            parts.append(f"## {title}\n\n{caption}\n\n{markdown_table(section)}")
        else:
            parts.append(f"## {title}\n\n![{title}]({_md_target(section.filename)})\n\n{caption}\n")
    if report.notes:
        parts.append("## Notes\n\n" + "".join(f"- {_md_text(note)}\n" for note in report.notes))
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------------ LaTeX
_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
LONG_TABLE_ROWS = 30  # taller tables break across pages (longtable) instead of overflowing one float


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def latex_table(table: Table) -> str:
    """A booktabs table; wide tables are scaled to the line width, long ones become a longtable."""
    spec = "".join("r" if table.numeric(i) else "l" for i in range(len(table.header)))
    head = " & ".join(latex_escape(h) for h in table.header) + r" \\"
    body = [" & ".join(latex_escape(cell) for cell in row) + r" \\" for row in table.text_rows()]
    caption = rf"\caption{{{latex_escape(table.title)}. {latex_escape(table.caption)}}}"
    label = rf"\label{{tab:llmcls-{table.key}}}"
    if len(table.rows) > LONG_TABLE_ROWS:
        return "\n".join([rf"{{\small\begin{{longtable}}{{{spec}}}", caption + label + r" \\", r"\toprule", head,
                          r"\midrule", r"\endhead", *body, r"\bottomrule", r"\end{longtable}}", ""])
    return "\n".join([r"\begin{table}[htbp]", r"\centering", caption, label, r"\resizebox{\linewidth}{!}{%",
                      rf"\begin{{tabular}}{{{spec}}}", r"\toprule", head, r"\midrule", *body, r"\bottomrule",
                      r"\end{tabular}}", r"\end{table}", ""])


def latex_figure(figure: Figure) -> str:
    return "\n".join([r"\begin{figure}[htbp]", r"\centering",
                      rf"\includegraphics[width=\linewidth]{{{figure.filename}}}",
                      rf"\caption{{{latex_escape(figure.title)}. {latex_escape(figure.caption)}}}",
                      rf"\label{{fig:llmcls-{figure.key}}}", r"\end{figure}", ""])


def latex(report: Report) -> str:
    """A complete document (pdflatex PREFIX.tex, with the PNGs beside it); each table can also be copied alone."""
    parts = [r"\documentclass{article}", r"\usepackage[T1]{fontenc}", r"\usepackage[landscape,margin=1.5cm]{geometry}",
             r"\usepackage{booktabs}", r"\usepackage{longtable}", r"\usepackage{graphicx}",
             rf"\title{{{latex_escape(report.title)}}}", r"\date{}", r"\begin{document}", r"\maketitle", ""]
    if report.summary:
        parts += [r"\begin{itemize}", *(rf"\item {latex_escape(line)}" for line in report.summary), r"\end{itemize}",
                  ""]
    parts += [latex_table(s) if isinstance(s, Table) else latex_figure(s) for s in report.sections]
    if report.notes:
        parts += [r"\section*{Notes}", r"\begin{itemize}", *(rf"\item {latex_escape(n)}" for n in report.notes),
                  r"\end{itemize}", ""]
    parts.append(r"\end{document}")
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------------------ HTML
_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1400px;
       padding: 0 1rem; color: #222; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
p.caption, figcaption { color: #555; font-size: 0.9rem; max-width: 70rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0; }
thead th { border-top: 2px solid #222; border-bottom: 1px solid #222; }
tbody tr:last-child td { border-bottom: 2px solid #222; }
th, td { padding: 0.25rem 0.6rem; text-align: left; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: #f6f6f6; }
img { max-width: 100%; height: auto; }
"""


def html_table(table: Table) -> str:
    def cls(i: int) -> str:
        return ' class="num"' if table.numeric(i) else ""

    head = "".join(f"<th{cls(i)}>{html.escape(h)}</th>" for i, h in enumerate(table.header))
    body = "".join("<tr>" + "".join(f"<td{cls(i)}>{html.escape(cell)}</td>" for i, cell in enumerate(row)) + "</tr>\n"
                   for row in table.text_rows())
    return (f'<section id="{table.key}">\n<h2>{html.escape(table.title)}</h2>\n'
            f'<p class="caption">{html.escape(table.caption)}</p>\n<div class="scroll"><table>\n'
            f"<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table></div>\n</section>\n")


def html_figure(figure: Figure) -> str:
    data = base64.b64encode(figure.png).decode("ascii")
    return (f'<section id="{figure.key}">\n<h2>{html.escape(figure.title)}</h2>\n<figure>'
            f'<img alt="{html.escape(figure.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(figure.caption)}</figcaption></figure>\n</section>\n")


def html_page(report: Report) -> str:
    """One file with inline CSS and the plots as data URIs: nothing else to ship with it."""
    summary = "".join(f"<li>{html.escape(line)}</li>" for line in report.summary)
    sections = "".join(html_table(s) if isinstance(s, Table) else html_figure(s) for s in report.sections)
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in report.notes)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(report.title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            f"<h1>{html.escape(report.title)}</h1>\n" + (f"<ul>{summary}</ul>\n" if summary else "") + sections
            + (f"<section id=\"notes\"><h2>Notes</h2><ul>{notes}</ul></section>\n" if notes else "")
            + "</body>\n</html>\n")


def rich_table(header: list[str], rows: list[list[str]], title: str, compact: bool = False):
    """A rich table, text columns first; `compact` drops the vertical rules for wide tables."""
    from rich import box
    from rich.table import Table as RichTable

    table = RichTable(title=title, box=box.SIMPLE_HEAD if compact else box.HEAVY_HEAD)
    for name in header:  # fold, not cut: a narrow terminal must not hide part of a value
        text = name in ("", "run", "system", "model", "split", "device", "metric", "label", "statistic")
        table.add_column(name, justify="left" if text else "right", overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


def metrics_table(metrics: dict, title: str):
    """All metrics of one evaluation as a two-column table."""
    rows = [[key, f"{value:.6g}" if isinstance(value, float) else str(value)] for key, value in metrics.items()]
    return rich_table(["metric", "value"], rows, title=title)
