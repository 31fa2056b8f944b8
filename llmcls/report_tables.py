"""The tables of the report, built from loaded runs (`report_data.Run`), independent of the output format.

A `Table` keeps raw values (None where a run did not record one) and a format per column: the CSV gets the raw
values, Markdown, LaTeX, HTML and the terminal get the formatted text with "-" for a missing value.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmcls.report_data import Run, label_order, paired_difference, per_label_f1, same_examples

MISSING = "-"

# (header, dotted path in metrics.json or "config.<key>", format)
COMPARISON = [
    ("run", "name", "{}"), ("system", "system", "{}"), ("model", "model", "{}"), ("split", "split", "{}"),
    ("n", "metrics.n_examples", "{:,}"), ("params trained", "params_trained", "{:,}"),
    ("micro-F1", "metrics.micro_f1", "{:.4f}"), ("micro-F1 95% CI", "micro_f1_interval", "{}"),
    ("macro-F1", "metrics.macro_f1", "{:.4f}"), ("samples-F1", "metrics.samples_f1", "{:.4f}"),
    ("precision", "metrics.micro_precision", "{:.4f}"), ("recall", "metrics.micro_recall", "{:.4f}"),
    ("Hamming", "metrics.hamming_loss", "{:.5f}"), ("label acc", "metrics.label_accuracy", "{:.5f}"),
    ("subset acc", "metrics.subset_accuracy", "{:.4f}"), ("P@1", "metrics.p_at_1", "{:.4f}"),
    ("well-formed", "generation.well_formed_rate", "{:.1%}"), ("unknown", "generation.unknown_label_rate", "{:.1%}"),
    ("train s", "timing.train_s", "{:,.1f}"),
    ("ex/s", "timing.examples_per_s", "{:,.1f}"), ("device", "timing.device", "{}"),
]

# The original research notes report accuracy, precision, recall, F1 and Hamming loss (see report.py's docstring).
ORIGINAL = [
    ("run", "name", "{}"), ("system", "system", "{}"), ("model", "model", "{}"), ("split", "split", "{}"),
    ("accuracy", "metrics.label_accuracy", "{:.5f}"), ("precision", "metrics.micro_precision", "{:.5f}"),
    ("recall", "metrics.micro_recall", "{:.5f}"), ("F1", "metrics.micro_f1", "{:.5f}"),
    ("Hamming loss", "metrics.hamming_loss", "{:.5f}"),
]
ORIGINAL_CAPTION = (
    "The metrics in the layout of the research notes llmcls grew from (their BERT, SciBERT and DeBERTa-v3 runs). "
    "Accuracy there is label-wise accuracy "
    "(1 - Hamming loss): the notes' accuracy and Hamming loss add up to 1 in every evaluation they report. "
    "Precision, recall and F1 are micro-averaged (counts pooled over all example-label cells): in every evaluation "
    "the notes report, their F1 is the harmonic mean of their precision and recall to within rounding, which micro "
    "averaging guarantees and macro or per-example averaging does not.")

VERSION_PACKAGES = ("torch", "transformers", "trl", "peft", "scikit-learn", "vllm")


@dataclass(frozen=True)
class Interval:
    """A 95% interval: one cell in the terminal, Markdown, LaTeX and HTML ("0.431-0.541", signed: "+0.012 to
    +0.054"), two raw numbers in CSV (columns "<name> low" and "<name> high")."""

    low: float
    high: float
    signed: bool = False

    def __format__(self, spec: str) -> str:
        return f"{self.low:+.3f} to {self.high:+.3f}" if self.signed else f"{self.low:.3f}-{self.high:.3f}"


@dataclass
class Table:
    """A titled table: raw values by row (None = not recorded) and one format string per column."""

    key: str
    title: str
    caption: str
    header: list[str]
    rows: list[list[Any]]
    formats: list[str]

    def numeric(self, column: int) -> bool:
        """Right-align columns of numbers; a plain "{}" column holds text."""
        return self.formats[column] != "{}"

    def text_rows(self) -> list[list[str]]:
        return [[format_value(value, fmt) for value, fmt in zip(row, self.formats, strict=True)] for row in self.rows]


def format_value(value: Any, fmt: str) -> str:
    if value is None:
        return MISSING
    try:
        return fmt.format(value)
    except (ValueError, TypeError):  # a run recorded text where a number was expected: show it as it is
        return str(value)


def _column_value(run: Run, where: str) -> Any:
    if where == "name":
        return run.name
    if where == "micro_f1_interval":
        return micro_f1_interval(run)
    value = run.value(where)
    return display_model(value) if where == "model" else value


def micro_f1_interval(run: Run) -> Interval | None:
    """The 95% bootstrap interval of micro-F1 over the run's predictions, None without them."""
    if run.predictions is None or not len(run.predictions.gold):
        return None
    from llmcls.metrics import bootstrap_interval

    _, low, high = bootstrap_interval(run.predictions.gold, run.predictions.predicted)
    return Interval(low, high)


def display_model(model: Any) -> Any:
    """A local model path shortened to what identifies it (a .gguf file's name, `package/model` for a folder named
    model); hub ids such as Qwen/Qwen2.5-1.5B-Instruct stay as they are. The runs table keeps the full path."""
    if not isinstance(model, str) or not model.startswith(("/", "~", ".")):
        return model
    path = Path(model)
    if path.name in ("model", "merged", "adapter") and path.parent.name:
        return f"{path.parent.name}/{path.name}"
    return path.name or model


def _columns_table(key: str, title: str, caption: str, runs: list[Run], columns: list[tuple[str, str, str]]) -> Table:
    rows = [[_column_value(run, where) for _, where, _ in columns] for run in runs]
    return Table(key, title, caption, [h for h, _, _ in columns], rows, [f for _, _, f in columns])


def comparison_table(runs: list[Run]) -> Table:
    caption = ("One row per run, from its metrics.json. micro-F1 95% CI: a percentile bootstrap over the run's "
               "examples (1,000 draws, seeded; from its predictions file), how far micro-F1 moves with the draw of "
               "the examples alone. Precision and recall are micro-averaged; macro-F1 averages "
               "over each run's whole label space; P@1 needs scores; well-formed is the share of generated answers "
               "that parsed and unknown the share of generated labels outside the label space (generative systems: no "
               "metric counts such a label, so it lowers no precision); train s is the training time in seconds; "
               "ex/s the prediction "
               f"throughput on the reported split. {MISSING}: not recorded by the run.")
    return _columns_table("comparison", "Comparison", caption, runs, COMPARISON)


def paired_table(runs: list[Run]) -> Table | None:
    """Every run with predictions against the first one, on the examples both scored: micro-F1 of both, the
    difference and its paired bootstrap interval. None with fewer than two runs with predictions."""
    scored = [run for run in runs if run.predictions is not None]
    if len(scored) < 2:
        return None
    reference, rows = scored[0], []
    for run in scored[1:]:
        paired = paired_difference(reference, run)
        if isinstance(paired, str):
            rows.append([run.name, None, None, None, None, None, paired])
            continue
        n, f1_reference, f1_run, difference, low, high = paired
        rows.append([run.name, n, f1_reference, f1_run, difference, Interval(low, high, signed=True),
                     "ahead" if low > 0 else "behind" if high < 0 else "not separated"])
    caption = (f"Each run against {reference.name} (the first run with predictions) on the examples both scored "
               "(matched by id): micro-F1 of both, the difference (run - reference) and its 95% paired bootstrap "
               "interval (metrics.bootstrap_difference: 1,000 seeded draws of the shared examples, both runs scored "
               "on each). What two systems get right together cancels in a paired difference, so this interval is "
               "narrower than the runs' own intervals suggest; 'not separated': it contains 0.")
    return Table("paired", f"Paired differences against {reference.name}", caption,
                 ["run", "n", "reference micro-F1", "micro-F1", "difference", "95% CI", "verdict"], rows,
                 ["{}", "{:,}", "{:.4f}", "{:.4f}", "{:+.4f}", "{}", "{}"])


def original_table(runs: list[Run]) -> Table:
    return _columns_table("original", "Metrics in the original research's layout", ORIGINAL_CAPTION, runs,
                          ORIGINAL)


def per_label_table(runs: list[Run]) -> Table:
    """F1 of every label for every run with predictions, labels by support in the evaluated split."""
    labels, support = label_order(runs)
    by_run = [per_label_f1(run) for run in runs]
    rows = []
    for label in labels:
        cells = [None if scores is None or label not in scores else scores[label]["f1"] for scores in by_run]
        rows.append([label, support[label], *cells])
    caption = ("Per-label F1 (metrics.per_label_metrics over each run's predictions), labels sorted by support in "
               f"the evaluated split (ties in label-space order, i.e. training frequency). {MISSING}: the run has no "
               "predictions file or not this label.")
    if not same_examples(runs):
        caption += " The runs were evaluated on different examples; support is counted in the first run."
    return Table("per-label", "Per-label F1", caption, ["label", "support", *(run.name for run in runs)], rows,
                 ["{}", "{:,}", *(["{:.3f}"] * len(runs))])


def band_table(per_label: Table) -> Table | None:
    """Mean per-label F1 over the most frequent, middle and rarest third of the labels: where each system wins."""
    present = [row for row in per_label.rows if row[1] > 0]  # F1 is 0 by convention without an example: left out
    if len(present) < 3:
        return None
    rows = []
    for name, band in zip(("head (most frequent third)", "middle third", "tail (rarest third)"),
                          np.array_split(np.arange(len(present)), 3), strict=True):
        members = [present[i] for i in band]
        cells = []
        for column in range(2, len(per_label.header)):
            values = [row[column] for row in members if row[column] is not None]
            cells.append(float(np.mean(values)) if values else None)
        rows.append([name, len(members), f"{members[0][1]}-{members[-1][1]}", *cells])
    caption = ("Mean per-label F1 (from the Per-label F1 table) over thirds of the labels by support in the "
               "evaluated split: whether a system's strength lies in frequent or rare labels. Labels without an "
               "example in the split are left out (their F1 is 0 by convention).")
    return Table("bands", "Per-label F1 by label frequency", caption,
                 ["labels", "count", "support", *per_label.header[2:]], rows,
                 ["{}", "{:,}", "{}", *(["{:.3f}"] * (len(per_label.header) - 2))])


def data_table(runs: list[Run]) -> Table:
    """Where each run's data came from, its sizes, label count, hardware and versions, as the run recorded them."""
    rows = [[run.name, run.value("model"), *data_sources(run), sizes(run), run.value("metrics.n_labels"),
             hardware(run), versions(run)] for run in runs]
    caption = ("The model as given, data, sizes (train / validation / test examples after filtering), label count, "
               f"hardware and software as recorded in each run's config.yaml and metrics.json. {MISSING}: not "
               "recorded.")
    return Table("runs", "Data and environment", caption,
                 ["run", "model", "train", "validation", "test", "selection", "sizes", "labels", "hardware",
                  "versions"], rows, ["{}", "{}", "{}", "{}", "{}", "{}", "{}", "{:,}", "{}", "{}"])


def data_sources(run: Run) -> list[str | None]:
    """Train, validation and test sources, and the selection applied (filters, caps) when not the default."""
    train, validation, test = (run.value(f"config.{s}") for s in ("train", "validation", "test"))
    ratios = run.value("config.split_ratios")
    if ratios:
        carved = f"from train by {ratios} (seed {run.value('config.split_seed')})"
        validation, test = validation or carved, test or carved
    options = ("categories", "since", "until", "label_level", "min_label_count", "top_labels",
               "max_train_examples", "max_eval_examples")
    defaults = {"label_level": "category", "min_label_count": 1}
    chosen = [f"{key}={run.value('config.' + key)}" for key in options
              if run.value(f"config.{key}") not in (None, defaults.get(key))]
    return [train, validation, test, "; ".join(chosen) or (None if not run.config else "all")]


def sizes(run: Run) -> str | None:
    found = run.value("config.data_sizes")
    if not isinstance(found, dict):
        return None
    return " / ".join(str(found.get(split, MISSING)) for split in ("train", "validation", "test"))


def hardware(run: Run) -> str | None:
    device, cpu, cores = run.value("timing.device"), run.value("environment.cpu"), run.value("environment.cpu_count")
    parts = [str(device)] if device else []
    if cpu:
        parts.append(f"{cpu} ({cores} cores)" if cores else str(cpu))
    return "; ".join(parts) or None


def versions(run: Run) -> str | None:
    env = run.value("environment")
    if not isinstance(env, dict):
        return None
    packages = env.get("packages") or {}
    parts = [f"llmcls {env.get('llmcls', MISSING)}", f"Python {env.get('python', MISSING)}"]
    parts += [f"{name} {packages[name]}" for name in VERSION_PACKAGES if name in packages]
    if env.get("cuda"):
        parts.append(f"CUDA {env['cuda']}")
    return ", ".join(parts)


def shared_summary(runs: list[Run]) -> list[str]:
    """One line per fact of the data and environment: its value when every run that recorded it agrees, else a
    pointer to the per-run table (the report states the data once instead of repeating it per row)."""
    facts = (("Data (train / validation / test)", [_sources(r) for r in runs]),
             ("Sizes (train / validation / test)", [sizes(r) for r in runs]),
             ("Labels", [r.value("metrics.n_labels") for r in runs]),
             ("Evaluated split", [_evaluated(r) for r in runs]),
             ("Hardware", [hardware(r) for r in runs]), ("Versions", [versions(r) for r in runs]))
    lines = []
    for label, values in facts:
        recorded = [v for v in values if v is not None]
        if not recorded:
            continue
        if len(set(recorded)) > 1:
            lines.append(f"{label}: differs between runs (see Data and environment)")
            continue
        who = "" if len(recorded) == len(runs) else f" (recorded by {len(recorded)} of {len(runs)} runs)"
        lines.append(f"{label}: {recorded[0]}{who}")
    return lines


def _sources(run: Run) -> str | None:
    found = data_sources(run)[:3]
    return None if all(v is None for v in found) else " / ".join(MISSING if v is None else str(v) for v in found)


def _evaluated(run: Run) -> str | None:
    split, n = run.value("split"), run.value("metrics.n_examples")
    return None if split is None else f"{split} ({MISSING if n is None else n} examples)"
