"""What `llmcls compare` reads from each run directory, and the numbers it derives from them with `metrics.py`.

A run contributes its `metrics.json` (or `metrics.<split>.json`), `config.yaml`, `labels.json` and the matching
`predictions*.jsonl`. Only `metrics.json` is required: a run without predictions still gets its row in the main
table, and "-" where per-label F1 or a threshold curve would need the predictions. Per-label F1 and the
precision-recall curves are computed here by `metrics.per_label_metrics`, `metrics.apply_thresholds` and
`metrics.compute_metrics`; nothing is scored a second way.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmcls.errors import LlmclsError
from llmcls.labels import LabelSpace
from llmcls.metrics import Thresholds, apply_thresholds, bootstrap_difference, compute_metrics, per_label_metrics
from llmcls.runs import (
    RECORD,
    Predictions,
    RunDir,
    predictions_from_records,
    read_predictions,
    read_record,
    scored_records,
)

CURVE_POINTS = 40  # thresholds swept per curve: enough for a smooth line, cheap even on large test sets
QUANTILE_SAMPLE = 1_000_000  # scores the cut points are chosen from (a strided sample of a large test set)


@dataclass
class Run:
    """One run directory as the report sees it; `record` is its metrics.json, `config` its config.yaml."""

    path: Path
    name: str
    record: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    space: LabelSpace | None = None
    predictions: Predictions | None = None
    notes: list[str] = field(default_factory=list)

    def value(self, dotted: str) -> Any:
        """The value at a dotted path ("metrics.micro_f1", "config.train"); None when any step is missing."""
        source: Any = self.config if dotted.startswith("config.") else self.record
        for key in dotted.removeprefix("config.").split("."):
            source = source.get(key) if isinstance(source, dict) else None
        return source


def find_runs(paths: list[str | Path], split: str | None = None, left_out: list[str] | None = None) -> list[Path]:
    """Run directories as given; a folder that is not a run stands for the finished runs below it (with `split`,
    those that evaluated that split: the others are named in `left_out`). A folder that is a run stands for itself
    alone: runs below it are usually made from it (predict-encoder's RUN/predict-*, scored on other files), so they
    are named in `left_out` rather than compared unasked. Unfinished runs in or below a given folder (`unfinished`)
    are named in `left_out` too. A run reached twice is listed once."""
    runs: list[Path] = []
    noted: set[Path] = set()  # unfinished runs already named (a folder given twice, or inside another given one)
    for given in map(Path, paths):
        if given.is_file():
            raise LlmclsError(f"{given}: a file, not a run directory (give the folder that holds metrics.json)")
        if not given.is_dir():
            raise LlmclsError(f"{given}: no such run directory")
        below, unfinished = walk_runs(given)
        waiting = [f"{path}: {why}" for path, why in unfinished if path.resolve() not in noted]
        noted |= {path.resolve() for path, _ in unfinished}
        if (given / "metrics.json").exists():
            found = [given]
            if below and left_out is not None:
                left_out.append(f"{len(below)} finished run{'s' if len(below) > 1 else ''} below the run {given} "
                                f"(e.g. {below[0]}): name {'them' if len(below) > 1 else 'it'} to compare")
        else:
            found = below
            if not found:
                why = "".join(f"; {note}" for note in waiting)
                raise LlmclsError(f"{given}: not a finished run directory (no metrics.json in it or below it){why}")
            if split is not None:
                without = [p for p in found if not has_split(RunDir(p), split)]
                found = [p for p in found if p not in without]
                if left_out is not None:
                    left_out += [f"{p}: no {split} split" for p in without]
                if not found:
                    raise LlmclsError(f"{given}: no run below it evaluated the {split} split")
        if left_out is not None:
            left_out += waiting
        runs += [p for p in found if p.resolve() not in {r.resolve() for r in runs}]
    return runs


def walk_runs(given: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The finished runs below `given` (folders with a metrics.json, `given` itself not included), and the
    unfinished runs in or below it with what they hold (`unfinished`). Hidden folders are not searched: they hold
    no user's run (the benchmark keeps a run it replaces as .NAME.previous until the new one succeeds)."""
    finished: list[Path] = []
    unfinished: list[tuple[Path, str]] = []
    for folder, dirs, files in os.walk(given):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        path = Path(folder)
        if "metrics.json" in files:
            if path != given:
                finished.append(path)
        elif path == given or path.name != "data":  # OUTPUT_DIR/data: the benchmark's row slices, not a run
            why = unfinished_run(path, files, dirs)
            if why is not None:
                unfinished.append((path, why))
    return sorted(finished), sorted(unfinished)


def unfinished_run(path: Path, files: list[str], dirs: list[str]) -> str | None:
    """What an unfinished run folder (no metrics.json) holds and how to finish it, or None when the folder does not
    look like a run: a run writes config.yaml, predictions*.jsonl or checkpoint-* folders before its metrics.json,
    and a benchmark's system its benchmark.json (status running or failed)."""
    predictions = sorted(name for name in files if fnmatch.fnmatch(name, "predictions*.jsonl"))
    checkpoints = sorted((d for d in dirs if d.startswith("checkpoint-")), key=_checkpoint_step)
    status = (read_record(path) or {}).get("status") if RECORD in files else None
    if "config.yaml" not in files and not predictions and not checkpoints and status not in ("running", "failed"):
        return None
    config = _config(path) if "config.yaml" in files else {}
    if "trained_run" in config:  # predict-encoder writes no metrics for a file without gold labels: finished
        return None
    adapter = f"`llmcls zeroshot --adapter {path / 'adapter'}` evaluates it"
    if config.get("skip_eval") and not checkpoints:
        return f"trained, not evaluated (--skip_eval true): {adapter}"
    held = []
    counts = [(name, _count_lines(path / name)) for name in predictions]
    if len(counts) == 1:
        held.append(_predictions(counts[0][1]))
    elif counts:
        held.append(", ".join(f"{_predictions(n)} in {name}" if i == 0 else f"{n} in {name}"
                              for i, (name, n) in enumerate(counts)))
    if checkpoints:
        held.append(checkpoints[-1] if len(checkpoints) == 1 else f"checkpoints up to {checkpoints[-1]}")
    if not held:
        held.append("no predictions")
    held.append("no metrics.json")
    if status is not None:
        log = "see its error.log, then " if status == "failed" and "error.log" in files else ""
        todo = f"{log}rerun the benchmark{' to resume' if predictions or checkpoints else ''}"
    elif checkpoints:
        todo = "rerun its command with --resume (sft: --resume_from_checkpoint true) to resume"
    elif config.get("system") == "sft" and "adapter" in dirs:  # a rerun would train again: the adapter is saved
        todo = f"{adapter}, or rerun its command to train again"
    elif predictions:
        todo = "rerun its command to resume"
    else:
        todo = "rerun its command"
    return f"{'failed' if status == 'failed' else 'unfinished'} ({', '.join(held)}; {todo})"


def _predictions(n: int | str) -> str:
    return f"{n} prediction{'' if n == 1 else 's'}"


def _checkpoint_step(name: str) -> tuple[int, str]:
    step = name.removeprefix("checkpoint-")
    return (int(step), name) if step.isdigit() else (-1, name)


def _config(path: Path) -> dict[str, Any]:
    """The run's config.yaml ({} when unreadable)."""
    try:
        return RunDir(path).read_config()
    except (LlmclsError, OSError, ValueError):
        return {}


def _count_lines(path: Path) -> int | str:
    """The non-blank lines of a file ("?" when it cannot be read): predictions written so far."""
    try:
        with path.open("rb") as lines:
            return sum(1 for line in lines if line.strip())
    except OSError:
        return "?"


def has_split(run: RunDir, split: str) -> bool:
    """Whether the run holds metrics of `split` (metrics.<split>.json, or metrics.json reporting that split)."""
    return (run.path / f"metrics.{split}.json").exists() or run.read_metrics().get("split") == split


def run_names(paths: list[Path]) -> list[str]:
    """Short names for the tables: the folder name, with its parents added only where two runs share it."""
    for depth in range(1, 1 + max(len(p.parts) for p in paths)):
        names = ["/".join(p.parts[-depth:]) for p in paths]
        if len(set(names)) == len(names):
            return names
    return [str(p) for p in paths]


def load_runs(paths: list[Path], split: str | None = None) -> list[Run]:
    return [load_run(path, name, split) for path, name in zip(paths, run_names(paths), strict=True)]


def load_run(path: Path, name: str, split: str | None = None) -> Run:
    """Read one run; `split` picks metrics.<split>.json (or metrics.json when that is the split it holds)."""
    run_dir = RunDir(path)
    record, predictions_file = _metrics_record(run_dir, split)
    run = Run(path, name, record, run_dir.read_config(), run_dir.label_space())
    # train-encoder records it in timing, sft beside it
    resumed = next((v for v in (run.value("timing.resumed_from_step"), run.value("resumed_from_step"))
                    if v is not None), None)
    if resumed is not None and run.value("timing.train_s") is not None:
        run.notes.append(f"{name}: resumed from step {resumed}: its train time counts only the training after the "
                         "resume")
    if predictions_file.exists():
        # rows with gold labels, as metrics.json; scores read as rows over the run's labels (when it has labels.json)
        records = scored_records(read_predictions(predictions_file, run.space))
        if not records:
            run.notes.append(f"{name}: {predictions_file.name} holds no scored prediction: shown without its "
                             "predictions (no interval, per-label or paired numbers)")
            return run
        if run.space is None:  # as `llmcls evaluate`: the labels seen in the file, most frequent first
            run.space = LabelSpace.from_label_lists([r["labels"] + r["predicted"] for r in records])
        try:
            run.predictions = predictions_from_records(records, run.space)
        except (TypeError, ValueError) as err:  # e.g. a score that is not a number
            raise LlmclsError(f"{predictions_file}: unreadable predictions ({err})") from None
        reported = run.value("metrics.n_examples")
        if reported is not None and reported != len(records):
            run.notes.append(f"{name}: {predictions_file.name} has {len(records)} examples, "
                             f"{'metrics.json' if split is None else split} reports {reported}")
    return run


def _metrics_record(run: RunDir, split: str | None) -> tuple[dict[str, Any], Path]:
    if split is None or (run.path / f"metrics.{split}.json").exists():
        suffix = "" if split is None else f".{split}"
        return run.read_metrics(split), run.path / f"predictions{suffix}.jsonl"
    primary = run.read_metrics()  # a run that is not finished fails here
    if primary.get("split") != split:
        raise LlmclsError(f"{run.path}: the run did not evaluate the {split} split (its metrics.json reports "
                          f"{primary.get('split')})")
    return primary, run.path / "predictions.jsonl"  # the split asked for is the one metrics.json reports


# ------------------------------------------------------------------------------------------ derived numbers
def per_label_f1(run: Run) -> dict[str, dict[str, Any]] | None:
    """Per-label precision, recall, F1, support and predicted count by label (metrics.per_label_metrics)."""
    if run.predictions is None or run.space is None:
        return None
    rows = per_label_metrics(run.predictions.gold, run.predictions.predicted, run.space.labels)
    return {row["label"]: row for row in rows}


def threshold_curve(predictions: Predictions | None, points: int = CURVE_POINTS) -> list[dict[str, float]]:
    """Micro precision and recall when one global threshold is swept over the run's scores (no min_labels).

    Thresholds are score quantiles whose share of predicted cells is spaced geometrically, so the points spread
    along the curve instead of bunching in the mass of low (negative) scores. Cuts that predict nothing are left
    out: their precision is 0 by convention, not a point on the curve.
    """
    if predictions is None or predictions.scores is None:
        return []
    scores, gold = predictions.scores, predictions.gold
    finite = scores[np.isfinite(scores)]
    if finite.size == 0:
        return []
    finite = finite[:: max(1, finite.size // QUANTILE_SAMPLE)]  # only picks the cuts; each is scored on all cells
    shares = np.geomspace(1.0 / finite.size, 1.0, points)
    cuts = np.unique(np.quantile(finite, 1.0 - shares))
    curve = []
    for cut in cuts[::-1]:
        predicted = apply_thresholds(scores, Thresholds(np.full(scores.shape[1], cut)))
        metrics = compute_metrics(gold, predicted)
        if metrics["avg_labels_pred"] > 0:
            curve.append({"threshold": float(cut), "precision": metrics["micro_precision"],
                          "recall": metrics["micro_recall"], "f1": metrics["micro_f1"]})
    return curve


def label_order(runs: list[Run]) -> tuple[list[str], dict[str, int]]:
    """Labels of all runs by support in the evaluated split (most frequent first; ties keep the label-space
    order, which is training frequency) and the support of each, counted in the first run that has the label."""
    support: dict[str, int] = {}
    for run in runs:
        if run.predictions is None or run.space is None:
            continue
        counts = run.predictions.gold.sum(axis=0)
        for label, count in zip(run.space.labels, counts, strict=True):
            support.setdefault(label, int(count))
    labels = sorted(support, key=lambda lab: -support[lab])  # stable: equal supports keep first-seen order
    return labels, support


def paired_difference(reference: Run, run: Run) -> tuple[int, float, float, float, float, float] | str:
    """micro-F1 of `reference` and of `run` on the examples both scored (matched by id, labels by name), and the
    paired bootstrap interval of run - reference (metrics.bootstrap_difference): ``(n, reference F1, run F1,
    difference, low, high)``, or why the two cannot be paired."""
    a, b = reference.predictions, run.predictions
    if a is None or b is None:
        return "no predictions file"
    if reference.space is None or run.space is None or set(reference.space.labels) != set(run.space.labels):
        return "different label spaces"
    where = {example_id: i for i, example_id in enumerate(b.ids)}
    rows_a = [i for i, example_id in enumerate(a.ids) if example_id in where]
    if not rows_a:
        return "no example in common"
    rows_b = [where[a.ids[i]] for i in rows_a]
    order = [run.space.index(label) for label in reference.space.labels]  # b's columns in a's label order
    gold, pred_a, pred_b = a.gold[rows_a], a.predicted[rows_a], b.predicted[rows_b][:, order]
    if not np.array_equal(gold, b.gold[rows_b][:, order]):
        return "different gold labels for the same ids"
    difference, low, high = bootstrap_difference(gold, pred_a, pred_b)
    f1_a, f1_b = (compute_metrics(gold, pred)["micro_f1"] for pred in (pred_a, pred_b))
    return len(rows_a), f1_a, f1_b, difference, low, high


def same_examples(runs: list[Run]) -> bool:
    """Whether every run with predictions scored the same example ids (so per-label rows compare like with like)."""
    ids = {tuple(sorted(run.predictions.ids)) for run in runs if run.predictions is not None}
    return len(ids) <= 1
