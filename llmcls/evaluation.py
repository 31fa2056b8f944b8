"""`llmcls evaluate PREDICTIONS.jsonl`: recompute the metrics of a predictions file with `metrics.py`.

    llmcls evaluate runs/linear/predictions.jsonl            # a table on stdout (notes on stderr)
    llmcls evaluate runs/linear/predictions.jsonl --json     # the metrics object alone on stdout

The label space is `--labels` (a labels.json or one label a line), else the labels.json beside the file, else the
labels the records' scores name (a run's whole space), else the labels seen in the file (gold and predicted, most
frequent first); the last two are said in a note, since macro-averages and ranking metrics depend on the space.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from llmcls.config import build_parser, parse
from llmcls.labels import LabelSpace
from llmcls.metrics import compute_metrics
from llmcls.progress import console, results
from llmcls.runs import predictions_from_records, read_predictions, scored_records


@dataclass
class EvaluateArguments:
    labels: str | None = field(default=None, metadata={
        "help": "The label space: a labels.json or a file with one label a line. Default: the labels.json beside the "
                "predictions file, else the labels the records' scores name, else the labels seen in the file (gold "
                "and predicted)."})
    json: bool = field(default=False, metadata={"help": "Print the metrics object alone on stdout."})


def make_parser():
    return build_parser([EvaluateArguments], prog="llmcls evaluate",
                        description="Recompute the metrics of a predictions.jsonl.",
                        positional=("predictions", {"help": "A predictions.jsonl file."}))


def main(argv: list[str] | None = None) -> int:
    args, extra = parse(make_parser(), argv)
    path = Path(extra.predictions)
    from llmcls.errors import LlmclsError

    if args.labels is not None and not args.labels.strip():  # an unset shell variable: not the default space
        raise LlmclsError("--labels is empty; leave it out (the labels.json beside the file, else the labels the "
                          "file names), or give a labels file")
    every = read_predictions(path)
    if not every:
        raise LlmclsError(f"{path}: no predictions in the file")
    records = scored_records(every)
    if not records:
        raise LlmclsError(f"{path}: no record has gold labels (\"labels\": null in all {len(every)}): predictions "
                          "only, nothing to score")
    if len(records) < len(every):
        console.print(f"note: {len(every) - len(records)} of {len(every)} records have no gold labels: not scored")
    space = label_space_for(path, records, args.labels)
    if not len(space):
        raise LlmclsError(f"{path}: no label to score: the records name none and there is no labels.json beside "
                          "the file (pass --labels)")
    named = {label for r in records for label in r["labels"] + r["predicted"]}
    outside = {label for label in named if label not in space}
    if named and outside == named:  # nothing left to score: every metric would be 0 (another label file?)
        raise LlmclsError(f"{path}: none of the file's {len(named)} labels is in the label space "
                          f"({args.labels or 'labels.json beside it'}); pass the labels file of its run")
    if outside:  # scored over the space only: say what the metrics leave out
        console.print(f"note: {len(outside)} labels of the file are outside the label space and not scored "
                      f"({', '.join(sorted(outside)[:5])}{', ...' if len(outside) > 5 else ''})")
    in_space = [r for r in records if any(label in space for label in r["labels"])]
    if not in_space:
        where = args.labels or "labels.json beside it"
        raise LlmclsError(f"{path}: no record has a gold label in the label space ({where}): nothing to score")
    if len(in_space) < len(records):  # as the data readers drop them: with no gold label, no metric is meaningful
        console.print(f"note: {len(records) - len(in_space)} of {len(records)} records have no gold label in the "
                      "label space: not scored (the data readers drop such rows)")
        records = in_space
    with_scores = sum(isinstance(r.get("scores"), dict) for r in records)
    if 0 < with_scores < len(records):  # ranking metrics need a score for every row
        console.print(f"note: {with_scores} of {len(records)} records have scores: the ranking metrics (P@k, nDCG@k, "
                      "mAP) are left out", soft_wrap=True, markup=False)
    predictions = predictions_from_records(records, space)
    metrics = compute_metrics(predictions.gold, predictions.predicted, predictions.scores)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        from llmcls.report_formats import metrics_table

        results.print(metrics_table(metrics, title=f"{path} ({len(records)} examples, {len(space)} labels)"))
    return 0


def label_space_for(path: Path, records: list[dict], labels_file: str | None) -> LabelSpace:
    from llmcls.errors import LlmclsError

    candidate = Path(labels_file) if labels_file else path.parent / "labels.json"
    if labels_file or candidate.exists():
        try:
            return LabelSpace.load(candidate)
        except ValueError as err:
            raise LlmclsError(str(err)) from None
    if all(isinstance(r.get("scores"), dict) and r["scores"] for r in records):  # scores name the run's space
        space = LabelSpace(list(dict.fromkeys(label for r in records for label in r["scores"])))
        origin = f"the {len(space)} labels its scores name"
    else:
        space = LabelSpace.from_label_lists([r["labels"] + r["predicted"] for r in records])
        origin = f"the {len(space)} labels seen in the file (gold and predicted)"
    if len(space):  # none: main's error says so
        console.print(f"note: no labels.json beside {path}: the label space is {origin}; macro-averages and ranking "
                      "metrics depend on it, so pass the run's labels.json with --labels for the run's own numbers",
                      soft_wrap=True, markup=False)
    return space
