"""`llmcls compare RUN_DIR...`: one table of the runs' metrics (terminal, and Markdown + CSV with `--out`).

    llmcls compare runs/linear runs/encoder-twoway --out runs/comparison     # runs/comparison.md, .csv
    llmcls compare runs/                                                      # every finished run below runs/

Every number comes from the runs' `metrics.json` files; nothing is recomputed or cached here.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from llmcls.config import build_parser, parse
from llmcls.errors import LlmclsError
from llmcls.progress import console, results
from llmcls.runs import RunDir, atomic_write

# (header, where the value lives, format); "-" where a run has no such value (e.g. P@1 without scores)
COLUMNS = [
    ("run", "run", "{}"), ("system", "system", "{}"), ("model", "model", "{}"), ("split", "split", "{}"),
    ("n", "metrics.n_examples", "{}"),
    ("micro-F1", "metrics.micro_f1", "{:.4f}"), ("macro-F1", "metrics.macro_f1", "{:.4f}"),
    ("samples-F1", "metrics.samples_f1", "{:.4f}"),
    ("precision", "metrics.micro_precision", "{:.4f}"), ("recall", "metrics.micro_recall", "{:.4f}"),
    ("Hamming", "metrics.hamming_loss", "{:.5f}"), ("label acc", "metrics.label_accuracy", "{:.5f}"),
    ("subset acc", "metrics.subset_accuracy", "{:.4f}"), ("P@1", "metrics.p_at_1", "{:.4f}"),
    ("ex/s", "timing.examples_per_s", "{:,.1f}"),
]


@dataclass
class CompareArguments:
    out: str | None = field(default=None, metadata={"help": "Write PREFIX.md and PREFIX.csv."})
    split: str | None = field(default=None, metadata={
        "help": "Compare this split's metrics (metrics.<split>.json) instead of each run's metrics.json."})


def make_parser():
    return build_parser([CompareArguments], prog="llmcls compare",
                        description="Compare run directories in one metrics table.",
                        positional=("runs", {"nargs": "+", "help": "Run directories (or folders of runs)."}))


def main(argv: list[str] | None = None) -> int:
    args, extra = parse(make_parser(), argv)
    records = [{"run": path.name, **RunDir(path).read_metrics(args.split)} for path in find_runs(extra.runs)]
    header, rows = table_rows(records)
    results.print(rich_table(header, rows, title="llmcls compare"))
    if args.out:
        prefix = Path(args.out)
        atomic_write(prefix.with_name(prefix.name + ".md"), markdown(header, rows))
        atomic_write(prefix.with_name(prefix.name + ".csv"), csv_text(*table_rows(records, formatted=False)))
        console.print(f"Wrote {prefix}.md and {prefix}.csv")
    return 0


def find_runs(paths: list[str]) -> list[Path]:
    """Run directories as given; a folder that is not a run stands for the finished runs below it."""
    runs: list[Path] = []
    for given in map(Path, paths):
        if not given.is_dir():
            raise LlmclsError(f"{given}: no such run directory")
        if (given / "metrics.json").exists():
            runs.append(given)
            continue
        found = sorted(p.parent for p in given.rglob("metrics.json"))
        if not found:
            raise LlmclsError(f"{given}: not a finished run directory (no metrics.json in it or below it)")
        runs += found
    return runs


def _lookup(record: dict, dotted: str):
    value = record
    for key in dotted.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def table_rows(records: list[dict], formatted: bool = True) -> tuple[list[str], list[list]]:
    """Header and one row per run: formatted strings for people, raw values (CSV) otherwise."""
    header = [name for name, _, _ in COLUMNS]
    rows = []
    for record in records:
        row = []
        for _, where, fmt in COLUMNS:
            value = _lookup(record, where)
            if formatted:
                value = "-" if value is None else fmt.format(value)
            row.append(value)
        rows.append(row)
    return header, rows


def rich_table(header: list[str], rows: list[list[str]], title: str):
    from rich.table import Table

    table = Table(title=title)
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i < 4 else "right")
    for row in rows:
        table.add_row(*row)
    return table


def metrics_table(metrics: dict, title: str):
    """All metrics of one evaluation as a two-column table."""
    rows = [[key, f"{value:.6g}" if isinstance(value, float) else str(value)] for key, value in metrics.items()]
    return rich_table(["metric", "value"], rows, title=title)


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i < 4 else "---:" for i in range(len(header)))
             + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def csv_text(header: list[str], rows: list[list]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()
