"""The host's share of `llmcls zeroshot --mode score`: what the CLI's split loop does besides the model.

    python benchmarks/bench_cli_host.py                 # 2,048 AAPD rows, batch 256, as bench_generative_throughput

The `cli-score` row of `bench_generative_throughput.py` runs the CLI's loop (`generative_run.predict_split`, compact
prompt) on a GPU; this says, on any machine, how long the same loop takes with the model left out, and where that
time goes. The backend and tokenizer are bench_generative_throughput's (a byte-level BPE trained on the AAPD
abstracts; a tiny model, whose scores are replaced by zeros here, so only the host's work is timed: rendering the
prompts, tokenising them once to count their lengths, the backend tokenising each batch again, making and writing
the records). Rows: the prompts' tokens (mean, and with the padding of batches sorted by length), rendering alone,
counting alone, and the whole loop with the scores stubbed (median of `--repeats`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from aapd_protocol import DEFAULT_AAPD, read_rows, run_line  # noqa: E402
from bench_generative_throughput import build, cli_split  # noqa: E402


def median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aapd", type=Path, default=DEFAULT_AAPD)
    parser.add_argument("--n", type=int, default=2048, help="Rows (AAPD's, repeated as needed).")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from llmcls.config import DataArguments
    from llmcls.corpus import load_corpus
    from llmcls.task import GenerationArguments, PromptArguments, Task, length_batches, rows_of

    rows = read_rows(args.aapd)
    labels = tuple(dict.fromkeys(label for row in rows for label in row["labels"]))
    backend, _ = build(argparse.Namespace(tiny=True, batch_size=args.batch_size), rows)

    def stubbed_scores(batches, continuations, separator=None, ends="prefixes"):
        for prompts in batches:  # the backend's own tokenisation of each batch stays; the model does not run
            backend.count_tokens(prompts)
            yield np.zeros((len(prompts), len(continuations)), dtype=np.float32)

    backend.score_batches = stubbed_scores
    with tempfile.TemporaryDirectory() as tmp:
        loop = cli_split(backend, rows, labels, args.n, Path(tmp), "score", 3)
        corpus = load_corpus(DataArguments(test=str(Path(tmp) / "test.jsonl"), labels=str(Path(tmp) / "labels.txt")),
                             required=("test",))
        task = Task.build(corpus, backend, PromptArguments(output_dir="", prompt="compact"),
                          GenerationArguments(mode="score", batch_size=args.batch_size))
        examples = rows_of(corpus.get("test"))

        def render():
            return [task.render_one(row.get("title"), row["abstract"], []) for row in examples]

        prompts = render()
        lengths = backend.count_tokens(prompts)
        padded = sum(max(lengths[j] for j in batch) * len(batch) for batch in length_batches(lengths,
                                                                                             args.batch_size))
        loop()  # warm: template, tokenizer caches
        rendering = median_s(render, args.repeats)
        counting = median_s(lambda: backend.count_tokens(prompts), args.repeats)
        whole = median_s(loop, args.repeats)
    print(run_line())
    print(f"# bench_cli_host: {args.n} rows of {args.aapd.name}, compact prompt, batch {args.batch_size}, "
          f"bench_generative_throughput's tokenizer, scores stubbed; median of {args.repeats}")
    print()
    print("| what | value |")
    print("|---|---:|")
    print(f"| prompt tokens, mean (max) | {np.mean(lengths):.1f} ({max(lengths)}) |")
    print(f"| tokens computed a prompt, batches sorted by length (padding included) | {padded / len(lengths):.1f} |")
    print(f"| rendering the prompts | {rendering:.3f} s |")
    print(f"| counting their tokens (one tokenizer pass) | {counting:.3f} s |")
    print(f"| the CLI's split loop, scores stubbed (records written) | {whole:.3f} s |")


if __name__ == "__main__":
    main()
