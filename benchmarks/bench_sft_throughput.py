"""Training throughput of `llmcls sft`'s own code path (TRL SFTTrainer as llmcls builds it): tokens/s and MFU.

    python benchmarks/bench_sft_throughput.py                        # GPU: random Qwen2.5-0.5B-shaped model
    python benchmarks/bench_sft_throughput.py --full                 # full fine-tuning instead of LoRA
    python benchmarks/bench_sft_throughput.py --tiny --steps 3       # CPU smoke run of the script itself
    python benchmarks/bench_sft_throughput.py --tiny --layers 24 --batch_size 2 --seq_len 64 --answer_len 8
                                          # CPU: the per-step host work of a 24-layer model (see below)

Speed does not depend on the weights, so the model is randomly initialised from a Qwen2.5-0.5B-shaped config and
saved to a temporary folder (the real `from_pretrained(path)` runs); examples are AAPD-sized (`--seq_len` tokens,
the last `--answer_len` of them the answer, which alone carries the loss). The timed window excludes `--warmup`
steps. MFU counts 6 N FLOPs per token for full fine-tuning and 4 N for LoRA (forward 2N plus the backward pass
through the frozen weights 2N; the adapters' own FLOPs are negligible), N = parameters without embeddings, plus
attention (12 * layers * hidden * seq_len per token, x2/3 for LoRA likewise); `--peak_tflops` is the GPU's dense
bf16 peak (H100 SXM 989, H200 989).

With `--tiny --layers 24` and a small batch the model's arithmetic is negligible, so on a CPU the step time is the
host's work per step (Python, PEFT's per-module code, operator dispatch), the part a GPU waits on when a step is
launch-bound, as LoRA on Qwen2.5-0.5B's shape is (GPU busy under a third of the time in the H200 profile).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import tempfile
import time
from pathlib import Path

from aapd_protocol import run_line  # noqa: E402

QWEN_05B = {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
            "num_key_value_heads": 2, "vocab_size": 151936}
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 1000}


def build_model(folder: Path, shape: dict, texts: list[str]) -> None:
    import sys

    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tiny_llms import train_tokenizer

    tokenizer = train_tokenizer(texts, vocab_size=min(shape["vocab_size"], 800))
    config = Qwen2Config(**shape, max_position_embeddings=4096, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def cached_model(shape: dict) -> Path:
    """The random model of `shape` (seed 0), built once per machine in $LLMCLS_BENCH_MODELS (default
    /tmp/llmcls-bench-models): gpu_session.sh runs this benchmark four times, and building and saving a 0.5B model
    each time took a share of the step's time limit."""
    import hashlib
    import json
    import os

    root = Path(os.environ.get("LLMCLS_BENCH_MODELS", "/tmp/llmcls-bench-models"))
    folder = root / ("qwen2-" + hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:12])
    if not (folder / "config.json").exists():
        partial = root / f".{folder.name}.{os.getpid()}"
        build_model(partial, shape, ["cs.LG, stat.ML", "abstract text about codes and learning"] * 50)
        os.replace(partial, folder)
    return folder


def synthetic_dataset(n: int, seq_len: int, answer_len: int, vocab: int):
    import datasets
    import numpy as np

    rng = np.random.default_rng(0)
    ids = rng.integers(10, vocab, size=(n, seq_len)).tolist()
    labels = [[-100] * (seq_len - answer_len) + row[-answer_len:] for row in ids]
    return datasets.Dataset.from_dict({"input_ids": ids, "labels": labels})


