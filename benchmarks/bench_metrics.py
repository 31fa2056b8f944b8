"""Time llmcls.metrics at arXiv scale and print a Markdown table.

Run: ``python benchmarks/bench_metrics.py [--n 1000000] [--labels 200] [--seed 0] [--dtype float64] [--repeat 3]``.
Each operation runs ``--repeat`` times; the table shows the first call (it pays the page faults of fresh memory)
and the best call.
Data are synthetic but shaped like the real task: ~2.4 gold labels per abstract, a classifier that finds most of them
with a few false positives, and scores that rank gold labels higher on average.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from aapd_protocol import run_line  # noqa: E402

from llmcls.metrics import compute_metrics, tune_thresholds  # noqa: E402

LABELS_PER_ROW = 2.4


def make_data(n: int, n_labels: int, seed: int, dtype: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gold, predictions and scores with realistic density; generated in row chunks to keep peak memory low."""
    rng = np.random.default_rng(seed)
    gold = np.empty((n, n_labels), dtype=bool)
    scores = np.empty((n, n_labels), dtype=dtype)
    step = max(1, (1 << 22) // n_labels)
    for start in range(0, n, step):
        rows = slice(start, min(n, start + step))
        shape = (rows.stop - rows.start, n_labels)
        gold[rows] = rng.random(shape, dtype=np.float32) < LABELS_PER_ROW / n_labels
        # Gold labels score ~N(0.75, 0.2), others ~N(0.15, 0.15): most gold labels pass 0.5, a few negatives do too.
        noise = rng.standard_normal(shape, dtype=np.float32)
        scores[rows] = np.where(gold[rows], 0.75 + 0.2 * noise, 0.15 + 0.15 * noise)
    pred = scores >= 0.5
    return gold, pred, scores


def timed(fn: Callable[[], object], repeat: int) -> tuple[list[float], object]:
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - start)
    return seconds, result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="examples (default 1,000,000)")
    parser.add_argument("--labels", type=int, default=200, help="labels (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float64", help="score dtype")
    parser.add_argument("--repeat", type=int, default=3, help="runs per operation (default 3)")
    args = parser.parse_args(argv)

    gold, pred, scores = make_data(args.n, args.labels, args.seed, args.dtype)
    print(run_line())
    print(
        f"n={args.n:,} labels={args.labels} seed={args.seed} scores={args.dtype} "
        f"avg_labels_true={gold.sum() / args.n:.2f} repeat={args.repeat} numpy={np.__version__} "
        f"python={sys.version.split()[0]} cores={os.cpu_count()}"
    )
    cases = [
        ("compute_metrics (no scores)", lambda: compute_metrics(gold, pred)),
        ("compute_metrics (with scores)", lambda: compute_metrics(gold, pred, scores)),
        ("tune_thresholds (global)", lambda: tune_thresholds(gold, scores)),
        ("tune_thresholds (global, min_labels=1)", lambda: tune_thresholds(gold, scores, min_labels=1)),
        ("tune_thresholds (per-label)", lambda: tune_thresholds(gold, scores, per_label=True)),
    ]
    print("\n| operation | first (s) | best (s) | result |\n|---|---:|---:|---|")
    for name, fn in cases:
        seconds, result = timed(fn, args.repeat)
        if isinstance(result, dict):
            note = f"micro_f1={result['micro_f1']:.4f}" + (f" map={result['map']:.4f}" if "map" in result else "")
        else:
            note = f"validation_micro_f1={result.validation_micro_f1:.4f}"
        print(f"| {name} | {seconds[0]:.2f} | {min(seconds):.2f} | {note} |", flush=True)


if __name__ == "__main__":
    main()
