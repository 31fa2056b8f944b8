"""Memory of a score-mode run's predictions at scale: what a resumed `llmcls zeroshot --mode score` holds while it
reads its predictions.jsonl back, builds the score matrix and rewrites the file with the final labels.

Each case runs in a fresh process (peak RSS is per process): a synthetic predictions file of N rows x L labels
(random scores), read by `runs.PredictionWriter` with the run's labels (scores held as arrays, as generative runs
do) or without them (scores as {label: score} dictionaries, as a reader that does not know the label space gets
them), then the matrix `task.record_matrices` builds and the final `rewrite`; and read as `llmcls compare` reads a
run (`runs.read_predictions` with or without the run's label space, then `predictions_from_records`).

    python benchmarks/bench_predictions_memory.py --rows 20000 --labels 54 150
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def make_file(path: Path, rows: int, n_labels: int) -> list[str]:
    labels = [f"cat.{i:03d}" for i in range(n_labels)]
    rng = np.random.default_rng(0)
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(rows):
            scores = dict(zip(labels, map(float, rng.normal(size=n_labels)), strict=True))
            handle.write(json.dumps({"id": str(i), "labels": [labels[i % n_labels]], "predicted": [labels[0]],
                                     "scores": scores}) + "\n")
    return labels


def measure(path: Path, n_labels: int, with_labels: bool, reader: str) -> dict:
    """Runs in the child process: peak RSS above what the interpreter and imports took."""
    sys.path.insert(0, str(ROOT))
    from llmcls import task
    from llmcls.labels import LabelSpace
    from llmcls.runs import PredictionWriter, predictions_from_records, read_predictions

    labels = [f"cat.{i:03d}" for i in range(n_labels)]
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    if reader == "compare":  # what `llmcls compare` does with a run's file: the records, then its matrices
        space = LabelSpace(labels)
        scores = predictions_from_records(read_predictions(path, space if with_labels else None), space).scores
        return {"peak_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024,
                "seconds": time.perf_counter() - started, "matrix_mb": scores.nbytes / 2**20}
    space = LabelSpace(labels)
    writer = PredictionWriter(path, space if with_labels else None)
    done = writer.read()
    records = [done[str(i)] for i in range(len(done))]
    if with_labels:
        _, _, scores = task.record_matrices(space, records)
    else:  # what the matrix took from dictionaries before runs held arrays
        scores = np.array([[r["scores"][lab] for lab in labels] for r in records], dtype=np.float64)
    PredictionWriter(path.with_suffix(".out"), space if with_labels else None).rewrite(records)
    return {"peak_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024,
            "seconds": time.perf_counter() - started, "matrix_mb": scores.nbytes / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--labels", type=int, nargs="+", default=[54, 150])
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(Path(args.child[0]), int(args.child[1]), args.child[2] == "1", args.child[3])))
        return
    print(f"# python benchmarks/bench_predictions_memory.py --rows {args.rows} --labels "
          f"{' '.join(map(str, args.labels))}  ({platform.processor() or platform.machine()}, "
          f"python {platform.python_version()})")
    print("| rows | labels | file (MB) | reader | scores held as | peak RSS above start (MB) | score matrix (MB) | "
          "seconds |")
    print("|---:|---:|---:|---|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as scratch:
        for n_labels in args.labels:
            path = Path(scratch) / f"predictions-{n_labels}.jsonl"
            make_file(path, args.rows, n_labels)
            size = path.stat().st_size / 2**20
            for reader in ("resume", "compare"):
                for with_labels in (False, True):
                    out = subprocess.run([sys.executable, __file__, "--child", str(path), str(n_labels),
                                          "1" if with_labels else "0", reader], check=True, capture_output=True,
                                         text=True)
                    result = json.loads(out.stdout.strip().splitlines()[-1])
                    held = "arrays (run's labels)" if with_labels else "dictionaries"
                    name = "PredictionWriter + rewrite" if reader == "resume" else "read_predictions"
                    print(f"| {args.rows:,} | {n_labels} | {size:.0f} | {name} | {held} | {result['peak_mb']:.0f} | "
                          f"{result['matrix_mb']:.0f} | {result['seconds']:.1f} |")


if __name__ == "__main__":
    main()