def flops_per_token(shape: dict, seq_len: int, lora: bool) -> float:
    h, layers, inter = shape["hidden_size"], shape["num_hidden_layers"], shape["intermediate_size"]
    kv = h * shape["num_key_value_heads"] // shape["num_attention_heads"]
    n = layers * (2 * h * h + 2 * h * kv + 3 * h * inter)  # q, o, k, v and the gated MLP
    n += h * shape["vocab_size"]  # the output projection (logits) runs for every token
    factor = 4 if lora else 6
    return factor * n + (factor / 6) * 12 * layers * h * seq_len


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="A tiny model on CPU (checks the script, not speed).")
    parser.add_argument("--full", action="store_true", help="Full fine-tuning instead of LoRA r=16 all-linear.")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--seq_len", type=int, default=384)
    parser.add_argument("--answer_len", type=int, default=12)
    parser.add_argument("--layers", type=int, default=None, help="Decoder layers (default: the shape's own).")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--peak_tflops", type=float, default=989.0)
    parser.add_argument("--profile", type=int, default=0,
                        help="Also profile this many steps after the timed ones (GPU only; prints the GPU-busy "
                             "fraction and the top operators).")
    parser.add_argument("--extra", default="",
                        help="More `llmcls sft` options in one string, e.g. --extra='--lora_dropout 0.0'.")
    parser.add_argument("--trl_metrics", action="store_true",
                        help="TRL's own loss method, which reads its logged numbers back from the GPU every step "
                             "(llmcls defers them to the log: sft_trainer.DeferredMetrics): the comparison row.")
    args = parser.parse_args()
    import torch

    from llmcls.config import parse
    from llmcls.sft import make_parser
    from llmcls.sft_trainer import DeferredMetrics, make_trainer

    if args.trl_metrics:
        del DeferredMetrics.compute_loss, DeferredMetrics.log

    shape = dict(TINY if args.tiny else QWEN_05B)
    if args.layers:
        shape["num_hidden_layers"] = args.layers
    with tempfile.TemporaryDirectory() as tmp:
        folder = cached_model(shape)
        gpu = torch.cuda.is_available()
        argv = ["--model_name_or_path", str(folder), "--train", "aapd-train", "--output_dir", str(Path(tmp) / "o"),
                "--per_device_train_batch_size", str(args.batch_size), "--max_steps",
                str(args.steps + args.warmup + args.profile),
                "--bf16", "true" if gpu else "false", "--activation_checkpointing", "false", "--report_to", "none",
                "--save_strategy", "no", "--logging_steps", "1000", "--max_length", str(args.seq_len),
                *(["--use_peft", "false"] if args.full else ["--use_peft", "true", "--lora_r", "16", "--lora_alpha",
                                                             "32", "--lora_target_modules", "all-linear"]),
                *shlex.split(args.extra)]
        _, script_args, _, training_args, model_args = parse(make_parser(), argv)
        n = args.batch_size * (args.steps + args.warmup + args.profile)
        ds = synthetic_dataset(n, args.seq_len, args.answer_len, min(shape["vocab_size"], 800))
        from transformers import AutoTokenizer

        trainer = make_trainer(model_args, training_args, AutoTokenizer.from_pretrained(folder), ds, None,
                               compile_regions=script_args.compile_regions)
        timer = StepTimer(args.warmup, args.warmup + args.steps)
        trainer.add_callback(timer)
        if args.profile:  # three steps after the timed window (so the profiler does not slow the timed steps)
            from profiling import Profile, step_window

            trainer.add_callback(step_window(Profile(f"SFT training, {args.profile} steps"), args.warmup + args.steps,
                                             args.warmup + args.steps + args.profile))
        started = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - started  # every step, compilation (--torch_compile) included
    tokens_per_s = args.batch_size * args.seq_len * args.steps / timer.elapsed
    mfu = tokens_per_s * flops_per_token(shape, args.seq_len, not args.full) / (args.peak_tflops * 1e12)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
    print(run_line())
    print(f"# bench_sft_throughput: {'tiny' if args.tiny else 'Qwen2.5-0.5B-shaped'} random model "
          f"({shape['num_hidden_layers']} layers), "
          f"{'full fine-tuning' if args.full else 'LoRA r=16 all-linear'}, "
          f"{'TRL' if args.trl_metrics else 'deferred'} per-step metrics, weights {model_args.dtype} (the "
          f"command's --dtype auto), batch {args.batch_size} x {args.seq_len} "
          f"tokens (padded), {args.steps} timed steps after {args.warmup}, extra options [{args.extra}], "
          f"device {device}, "
          f"torch {torch.__version__}, Python {platform.python_version()}; trainer.train() took {train_s:.1f} s "
          f"(all {args.warmup + args.steps + args.profile} steps, compilation included)")
    print()
    print(f"| method | tokens/s | examples/s | ms/step | MFU (peak {args.peak_tflops:.0f} TFLOPS) |")
    print("|---|---:|---:|---:|---:|")
    print(f"| {'full' if args.full else 'LoRA'} | {tokens_per_s:,.0f} | {tokens_per_s / args.seq_len:,.1f} | "
          f"{1000 * timer.elapsed / args.steps:.1f} | {mfu:.1%} |")


class StepTimer:
    """A TrainerCallback (duck-typed) timing steps warmup+1 .. last. The GPU's queue is drained at those two edges
    only: a synchronisation at every step would stop the CPU from queueing ahead and understate the speed."""

    def __init__(self, warmup: int, last: int):
        self.warmup, self.last, self.started, self.elapsed = warmup, last, None, 0.0

    def on_step_end(self, args, state, control, **kwargs):
        import torch

        if state.global_step not in (self.warmup, self.last):
            return
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if state.global_step == self.warmup:
            self.started = time.perf_counter()
        else:
            self.elapsed = time.perf_counter() - self.started

    def __getattr__(self, name):  # every other callback event: do nothing
        if name.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(name)


if __name__ == "__main__":
    main()
