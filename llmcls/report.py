"""`llmcls compare RUN_DIR...`: the comparison report of finished runs (terminal tables: the comparison and, for
two or more runs with predictions, each run's paired micro-F1 difference from the first; files with `--out`).

    llmcls compare runs/linear runs/encoder-twoway --out runs/comparison
    llmcls compare runs/                                 # every finished run below runs/, terminal only
    llmcls compare runs/ --split validation --out runs/validation --plots false

With `--out PREFIX` (its folder is created when missing; checked before anything is computed) it writes the
following (those of them an earlier report left under PREFIX that this one does not write are named in a note and
kept; the benchmark, which owns its OUTPUT_DIR/report*, removes them):

    PREFIX.md, PREFIX.tex, PREFIX.html   the whole report (HTML self-contained: inline CSS, plots as data URIs;
                                         LaTeX a booktabs document that includes the PNGs beside it)
    PREFIX.csv                           the main comparison table, raw values (empty cell: not recorded)
    PREFIX-paired.csv                    each run against the first: micro-F1 difference, paired bootstrap CI
    PREFIX-original.csv                  the original research's layout (see below)
    PREFIX-per-label.csv                 per-label F1 of every run; PREFIX-bands.csv its head/middle/tail means
    PREFIX-runs.csv                      data sources, sizes, label count, hardware and versions of each run
    PREFIX-per-label-f1.png              per-label F1 by system, labels by support in the evaluated split
    PREFIX-f1-vs-cost.png                micro-F1 against examples/s and against training time (log axes)
    PREFIX-precision-recall.png          each system's micro precision/recall, threshold curves where scores exist

Every number comes from the run directories: metrics.json (the metrics, timing, device, params trained,
environment), config.yaml (data sources and sizes), labels.json and predictions*.jsonl (per-label F1 and the
threshold curves, computed by llmcls.metrics). A value a run did not record is shown as "-".

The research notes llmcls grew from (not shipped with it) report accuracy, precision, recall, F1 and Hamming loss
without naming an averaging. Their numbers settle it: accuracy + Hamming loss = 1 in every evaluation (so accuracy
is label-wise accuracy), and F1 equals the harmonic mean of precision and recall to within rounding each time,
which holds for micro averaging and not in general for macro or per-example averaging. The "original layout" table
therefore shows label accuracy and micro precision, recall and F1, and says so in its caption.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from llmcls.config import build_parser, parse
from llmcls.errors import LlmclsError
from llmcls.progress import console, results
from llmcls.report_data import Run, find_runs, load_runs, same_examples, threshold_curve
from llmcls.report_formats import Figure, Report, csv_text, html_page, latex, markdown, rich_table
from llmcls.report_tables import (
    MISSING,
    Table,
    band_table,
    comparison_table,
    data_table,
    original_table,
    paired_table,
    per_label_table,
    shared_summary,
)
from llmcls.runs import atomic_write
from llmcls.splits import parse_ratios

__all__ = ["find_runs", "main", "make_parser"]

# every file a report may write, as PREFIX + suffix (the module docstring): those of an earlier report under the same
# prefix that a report does not write itself (no pairs, --plots false) are named in a note, or removed where the
# caller owns the prefix (`write_files`); never any other file
REPORT_SUFFIXES = (".md", ".tex", ".html", ".csv", "-paired.csv", "-original.csv", "-per-label.csv", "-bands.csv",
                   "-runs.csv", "-per-label-f1.png", "-f1-vs-cost.png", "-precision-recall.png")


@dataclass
class CompareArguments:
    out: str | None = field(default=None, metadata={"metavar": "PREFIX", "help": (
        "Write the report as PREFIX.md, PREFIX.tex and PREFIX.html (the whole report), PREFIX.csv (the comparison), "
        "PREFIX-original.csv, -per-label.csv, -bands.csv, -runs.csv, -paired.csv (two or more runs with "
        "predictions) and, unless --no_plots, the plots PREFIX-per-label-f1.png, -f1-vs-cost.png and "
        "-precision-recall.png. Its folder is created when missing.")})
    split: str | None = field(default=None, metadata={
        "help": "Compare this split's metrics (metrics.<split>.json) instead of each run's metrics.json."})
    plots: bool = field(default=True, metadata={"help": "Draw the PNG plots (and embed them in the HTML)."})


def make_parser():
    return build_parser([CompareArguments], prog="llmcls compare",
                        description="Compare run directories: one metrics table, and with --out a report in "
                                    "Markdown, CSV, LaTeX and HTML with plots.",
                        positional=("runs", {"nargs": "+", "help": "Run directories (or folders of runs)."}))


def main(argv: list[str] | None = None, notes: list[str] | tuple[str, ...] = (), owns_prefix: bool = False) -> int:
    """`notes`: what a caller (the benchmark) adds to the terminal's and the written report's notes. `owns_prefix`:
    every file named like the report's under `--out` is the caller's (the benchmark's OUTPUT_DIR/report*), so an
    earlier report's file that this one does not write is removed; else it is named in a note and kept."""
    args, extra = parse(make_parser(), argv)
    # before the work: a bad --out must not cost the tables; an empty one (an unset shell variable) is no --out
    prefix = check_out(args.out) if args.out is not None else None
    left_out: list[str] = []
    runs = load_runs(find_runs(extra.runs, args.split, left_out), args.split)
    notes = [*notes, *(f"left out: {note}" for note in left_out)]
    comparison = comparison_table(runs)  # built once: its interval column bootstraps every run's predictions
    header, rows, title = terminal_columns(comparison)
    if _table_width(header, rows) > results.width:  # too wide: one column per run instead, metrics as rows
        header, rows = ["", *(row[0] for row in rows)], [[name, *(row[i] for row in rows)]
                                                        for i, name in enumerate(header) if i > 0]
    results.print(rich_table(header, rows, title=title, compact=True))
    paired = paired_table(runs)  # bootstraps every pair once; the report reuses it
    if paired is not None:
        results.print(rich_table(paired.header, paired.text_rows(), title=paired.title, compact=True))
    # what makes rows less comparable than they look, and what was left out: in the terminal and the written report
    notes += report_notes(runs)
    for note in notes:
        console.print(f"note: {note}", soft_wrap=True, markup=False)
    if prefix is not None:
        report = build_report(runs, plots=args.plots, prefix=prefix, comparison=comparison, paired=paired,
                              notes=notes)
        for path in write_files(report, prefix, remove_stale=owns_prefix):
            console.print(f"Wrote {path}", soft_wrap=True, markup=False)  # a path must stay copyable: never wrapped
    return 0


def report_notes(runs: list[Run]) -> list[str]:
    """What a report says beside its tables: how the runs were not scored alike, then each run's own notes."""
    return scored_apart(runs) + [note for run in runs for note in run.notes]


def scored_apart(runs: list[Run]) -> list[str]:
    """What keeps the rows of one table from being scored alike, each difference named on its own: another
    evaluated split, another file for it, another number of examples, another label count, other example ids
    (training data may differ between systems: a zero-shot run has none)."""
    notes = []
    splits = _grouped(runs, lambda run: run.value("split"))
    if len(splits) > 1:
        notes.append(f"the runs differ in the evaluated split ({_which(splits)}): their rows are not scored alike")
    sources = {run.name: _evaluated_source(run) for run in runs}
    files = _grouped(runs, lambda run: sources[run.name] and sources[run.name][0])
    if len({key for _, key in filter(None, sources.values())}) > 1:  # one file's rows copied to two benchmarks' data/
        notes.append(f"the runs differ in the evaluated file ({_which(files)}): their rows are not scored alike")
    sizes = _grouped(runs, lambda run: run.value("metrics.n_examples"))
    if len(sizes) > 1:
        shared = f" ({next(iter(splits))} split of each)" if len(splits) == 1 else ""
        notes.append(f"the runs were scored on different numbers of examples: {_which(sizes)}{shared}")
    labels = _grouped(runs, lambda run: run.value("metrics.n_labels"))
    if len(labels) > 1:
        notes.append(f"the runs differ in the number of labels ({_which(labels)}): their rows are not scored alike")
    spaces = {frozenset(run.space.labels) for run in runs if run.space is not None}
    if len(spaces) > 1 and len({len(space) for space in spaces}) == 1:  # same count, other labels
        notes.append("the runs have different label spaces of the same size: their rows are not scored alike")
    if not notes and not same_examples(runs):  # e.g. test splits carved by --split_ratios with other seeds
        notes.append("the runs scored different examples (their predictions' ids differ): their rows are not scored "
                     "alike")
    return notes


def _evaluated_source(run: Run) -> tuple[str, tuple] | None:
    """Where a run's evaluated rows came from, as (what a note shows, what tells sources apart): the file given for
    the split, or, for a split carved by --split_ratios, the training file with the ratios and seed that carved it.
    None when the run recorded neither."""
    split = run.value("split") or "test"
    given = run.value(f"config.{split}")
    if given is not None:
        return str(given), (_file_content(str(given)),)
    ratios, train = run.value("config.split_ratios"), run.value("config.train")
    if not ratios or train is None:
        return None
    seed = run.value("config.split_seed")
    try:  # 0.8,0.1,0.1 and .8,.1,.1 carve the same rows
        carving = tuple(parse_ratios(str(ratios)))
    except ValueError:
        carving = str(ratios)
    return (f"{train}, its {split} split by --split_ratios {ratios} --split_seed {seed}",
            (_file_content(str(train)), carving, str(seed), split))


def _file_content(name: str) -> str:
    """What an evaluated file holds, for telling files apart: the fingerprint of its content where it can be read
    (a path, or a bundled sample's name), else the name as recorded."""
    from llmcls.data import resolve_path
    from llmcls.runs import files_fingerprint

    try:
        return files_fingerprint(resolve_path(name)) or name
    except LlmclsError:
        return name


def _grouped(runs: list[Run], value) -> dict[str, list[str]]:
    """The runs' names by the value each recorded (runs that recorded none left out): the notes say who differs."""
    names: dict[str, list[str]] = {}
    for run in runs:
        if value(run) is not None:
            names.setdefault(str(value(run)), []).append(run.name)
    return names


def _which(names_by_value: dict[str, list[str]]) -> str:
    return "; ".join(f"{', '.join(names)}: {seen}" for seen, names in names_by_value.items())


def build_report(runs: list[Run], *, plots: bool = True, prefix: Path = Path("comparison"),
                 comparison: Table | None = None, paired: Table | None = None,
                 notes: list[str] | None = None) -> Report:
    """Tables (and figures) in reading order: the comparison first and the paired differences (`comparison` and
    `paired` when the caller built them already), the long per-label table and the runs' data and environment
    last."""
    per_label = per_label_table(runs)
    bands = band_table(per_label)
    paired = paired or paired_table(runs)
    if notes is None:
        notes = report_notes(runs)
    report = Report(title="llmcls comparison", summary=[f"Runs: {len(runs)}", *shared_summary(runs)], notes=notes)
    report.sections = [comparison or comparison_table(runs), *([paired] if paired else []), original_table(runs),
                       *([bands] if bands else [])]
    if plots:
        report.sections += figures(runs, per_label, prefix.name)
    report.sections += [per_label, data_table(runs)]
    return report


def figures(runs: list[Run], per_label: Table, stem: str) -> list[Figure]:
    from llmcls import plots

    names = [run.name for run in runs]
    found: list[Figure] = []
    if per_label.rows:
        series = {name: [row[2 + i] for row in per_label.rows] for i, name in enumerate(names)}
        png = plots.per_label_f1([row[0] for row in per_label.rows], [row[1] for row in per_label.rows], series)
        found.append(Figure("per-label-f1", "Per-label F1 by system",
                            "F1 of each label for each run with predictions; labels by support in the evaluated "
                            "split (bars, log scale), most frequent on the left, rarest on the right.",
                            f"{stem}-per-label-f1.png", png))
    f1 = [_number(run.value("metrics.micro_f1")) for run in runs]
    png = plots.f1_vs_cost(names, f1, [_number(run.value("timing.examples_per_s")) for run in runs],
                           [_number(run.value("timing.train_s")) for run in runs])
    found.append(Figure("f1-vs-cost", "Micro-F1 against cost",
                        "Left: prediction throughput (examples per second, as recorded on each run's device); "
                        "right: training time. Runs that did not record the cost are left out of that panel.",
                        f"{stem}-f1-vs-cost.png", png))
    points = [_pr_point(run) for run in runs]
    curves = {i: curve for i, run in enumerate(runs) if (curve := threshold_curve(run.predictions))}
    png = plots.precision_recall(names, points, curves)
    found.append(Figure("precision-recall", "Precision and recall",
                        "Markers: each run's micro precision and recall (metrics.json). Lines: for runs whose "
                        "predictions carry scores, micro precision and recall as one global threshold is swept over "
                        "the scores (llmcls.metrics; without the run's tuned per-label thresholds or min_labels).",
                        f"{stem}-precision-recall.png", png))
    return found


def _pr_point(run: Run) -> tuple[float, float] | None:
    precision, recall = _number(run.value("metrics.micro_precision")), _number(run.value("metrics.micro_recall"))
    return None if precision is None or recall is None else (precision, recall)


def _number(value) -> float | None:
    """A plottable number, or None (not recorded, or something else recorded in its place)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def check_out(out: str) -> Path:
    """The --out prefix, once its folder exists (created when missing) and takes files: else one line naming
    --out."""
    import tempfile

    if not out.strip():
        raise LlmclsError("--out is empty; give a file name prefix such as runs/comparison (the files are PREFIX.md, "
                          "PREFIX.csv, ...), or leave --out out for the terminal table alone")
    prefix = Path(out)
    if out.endswith(("/", os.sep)) or prefix.name in ("", ".", ".."):
        raise LlmclsError(f"--out {out}: expected a file name prefix such as runs/comparison (the files are "
                          "PREFIX.md, PREFIX.csv, ...), got a folder")
    folder = prefix.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        why = "a file is in the way" if isinstance(err, (FileExistsError, NotADirectoryError)) else err.strerror
        raise LlmclsError(f"--out {out}: cannot create the folder {folder} ({why or err})") from None
    try:
        with tempfile.TemporaryFile(dir=folder):  # what the writes need: a new file in that folder
            pass
    except OSError as err:
        raise LlmclsError(f"--out {out}: cannot write files in {folder} ({err.strerror or err})") from None
    return prefix


def write_files(report: Report, prefix: Path, remove_stale: bool = False) -> list[Path]:
    """Write every file of the report (the names follow the module docstring). Files named like the report's that
    this one does not write (an earlier report's paired table, its plots) are removed with `remove_stale`, else
    named in a note and kept: a file of that name may be a user's own (`--out paper/fig` beside a hand-made
    paper/fig-f1-vs-cost.png), and nothing records which files an earlier report wrote."""
    def named(suffix: str) -> Path:
        return prefix.with_name(prefix.name + suffix)

    outputs: dict[Path, str | bytes] = {named(".md"): markdown(report), named(".tex"): latex(report),
                                        named(".html"): html_page(report)}
    for table in report.tables():
        outputs[named(".csv" if table.key == "comparison" else f"-{table.key}.csv")] = csv_text(table)
    outputs.update({prefix.with_name(figure.filename): figure.png for figure in report.figures()})
    for path, content in outputs.items():
        try:
            atomic_write(path, content)
        except LlmclsError as err:  # e.g. a folder where a file goes
            raise LlmclsError(f"--out {prefix}: {err}") from None
    stale = [path for path in map(named, REPORT_SUFFIXES) if path not in outputs and path.is_file()]
    for path in stale if remove_stale else ():
        try:
            path.unlink()
        except OSError as err:
            raise LlmclsError(f"--out {prefix}: cannot remove {path}, left by an earlier report "
                              f"({err.strerror or err})") from None
        console.print(f"Removed {path} (an earlier report's; this one has none)", soft_wrap=True, markup=False)
    if stale and not remove_stale:
        console.print(f"note: this report does not write {', '.join(p.name for p in stale)}, which {prefix.parent} "
                      "holds (an earlier report's?): it is not this report's; remove it, or use another --out",
                      soft_wrap=True, markup=False)
    return list(outputs)


def terminal_columns(table: Table) -> tuple[list[str], list[list[str]], str]:
    """The comparison for a narrow terminal: columns no run recorded (P@1 without scores, well-formed without
    generative runs) are left out, and a split and size shared by every run move into the title. The files keep
    every column, so their layout is the same for any set of runs."""
    rows = table.text_rows()
    keep = [i for i in range(len(table.header)) if any(row[i] != MISSING for row in rows)]
    title = "llmcls compare"
    split, n = table.header.index("split"), table.header.index("n")
    if len(rows) > 1 and len({(row[split], row[n]) for row in rows}) == 1:
        title += f": {rows[0][split]} split, {rows[0][n]} examples"
        keep = [i for i in keep if i not in (split, n)]
    return [table.header[i] for i in keep], [[row[i] for i in keep] for row in rows], title


def _table_width(header: list[str], rows: list[list[str]]) -> int:
    """Characters a compact rich table needs to show every cell on one line (3 of padding and rule a column)."""
    return sum(max(len(name), *(len(row[i]) for row in rows)) + 3 for i, name in enumerate(header))
