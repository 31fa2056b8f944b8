"""Throughput of the HF backend (examples/s) for free, constrained and score modes, beside two reference points.

    python benchmarks/bench_generative_throughput.py                      # a GPU: Qwen2.5-0.5B's shape, 2,048 prompts
    python benchmarks/bench_generative_throughput.py --tiny               # CPU smoke run: a 2-layer model, 32 prompts

The model is randomly initialised from a config of Qwen2.5-0.5B's shape (24 layers, hidden 896, 14 heads / 2 KV
heads, vocabulary 151,936, tied embeddings; no download), in bfloat16 on the GPU. Prompts are real AAPD abstracts
(`../shared/data/aapd/val.jsonl`) in a ChatML prompt of about `--prompt_tokens` tokens (default 320, AAPD's
length); the tokenizer is a byte-level BPE trained here on the same abstracts, so token counts are realistic. The
label space is AAPD's 54 labels. Random weights make the outputs meaningless but the work realistic: free
generation runs to its token budget (the slowest case); constrained decoding writes exactly `--max_labels` labels
(default 3, AAPD averages 2.4), since the early stop when a model leaves the format is off here (a random model
leaves it at once, which would flatter the speed).

Rows: `tokenize` (not in the default rows) times `encode_prompts` over all the prompts, the host work every llmcls
mode does before its first batch reaches the model (batches are formed by length in tokens; the floor tokenises
batch by batch instead, while the GPU runs the batch before; the header names TOKENIZERS_PARALLELISM, which makes
it single-threaded when false);
`model.generate` at one batch (stock transformers, no constraint: the anchor), one forward pass over the
prompts (the compute floor of any mode), and the backend's free, constrained and score modes at `--batch_size`;
`static-*` rows are free and constrained generation with `--static_cache` (a static KV cache, whose decoding steps
transformers compiles with CUDA graphs on a GPU; the compilation happens in the warm-up, and its time is printed);
`floor-compiled` (not in the default rows) is the floor through `torch.compile`, which says how far fused kernels
would move the prompt pass that every mode pays (on an H100 the eager floor is 781 examples/s, below the 1,000
target of score and constrained modes); `score-regional` and `constrained-regional` (not in the default rows either)
run the backend with `--compile_layers` on a copy of the model (its layers' MLPs and norms compiled with
`module.compile()`, regional compilation, shapes dynamic after the first; the modules that do not touch the KV
cache, so one compilation serves every layer). Two more rows take score mode apart: `score-prompt`
stops it after the prompt pass (so score minus score-prompt is the label pass), `score-noprefix` encodes every prompt
whole instead of reusing the shared prefix's KV cache (whose [prefix | padding | rest] layout could pick a slower
attention kernel than plain left padding), `score-blocking` copies each batch to the GPU the plain way (a copy
that waits for the kernels queued before it) instead of from pinned memory without blocking. `score-calls` and
`score-stream` hand the backend one batch at a time, as the CLI does: a `score` call a batch, each read back before
the next (the CLI until session 15), against `score_batches`, which queues the next batch before handing back one
(the CLI now, which writes a batch's records meanwhile; no records are made here); `cli-score` and
`cli-constrained` run the CLI's own loop over as many AAPD rows (`generative_run.predict_split` with the compact
prompt, whose length the table's header does not give: AAPD abstracts uncut, so prompts differ from the other rows'
~320 tokens; records parsed, written and fsynced batch by batch). Compilation fuses
memory-bound element-wise kernels (norms, activations), where a GPU's eager forward spends much of its time; a CPU
is bound by the matrix products (session 6's note has a one-off CPU comparison with SmolLM2, which found no gain
there).
Numbers are measured on the device the script runs on; warm-up batches are not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from aapd_protocol import run_line  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_AAPD = ROOT.parent / "shared" / "data" / "aapd" / "val.jsonl"
sys.path.insert(0, str(ROOT / "tests"))  # tiny_llms: the tokenizer trainer and ChatML template of the tests


def qwen25_05b_config(vocab_size: int, tiny: bool):
    from transformers import Qwen2Config

    if tiny:
        return Qwen2Config(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    return Qwen2Config(vocab_size=vocab_size, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                       num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                       rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True)


def build(args, rows: list[dict]):
    import torch
    from tiny_llms import train_tokenizer
    from transformers import AutoModelForCausalLM

    from llmcls.backends.hf import HFBackend
    from llmcls.backends.loading import pick_device, pick_dtype

    tokenizer = train_tokenizer([r["abstract"] for r in rows] + [" ".join(r["labels"]) for r in rows],
                                vocab_size=8000)
    tokenizer.padding_side = "left"
    device = pick_device("auto")
    dtype = pick_dtype("auto", device)
    config = qwen25_05b_config(151936 if not args.tiny else len(tokenizer), args.tiny)
    config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype).to(device).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return HFBackend(model, tokenizer, batch_size=args.batch_size), tokenizer


def with_static_cache(backend):
    """The same model and settings, generating with a static (compiled on a GPU) KV cache."""
    from llmcls.backends.hf import HFBackend

    return HFBackend(backend.model, backend.tokenizer, batch_size=backend.batch_size, static_cache=True)


def without_label_pass(backend):
    """The same model and settings, its score mode stopped after the prompt pass (the trie's label pass returns zeros,
    so the scores are wrong): the prompt pass's share of score mode, with no profiler in the way."""
    import torch

    from llmcls.backends.hf import HFBackend

    prompt_only = HFBackend(backend.model, backend.tokenizer, batch_size=backend.batch_size)
    prompt_only._extra_pass = lambda cache, mask, t: torch.zeros((mask.shape[0], len(t["inner_pairs"])),
                                                                 device=mask.device)
    return prompt_only


