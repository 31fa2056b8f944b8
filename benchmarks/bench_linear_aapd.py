"""Quality check of the linear baseline on AAPD, by the development protocol of ../shared/data/README.md.

    python benchmarks/bench_linear_aapd.py                          # development estimate (no test split here)
    python benchmarks/bench_linear_aapd.py --test path/to/aapd/test.jsonl   # the final check on AAPD's test split

Protocol: train on the first 800 rows of AAPD's validation file, tune (C, min_labels, thresholds) on its last 200;
score `--test`, which is never used for tuning. Beside `llmcls train-linear` it runs a plain scikit-learn reference
(TF-IDF uni+bigrams + one-vs-rest LinearSVC with defaults) cut by a fixed top-2 rule and at decision value 0.
Without `--test`, a development estimate instead: train on rows 1-600, tune on 601-800, score rows 801-1000.
Target (issue 2): at least 0.56 micro-F1 on AAPD's test split.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from aapd_protocol import DEFAULT_AAPD, protocol_splits, run_line, write_rows


def plain_reference(train: list[dict], test: list[dict]) -> dict[str, float]:
    """TF-IDF + OneVsRest(LinearSVC) with library defaults: top-2 rule and decision value 0."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import MultiLabelBinarizer
    from sklearn.svm import LinearSVC

    from llmcls.metrics import compute_metrics

    binarizer = MultiLabelBinarizer().fit([r["labels"] for r in train])
    known = set(binarizer.classes_)
    y_train = binarizer.transform([r["labels"] for r in train])
    y_test = binarizer.transform([[lab for lab in r["labels"] if lab in known] for r in test]).astype(bool)
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    model = OneVsRestClassifier(LinearSVC()).fit(vectorizer.fit_transform([r["abstract"] for r in train]), y_train)
    scores = model.decision_function(vectorizer.transform([r["abstract"] for r in test]))
    top2 = np.zeros_like(y_test)
    np.put_along_axis(top2, np.argsort(-scores, axis=1)[:, :2], True, axis=1)
    return {"top-2 rule": compute_metrics(y_test, top2, scores)["micro_f1"],
            "decision > 0": compute_metrics(y_test, scores > 0, scores)["micro_f1"]}


def run_llmcls(train: str, validation: str, test: str, out: Path, extra: list[str]) -> tuple[dict, float]:
    from llmcls.linear import main

    started = time.perf_counter()
    code = main(["--train", train, "--validation", validation, "--test", test, "--output_dir", str(out), *extra])
    if code:
        raise SystemExit(code)
    record = json.loads((out / "metrics.json").read_text())
    return record, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aapd", type=Path, default=DEFAULT_AAPD, help="AAPD validation file (1,000 rows).")
    parser.add_argument("--test", type=Path, default=None, help="AAPD test split (the final check).")
    parser.add_argument("--classifier", default="svm", choices=["svm", "logreg"])
    args = parser.parse_args()
    train, validation, test, protocol = protocol_splits(args.aapd, args.test)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = [write_rows(tmp / f"{n}.jsonl", r) for n, r in (("train", train), ("val", validation),
                                                                 ("test", test))]
        record, wall = run_llmcls(*paths, tmp / "run", ["--classifier", args.classifier])
    reference = plain_reference(train, test)
    m = record["metrics"]
    print(run_line())
    print(f"# bench_linear_aapd: {protocol}")
    print(f"# {len(train)}/{len(validation)}/{len(test)} rows, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}; llmcls train-linear --classifier {args.classifier} (defaults)")
    print()
    print("| system | micro-F1 | macro-F1 | samples-F1 | P@1 | train+predict (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| llmcls train-linear (tuned on validation) | {m['micro_f1']:.4f} | {m['macro_f1']:.4f} | "
          f"{m['samples_f1']:.4f} | {m['p_at_1']:.4f} | {wall:.1f} |")
    for name, value in reference.items():
        print(f"| plain TF-IDF + LinearSVC, {name} | {value:.4f} | | | | |")
    print()
    print(f"target: micro-F1 >= 0.56 on AAPD's test split; measured {m['micro_f1']:.4f} "
          f"({'test split' if args.test else 'development estimate, not the target split'})")


if __name__ == "__main__":
    main()
