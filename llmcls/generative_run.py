"""Running the splits of a generative run: validation and test predicted batch by batch into the run directory
(appended as they come, so an interrupted run resumes from its files), thresholds tuned on validation in score mode,
the final predictions and metrics written. `llmcls zeroshot` / `fewshot` and `llmcls sft` (which evaluates its trained
model here) share it; what each example asks the model is `task.py`'s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from llmcls.backends import Backend
from llmcls.config import number_list
from llmcls.corpus import Corpus
from llmcls.data import arrow_rows
from llmcls.metrics import Thresholds, apply_thresholds, compute_metrics, tune_best_thresholds
from llmcls.progress import console
from llmcls.runs import PredictionWriter, RunDir, primary_split
from llmcls.task import (
    GenerationArguments,
    PromptArguments,
    Task,
    generation_stats,
    record_matrices,
    rows_of,
)


def run_splits(corpus: Corpus, backend: Backend, run: RunDir, prompt_args: PromptArguments,
               gen_args: GenerationArguments, *, system: str, model: str, load_s: float | None,
               extra: dict[str, Any] | None = None, train_s: float | None = None) -> dict[str, dict]:
    """Predict validation and test with `backend`, tune thresholds (score mode), write predictions, thresholds and
    metrics into `run` (resuming from its predictions files). Shared with `llmcls sft`, which evaluates its
    trained model here. Returns the metrics by split."""
    task = Task.build(corpus, backend, prompt_args, gen_args)
    if gen_args.mode == "generate" and gen_args.max_new_tokens and gen_args.max_new_tokens < task.answer_budget():
        console.print(f"note: --max_new_tokens {gen_args.max_new_tokens} is below the {task.answer_budget()} tokens "
                      f"of the longest answer allowed ({task.max_labels} labels): a longer answer is cut, and its "
                      "last labels are lost even where it still parses", soft_wrap=True, markup=False)
    evaluated = [s for s in ("validation", "test") if corpus.get(s) is not None]
    primary = primary_split(evaluated)
    outcomes = {split: predict_split(task, corpus.get(split), split, run.file("predictions", split, primary, "jsonl"))
                for split in evaluated}
    thresholds = decide_thresholds(task, outcomes.get("validation"), gen_args)
    if thresholds is not None and "validation" in outcomes:
        run.write_json("thresholds.json", thresholds.to_dict())
    record = {"system": system, "model": model, "load_s": load_s, "extra": extra or {}, "train_s": train_s}
    return {split: finish_split(run, task, outcomes[split], thresholds, split=split, primary=primary, **record)
            for split in evaluated}


def is_finished(run: RunDir, corpus: Corpus, evaluated: list[str]) -> bool:
    """Whether every evaluated split has all its ids predicted and its metrics written (a run killed before its
    metrics, or short of examples, is not)."""
    primary = primary_split(evaluated)
    for split in evaluated:
        if not run.file("metrics", split, primary, "json").exists():
            return False
        done = PredictionWriter(run.file("predictions", split, primary, "jsonl"), corpus.label_space).read()
        if set(done) != set(map(str, arrow_rows(corpus.get(split), ["id"]).column("id").to_pylist())):
            return False
    return True


# ---------------------------------------------------------------------------------------------------------------------
# Running a split: batches in, records appended, resumable


@dataclass
class SplitOutcome:
    records: list[dict[str, Any]]  # in data order
    wall_s: float
    n_new: int


def predict_split(task: Task, ds, split: str, path) -> SplitOutcome:
    rows = rows_of(ds)
    ids = [str(r["id"]) for r in rows]  # unique: corpus.load_corpus checks
    writer = PredictionWriter(path, task.space)
    done = writer.read()
    pending = [i for i, example_id in enumerate(ids) if example_id not in done]
    if done:
        console.print(f"{split}: resuming, {len(rows) - len(pending)} of {len(rows)} examples already predicted")
    started = time.perf_counter()
    if pending:
        with _progress() as progress:
            bar = progress.add_task(f"{split} ({task.args.mode})", total=len(pending))
            for records in task.predict_batches(task.batches([rows[i] for i in pending])):
                writer.append(records)
                done.update((str(record["id"]), record) for record in records)  # as read back: no second read
                progress.advance(bar, len(records))
        cut = sum(ids[i] in task.shortened for i in pending)
        if cut:
            console.print(f"note: {split}: {cut} abstracts cut to fit the model's {task.backend.max_positions} "
                          "positions (their ends dropped; `abstract_cut` in predictions.jsonl)")
    wall = time.perf_counter() - started
    return SplitOutcome([done[example_id] for example_id in ids], wall, len(pending))


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    class Speed(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed:.1f} ex/s" if task.speed else "- ex/s")

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), Speed(),
                    TimeRemainingColumn(), console=console)


# ---------------------------------------------------------------------------------------------------------------------
# Thresholds, metrics and the final files


def decide_thresholds(task: Task, validation: SplitOutcome | None, args: GenerationArguments) -> Thresholds | None:
    """Score mode: thresholds (and min_labels) tuned on validation for micro-F1, else the top-N fallback."""
    if args.mode != "score":
        return None
    if validation is None:
        fallback = task.fallback_thresholds()
        console.print(f"note: score mode without --validation: no thresholds to tune, so every row gets its top "
                      f"{fallback.min_labels} label(s) (--min_labels); pass --validation to tune them")
        return fallback
    gold, _, scores = record_matrices(task.space, validation.records)
    return tune_best_thresholds(gold, scores, min_labels=number_list(args.min_labels, "min_labels", int, minimum=0),
                                per_label=args.per_label_thresholds, report=lambda tuned: console.print(
                                    f"  min_labels={tuned.min_labels}: validation micro-F1 "
                                    f"{tuned.validation_micro_f1:.4f}"))


def finish_split(run: RunDir, task: Task, outcome: SplitOutcome, thresholds: Thresholds | None, *, split: str,
                 primary: str, system: str, model: str, load_s: float | None, extra: dict[str, Any],
                 train_s: float | None) -> dict[str, Any]:
    gold, predicted, scores = record_matrices(task.space, outcome.records)
    records = outcome.records
    if thresholds is not None and scores is not None:
        predicted = apply_thresholds(scores, thresholds)
        records = [r | {"predicted": labels} for r, labels in zip(records, task.space.from_multi_hot(predicted),
                                                                  strict=True)]
    PredictionWriter(run.file("predictions", split, primary, "jsonl"), task.space).rewrite(records)
    metrics = compute_metrics(gold, predicted, scores)
    timing = _timing(run, task, outcome, split, primary, load_s)
    if train_s is not None:
        timing["train_s"] = round(train_s, 3)
    stats = generation_stats(task, records)
    run.write_metrics(metrics, system=system, model=model, split=split, primary=primary, timing=timing,
                      extra={"generation": stats, **extra})
    formed = f"  well-formed {stats['well_formed_rate']:.1%}" if stats["well_formed_rate"] is not None else ""
    rate = timing.get("examples_per_s")  # None for a split resumed whole: no speed measured in this run
    speed = f", {rate} ex/s" if rate is not None else ", resumed: speed not measured"
    console.print(f"{split}: micro-F1 {metrics['micro_f1']:.4f}  macro-F1 {metrics['macro_f1']:.4f}{formed}  "
                  f"({len(records)} examples{speed})")
    return metrics


def _timing(run: RunDir, task: Task, outcome: SplitOutcome, split: str, primary: str,
            load_s: float | None) -> dict:
    if outcome.n_new == 0:  # everything was resumed: keep the speed measured when the predictions were made
        path = run.file("metrics", split, primary, "json")
        if path.exists():
            import json

            return dict(json.loads(path.read_text(encoding="utf-8")).get("timing", {}))
    timed = outcome.n_new > 0  # nothing predicted in this process, no earlier record: no speed to report
    return {"wall_s": round(outcome.wall_s, 3) if timed else None,
            "examples_per_s": round(outcome.n_new / max(outcome.wall_s, 1e-9), 2) if timed else None,
            "examples_timed": outcome.n_new, "device": task.backend.device, "backend": task.backend.name,
            "batch_size": task.args.batch_size, "load_s": None if load_s is None else round(load_s, 3)}