def with_blocking_uploads(backend):
    """The same model and settings, each batch's token ids copied to the GPU the plain way (the copy waits for every
    kernel queued before it) instead of from pinned memory without blocking: what the non-blocking copy is worth."""
    from llmcls.backends.hf import HFBackend

    blocking = HFBackend(backend.model, backend.tokenizer, batch_size=backend.batch_size)
    blocking._upload = lambda tensor: tensor.to(backend.model.device)
    return blocking


def without_shared_prefix(backend):
    """The same model and settings, every prompt encoded whole (no shared-prefix KV cache, plain left padding)."""
    from llmcls.backends.hf import HFBackend

    return HFBackend(backend.model, backend.tokenizer, batch_size=backend.batch_size, share_prefix=False)


def with_regional_compilation(backend):
    """The backend's `--compile_layers` on a copy of the model: its decoder layers' MLPs and norms compiled (regional
    compilation; the attention, which indexes the KV cache by its layer number, stays eager)."""
    import copy

    from llmcls.backends.hf import HFBackend

    return HFBackend(copy.deepcopy(backend.model), backend.tokenizer, batch_size=backend.batch_size,
                     compile_layers=True)


def cli_split(backend, rows: list[dict], labels: tuple[str, ...], n: int, folder: Path, mode: str, max_labels: int):
    """A function that predicts `n` AAPD rows the way `llmcls zeroshot` does (`generative_run.predict_split`: its
    prompts from the compact template, batches fitted as taken, records written and fsynced batch by batch), into
    a fresh predictions file in `folder` at each call. Constrained answers run to `max_labels` labels, as the
    `constrained` row's do (the early stop off: a random model would leave the format at once)."""
    from llmcls.config import DataArguments
    from llmcls.corpus import load_corpus
    from llmcls.generative_run import predict_split
    from llmcls.task import GenerationArguments, PromptArguments, Task

    folder.mkdir(parents=True, exist_ok=True)
    test, names = folder / "test.jsonl", folder / "labels.txt"
    test.write_text("".join(json.dumps({"id": f"r{i}", "abstract": rows[i % len(rows)]["abstract"],
                                        "labels": rows[i % len(rows)]["labels"]}) + "\n" for i in range(n)))
    names.write_text("".join(label + "\n" for label in labels))
    corpus = load_corpus(DataArguments(test=str(test), labels=str(names)), required=("test",))
    task = Task.build(corpus, backend, PromptArguments(output_dir="", prompt="compact"),
                      GenerationArguments(mode=mode, constrained=mode != "score", batch_size=backend.batch_size,
                                          max_labels=max_labels, stop_off_format=False))
    calls = iter(range(1 << 30))

    def run():
        predict_split(task, corpus.get("test"), "test", folder / f"predictions-{next(calls)}.jsonl")

    return run


