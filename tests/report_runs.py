"""Small run directories for the report tests, written with the real writers of llmcls/runs.py.

    from report_runs import make_runs

Three runs over one test split: a linear run with scores and every optional field, a generative run without scores
that records a well-formed rate, and a bare run that records no timing, device, params or config.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from llmcls.labels import LabelSpace
from llmcls.metrics import compute_metrics
from llmcls.runs import Predictions, RunDir

LABELS = ["cs.LG", "cs.AI", "stat.ML", "cs.IT", "math.IT", "cs.CL", "cs.CV", "q-bio.NC", "nlin.AO"]
N = 40
CONFIG = {"train": "aapd-train", "validation": "aapd-validation", "test": "aapd-test", "split_ratios": None,
          "label_level": "category", "min_label_count": 1, "data_sizes": {"train": 400, "validation": 100, "test": N}}


def gold_matrix(rng: np.random.Generator) -> np.ndarray:
    """Skewed label frequencies (first labels common, then rare, the last never true), at least one label per
    example."""
    gold = rng.random((N, len(LABELS))) < np.append(np.linspace(0.6, 0.05, len(LABELS) - 1), 0.0)
    gold[np.arange(N), rng.integers(0, 3, N)] = True
    return gold


def write_run(path: Path, space: LabelSpace, gold: np.ndarray, predicted: np.ndarray, *, scores=None, raw=None,
              system: str, model: str, timing: dict, extra: dict | None = None, config: dict | None = None,
              split: str = "test", primary: str = "test", ids: list[str] | None = None) -> Path:
    run = RunDir(path).create()
    if config is not None:
        run.write_config(config)
    run.write_labels(space)
    ids = ids or example_ids(len(gold))
    run.write_predictions(Predictions(ids, gold, predicted, scores, raw), space, split, primary)
    run.write_metrics(compute_metrics(gold, predicted, scores), system=system, model=model, split=split,
                      primary=primary, timing=timing, extra=extra)
    return path


def example_ids(n: int) -> list[str]:
    return [f"2101.{i:05d}" for i in range(n)]


def make_runs(root: Path, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    space = LabelSpace(LABELS)
    gold = gold_matrix(rng)
    scores = gold * 1.0 + rng.normal(0.0, 0.6, gold.shape)
    linear = write_run(root / "linear_svm", space, gold, scores > 0.5, scores=scores, system="linear",
                       model="tfidf+svm", config=CONFIG,
                       timing={"wall_s": 0.02, "examples_per_s": 2000.0, "device": "cpu", "train_s": 1.5},
                       extra={"params_trained": 12345})
    # validation split of the linear run too, for --split
    val_gold = gold_matrix(rng)
    write_run(root / "linear_svm", space, val_gold, val_gold, scores=val_gold * 1.0, system="linear",
              model="tfidf+svm", timing={"device": "cpu"}, split="validation", primary="test")
    flipped = gold ^ (rng.random(gold.shape) < 0.15)
    raw = [", ".join(row) for row in space.from_multi_hot(flipped)]
    zeroshot = write_run(root / "zeroshot", space, gold, flipped, raw=raw, system="zeroshot", model="tiny-llm",
                         config=CONFIG,
                         timing={"wall_s": 4.0, "examples_per_s": 10.0, "device": "cuda:0", "backend": "hf"},
                         extra={"params_trained": 0, "generation": {"mode": "generate", "well_formed_rate": 0.925,
                                                             "unknown_label_rate": 0.05}})
    bare = write_run(root / "bare", space, gold, np.roll(gold, 1, axis=1), system="encoder-bce", model="bert",
                     timing={})
    return [linear, zeroshot, bare]