def make_prompts(tokenizer, rows: list[dict], n: int, target_tokens: int) -> list[str]:
    """ChatML prompts of about `target_tokens` tokens: an instruction and an abstract cut or repeated to fit."""
    head = "Classify the abstract into arXiv categories. Answer with the category codes only, separated by commas.\n"
    prompts = []
    for i in range(n):
        words = rows[i % len(rows)]["abstract"].split()
        while len(words) < 2 * target_tokens:
            words = words + words
        lo, hi = 1, len(words)
        while lo < hi:  # the longest cut of the abstract that keeps the prompt within the target
            mid = (lo + hi + 1) // 2
            text = tokenizer.apply_chat_template([{"role": "user", "content": head + " ".join(words[:mid])}],
                                                 tokenize=False, add_generation_prompt=True)
            lo, hi = (mid, hi) if len(tokenizer.encode(text)) <= target_tokens else (lo, mid - 1)
        prompts.append(tokenizer.apply_chat_template([{"role": "user", "content": head + " ".join(words[:lo])}],
                                                     tokenize=False, add_generation_prompt=True))
    return prompts


def timed(fn, n_examples: int, sync) -> float:
    sync()
    started = time.perf_counter()
    fn()
    sync()
    return n_examples / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aapd", type=Path, default=DEFAULT_AAPD)
    parser.add_argument("--tiny", action="store_true", help="A 2-layer model and few prompts (CPU smoke run).")
    parser.add_argument("--n", type=int, default=None, help="Prompts per row (default 2048; 32 with --tiny).")
    parser.add_argument("--batch_size", type=int, default=None, help="Default 256 (8 with --tiny).")
    parser.add_argument("--prompt_tokens", type=int, default=320)
    parser.add_argument("--max_labels", type=int, default=3, help="Labels per constrained answer (AAPD: 2.4 avg).")
    parser.add_argument("--modes", default="stock,floor,free,constrained,score,static-constrained,static-free",
                        help="Rows to measure, comma-separated (tokenize, stock, floor, floor-compiled, free, "
                             "constrained, score, static-constrained, static-free, score-prompt, score-noprefix, "
                             "score-blocking, score-calls, score-stream, cli-score, cli-constrained, "
                             "score-regional, constrained-regional).")
    parser.add_argument("--profile", action="store_true",
                        help="Also profile one batch of the floor, score and constrained modes (GPU-busy "
                             "fraction, top operators and, on a GPU, the lines where the host waited for it; on "
                             "a CPU, CPU operators only).")
    args = parser.parse_args()
    args.n = args.n or (32 if args.tiny else 2048)
    args.batch_size = args.batch_size or (8 if args.tiny else 256)

    import torch

    from llmcls.backends import LabelConstraint, encode_prompts
    from llmcls.parsing import ANSWER_SEPARATOR, format_labels

    rows = [json.loads(line) for line in args.aapd.read_text(encoding="utf-8").splitlines() if line.strip()]
    labels = tuple(dict.fromkeys(label for r in rows for label in r["labels"]))
    backend, tokenizer = build(args, rows)
    prompts = make_prompts(tokenizer, rows, args.n, args.prompt_tokens)
    lengths = backend.count_tokens(prompts)
    longest = sorted(labels, key=lambda lab: -len(tokenizer.encode(lab)))[: args.max_labels]
    budget = len(tokenizer.encode(format_labels(longest))) + 1
    constraint = LabelConstraint(labels, ANSWER_SEPARATOR, args.max_labels, stop_off_format=False)
    cuda = torch.cuda.is_available()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    model = backend.model
    modes = args.modes.split(",")
    static = with_static_cache(backend) if any(mode.startswith("static-") for mode in modes) else None
    regional = with_regional_compilation(backend) if any(mode.endswith("-regional") for mode in modes) else None
    prompt_only = without_label_pass(backend) if "score-prompt" in modes else None
    whole = without_shared_prefix(backend) if "score-noprefix" in modes else None
    blocking = with_blocking_uploads(backend) if "score-blocking" in modes else None
    scratch = tempfile.TemporaryDirectory(prefix="bench-cli-")  # the cli-* rows' files; removed at exit
    cli = {mode: cli_split(backend, rows, labels, args.n, Path(scratch.name) / mode, mode, args.max_labels)
           for mode in ("score", "generate") if f"cli-{'score' if mode == 'score' else 'constrained'}" in modes}

    def stock_generate():
        for start in range(0, len(prompts), args.batch_size):
            batch = tokenizer(prompts[start:start + args.batch_size], return_tensors="pt", padding=True)
            model.generate(**batch.to(model.device), max_new_tokens=budget, do_sample=False,
                           pad_token_id=tokenizer.pad_token_id)

    def forward_floor(forward=model, pad_to: int | None = None, texts=prompts):
        with torch.inference_mode():
            for start in range(0, len(texts), args.batch_size):
                batch = tokenizer(texts[start:start + args.batch_size], return_tensors="pt", padding=True,
                                  pad_to_multiple_of=pad_to)
                forward(**batch.to(model.device), logits_to_keep=1)

    # the floor again through torch.compile (fused element-wise kernels; prompts padded to a multiple of 64 so that
    # one shape compiles): how far a compiled prompt pass would move every mode's floor
    compiled = torch.compile(model, dynamic=False) if "floor-compiled" in args.modes.split(",") else None

    # the CLI's batches: it hands the backend one batch at a time (the prompts are about equally long here)
    batches = [prompts[start:start + args.batch_size] for start in range(0, len(prompts), args.batch_size)]

    def tokenize():  # what every llmcls mode does with all its prompts before the first batch reaches the model
        encode_prompts(tokenizer, prompts)

    cases = {
        "tokenize": ("tokenising the prompts alone (encode_prompts, all at once; no model)", tokenize),
        "stock": (f"stock model.generate, batch {args.batch_size}, {budget} new tokens (anchor)", stock_generate),
        "floor": ("one forward pass over the prompts (compute floor)", forward_floor),
        "floor-compiled": ("the same forward pass, torch.compile (prompts padded to a multiple of 64)",
                           lambda: forward_floor(compiled, 64)),
        "free": ("llmcls free generation", lambda: backend.generate(prompts, max_new_tokens=budget)),
        "constrained": ("llmcls constrained",
                        lambda: backend.generate(prompts, max_new_tokens=budget, constraint=constraint)),
        "score": (f"llmcls score (all {len(labels)} labels)",
                  lambda: backend.score(prompts, labels, separator=ANSWER_SEPARATOR)),
        "static-constrained": ("llmcls constrained, --static_cache",
                               lambda: static.generate(prompts, max_new_tokens=budget, constraint=constraint)),
        "static-free": ("llmcls free generation, --static_cache",
                        lambda: static.generate(prompts, max_new_tokens=budget)),
        "score-prompt": ("llmcls score, prompt pass only (label pass skipped; attribution, scores wrong)",
                         lambda: prompt_only.score(prompts, labels, separator=ANSWER_SEPARATOR)),
        "score-noprefix": (f"llmcls score (all {len(labels)} labels), no shared-prefix cache",
                           lambda: whole.score(prompts, labels, separator=ANSWER_SEPARATOR)),
        "score-calls": (f"llmcls score (all {len(labels)} labels), one call a batch, read back before the next",
                        lambda: [backend.score(batch, labels, separator=ANSWER_SEPARATOR) for batch in batches]),
        "score-stream": (f"llmcls score (all {len(labels)} labels), `score_batches` (the CLI's loop)",
                         lambda: list(backend.score_batches(batches, labels, separator=ANSWER_SEPARATOR))),
        "cli-score": ("the CLI's split loop, score mode (compact prompt; records written batch by batch)",
                      lambda: cli["score"]()),
        "cli-constrained": ("the CLI's split loop, constrained (compact prompt; records written batch by batch)",
                            lambda: cli["generate"]()),
        "score-blocking": (f"llmcls score (all {len(labels)} labels), blocking host-to-GPU copies",
                           lambda: blocking.score(prompts, labels, separator=ANSWER_SEPARATOR)),
        "score-regional": (f"llmcls score (all {len(labels)} labels), --compile_layers",
                           lambda: regional.score(prompts, labels, separator=ANSWER_SEPARATOR)),
        "constrained-regional": ("llmcls constrained, --compile_layers",
                                 lambda: regional.generate(prompts, max_new_tokens=budget, constraint=constraint)),
    }
    warm = prompts[: args.batch_size]
    backend.generate(warm, max_new_tokens=budget, constraint=constraint)  # kernels, allocator, grammar
    # the score plan (label trie) and the prefix cache are built once
    for scorer in (backend, prompt_only, whole, blocking):
        if scorer is not None:
            scorer.score(warm, labels, separator=ANSWER_SEPARATOR)

    def compile_floor():
        forward_floor(compiled, 64)

    def compile_static():  # the first batch of each shape compiles (a GPU); the timed rows reuse the graphs
        static.generate(warm, max_new_tokens=budget, constraint=constraint)
        static.generate(warm, max_new_tokens=budget)

    def compile_regional():  # compiles on the first shape of each pass, again (dynamic) on a second shape; only
        for batch in (warm, prompts[-args.batch_size:]):  # the passes asked for (each costs a GPU step's time)
            if "score-regional" in modes:
                regional.score(batch, labels, separator=ANSWER_SEPARATOR)
            if "constrained-regional" in modes:
                regional.generate(batch, max_new_tokens=budget, constraint=constraint)

    # compilations, each timed once, just before the first row that needs it: a step cut short by its time limit
    # still prints the rows measured before
    compilations = {"floor-compiled": ("torch.compile of the forward pass, first pass over the prompts",
                                       compile_floor),
                    "static-": ("static cache warm-up (compilation on a GPU), free and constrained, one batch each",
                                compile_static),
                    "-regional": ("--compile_layers warm-up (the regional modes asked for, two batch shapes)",
                                  compile_regional)}
    print(run_line())
    print(f"# bench_generative_throughput: {'tiny 2-layer model' if args.tiny else 'Qwen2.5-0.5B shape'}, random "
          f"weights, {model.dtype}, {backend.device}")
    print(f"# {len(prompts)} prompts, {min(lengths)}-{max(lengths)} tokens (mean {sum(lengths) / len(lengths):.0f}),"
          f" batch {args.batch_size}, {len(labels)} labels, answer budget {budget} tokens, max_labels "
          f"{args.max_labels}; torch {torch.__version__}, Python {platform.python_version()}, "
          f"{os.cpu_count()} CPU cores; TOKENIZERS_PARALLELISM={os.environ.get('TOKENIZERS_PARALLELISM', '(unset)')}")
    print()
    print("| mode | examples/s |")
    print("|---|---:|")
    compiled_notes = []
    for key in modes:
        for part, (what, run) in list(compilations.items()):
            if part in key:
                started = time.perf_counter()
                run()
                sync()
                compiled_notes.append(f"{what}: {time.perf_counter() - started:.1f} s")
                print(compiled_notes[-1], file=sys.stderr)  # in the step's log at once, in the table at the end
                del compilations[part]
        rate = timed(cases[key][1], len(prompts), sync)
        print(f"| {cases[key][0]} | {rate:,.1f} |" if rate >= 100 else f"| {cases[key][0]} | {rate:.3g} |",
              flush=True)  # three significant digits for the slow rows of a CPU
    for note in compiled_notes:
        print(f"\n{note}")
    if args.profile:  # one batch of the floor and of each mode profiled: is the GPU busy, and with what?
        from profiling import Profile

        one = prompts[: args.batch_size]
        with Profile(f"floor, one batch of {len(one)} prompts"):
            forward_floor(texts=one)
        with Profile(f"score, one batch of {len(one)} prompts"):
            backend.score(one, labels, separator=ANSWER_SEPARATOR)
        with Profile(f"constrained, one batch of {len(one)} prompts"):
            backend.generate(one, max_new_tokens=budget, constraint=constraint)


if __name__ == "__main__":
    main()
