"""Training and inference throughput of `llmcls train-encoder`'s own code path, with model FLOP utilisation.

    python benchmarks/bench_encoder_throughput.py --peak-tflops 989        # H100 / H200 (SXM): BERT-base, length 256
    python benchmarks/bench_encoder_throughput.py --tiny                   # any CPU: a tiny BERT, to show it runs

The model is a randomly initialised BERT-base-shaped encoder (12 layers, hidden 768, 12 heads, 30,522-token vocab)
built from a config and saved to a folder, then loaded by `encoder_model.load_for_training` with a 54-label head:
speed does not depend on the weights. Inputs are random token ids, every row exactly `--length` tokens (256), so no
padding is computed and the FLOP count is exact. Training runs `encoder_train.build_trainer(...).train()` (the
command's Trainer subclass and Two-Way loss, bf16 autocast where the GPU has it, fused AdamW); inference runs
`encoder_train.predict_scores` (the command's prediction path), once under autocast and once with pure bf16 weights
(`--bf16_full_eval`) on GPUs. Timing starts after `--warmup` steps (CUDA synchronised).

Model FLOPs per sample (s tokens, L layers, d hidden, N weights of the matrix multiplies, i.e. every nn.Linear,
embeddings excluded): forward 2*N*s + 4*L*d*s^2 (the second term: attention scores and weighted values);
training = 3 x forward. MFU = (samples/s x FLOPs per sample) / (--peak-tflops x 1e12); 989 TFLOP/s is the dense
bf16 peak of an H100 / H200 SXM.

Anchors on one H200 (issue 3): a plain bf16-autocast training loop did 1,528 samples/s (33% of peak); pure-bf16
inference at batch 256 did 9,220 samples/s. Targets: >= 2,000 training and >= 8,000 inference samples/s.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import sys
import tempfile
import time
from pathlib import Path

from aapd_protocol import run_line  # noqa: E402

N_LABELS = 54  # AAPD's label count: the head's size barely matters


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="A tiny BERT and few steps (CPU smoke run).")
    parser.add_argument("--length", type=int, default=256, help="Tokens per row (all rows).")
    parser.add_argument("--train-batch", type=int, default=None, help="Training batch (default 64; tiny 8).")
    parser.add_argument("--eval-batch", type=int, default=None, help="Inference batch (default 256; tiny 16).")
    parser.add_argument("--steps", type=int, default=None, help="Timed training steps (default 60; tiny 4).")
    parser.add_argument("--warmup", type=int, default=None, help="Untimed first steps (default 10; tiny 1).")
    parser.add_argument("--eval-rows", type=int, default=None,
                        help="Rows predicted (default 32768: a few seconds, so starting the loader is amortised; "
                             "tiny 64).")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="Dense bf16 peak of the device.")
    parser.add_argument("--torch-compile", action="store_true", help="Pass --torch_compile to the Trainer.")
    parser.add_argument("--workers", type=int, default=None,
                        help="--dataloader_num_workers (default: the command's own, 4 with a GPU).")
    parser.add_argument("--profile", type=int, default=0,
                        help="Also profile this many training steps after the timed ones, and one prediction of "
                             "--eval-rows / 4 rows (GPU only; GPU-busy fraction and top operators).")
    parser.add_argument("--plain-loop", action="store_true",
                        help="Also train the same model with a plain PyTorch loop (same loss, fused AdamW, "
                             "clipping at 1.0, bf16 autocast where the Trainer uses it; batches already on the "
                             "device): the Trainer's own cost on this machine, against the issue's anchor.")
    parser.add_argument("--attention-dropout", type=float, default=None,
                        help="The model's attention dropout (BERT-base: 0.1). Compiled, BERT's attention with "
                             "dropout and a mask ran as unfused softmax kernels on an H200 (session 15); 0 says "
                             "what that path costs.")
    parser.add_argument("--attention", default="default",
                        help="Comma-separated attention kinds to train with, a fresh model each: default (what "
                             "train-encoder does: under --torch-compile on a GPU, encoder_attention's flash kind), "
                             "sdpa (transformers' own SDPA call: --fused_attention false) or one of "
                             "encoder_attention.KINDS (flash, cudnn, efficient: the fused kernel's op called by name; "
                             "unmasked: flash with no mask built for a batch that came without one; island: SDPA "
                             "left out of the compiled graph). Inference runs once, with the last.")
    parser.add_argument("--blocking-batches", action="store_true",
                        help="Copy each training batch to the GPU the blocking way (accelerate's non_blocking off), "
                             "as train-encoder did before session 15: what the non-blocking default is worth.")
    parser.add_argument("--sdpa-backends", default="",
                        help="Comma-separated SDPA kernels (flash, efficient, cudnn, math) to also time the last "
                             "inference row with, one at a time (torch.nn.attention.sdpa_kernel): which attention "
                             "kernel the encoder's prediction should ask for. Default: none.")
    parser.add_argument("--tokenizer", default=None,
                        help="A folder with a BERT tokenizer to save with the model (default: a WordPiece "
                             "tokenizer over a placeholder 30,522-entry vocabulary: inputs are random ids, so only "
                             "its special tokens matter).")
    args = parser.parse_args(argv)
    small = args.tiny
    defaults = {"train_batch": (64, 8), "eval_batch": (256, 16), "steps": (60, 4), "warmup": (10, 1),
                "eval_rows": (32768, 64)}
    for name, (full, tiny) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, tiny if small else full)
    return args


def model_config(tiny: bool):
    from transformers import BertConfig

    if tiny:
        return BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256)
    return BertConfig()  # BERT-base: 12 x 768, 12 heads, 3072 intermediate, 30,522 tokens, 512 positions


def placeholder_tokenizer(folder: Path, vocab_size: int):
    """A BERT WordPiece tokenizer with bert-base-uncased's special-token ids ([PAD] 0, [UNK] 100, [CLS] 101, [SEP]
    102, [MASK] 103) and placeholder entries elsewhere: the inputs are random ids, so nothing else is read, and no
    model package has to be on the machine."""
    from transformers import BertTokenizerFast

    special = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]"}
    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("".join(special.get(i, f"w{i}") + "\n" for i in range(vocab_size)))
    return BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)


def save_random_model(folder: Path, tiny: bool, tokenizer: str | None, attention_dropout: float | None = None,
                      config=None) -> Path:
    """A random BERT (`config`, else `model_config(tiny)`; seed 0) saved to `folder` with a tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertModel

    torch.manual_seed(0)
    config = config if config is not None else model_config(tiny)
    if attention_dropout is not None:
        config.attention_probs_dropout_prob = attention_dropout
    BertModel(config).save_pretrained(folder)
    loaded = (AutoTokenizer.from_pretrained(tokenizer) if tokenizer
              else placeholder_tokenizer(folder.parent / "vocab", config.vocab_size))
    loaded.save_pretrained(folder)
    return folder


def synthetic_split(rows: int, length: int, vocab_size: int, seed: int):
    """Token ids uniformly from the ordinary vocabulary, [CLS] ... [SEP] framing, about 2.4 labels a row."""
    import datasets
    import numpy as np

    from llmcls.encoder_data import EncodedSplit

    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, vocab_size, size=(rows, length), dtype=np.int64)
    ids[:, 0], ids[:, -1] = 101, 102
    gold = rng.random((rows, N_LABELS)) < 2.4 / N_LABELS
    ds = datasets.Dataset.from_dict({"input_ids": ids, "attention_mask": np.ones_like(ids),
                                     "labels": gold.astype(np.float32)})
    return EncodedSplit(ds, [str(i) for i in range(rows)], gold, np.arange(rows))


def step_timer(warmup: int, last: int):
    """A TrainerCallback that times steps warmup+1 .. last, with the GPU's queue drained at both ends."""
    import torch
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        start = end = None

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step in (warmup, last):
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                if state.global_step == warmup:
                    self.start = time.perf_counter()
                else:
                    self.end = time.perf_counter()

    return StepTimer()


def flops_per_sample(model, config, length: int) -> tuple[float, int]:
    """Forward FLOPs of one row (see the module docstring) and N, the weights of the matrix multiplies."""
    import torch

    n = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    attention = 4 * config.num_hidden_layers * config.hidden_size * length**2
    return 2 * n * length + attention, n


def training_args(out: Path, args, bf16_full_eval: bool = False):
    from llmcls.encoder_args import EncoderArguments

    return EncoderArguments(
        output_dir=str(out), model="random-bert", per_device_train_batch_size=args.train_batch,
        per_device_eval_batch_size=args.eval_batch, max_steps=args.warmup + args.steps + args.profile,
        learning_rate=2.0e-5, dataloader_num_workers=args.workers,
        warmup_steps=0, eval_strategy="no", save_strategy="no", load_best_model_at_end=False,
        logging_strategy="no", disable_tqdm=True, report_to="none", torch_compile=args.torch_compile,
        train_sampling_strategy="random", bf16_full_eval=bf16_full_eval, seed=0,
        accelerator_config={"non_blocking": False} if args.blocking_batches else None)


def measure(args, table: Table) -> None:
    """Train, then predict, through the command's code; each row goes to `table` as soon as it is measured."""
    import torch

    from llmcls.encoder_attention import use_fused_attention
    from llmcls.encoder_model import load_for_training, load_tokenizer
    from llmcls.encoder_train import build_trainer, predict_scores
    from llmcls.labels import LabelSpace

    with tempfile.TemporaryDirectory() as tmp:
        folder = save_random_model(Path(tmp) / "model", args.tiny, args.tokenizer, args.attention_dropout)
        space = LabelSpace([f"label{i}" for i in range(N_LABELS)])
        model, tokenizer = load_for_training(str(folder), space), load_tokenizer(str(folder))
        config = model.config
        forward, n_matmul = flops_per_sample(model, config, args.length)
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
        train = synthetic_split(args.train_batch * (args.warmup + args.steps + args.profile), args.length,
                                config.vocab_size, 1)
        evaluation = synthetic_split(args.eval_rows, args.length, config.vocab_size, 2)
        trainer_args = training_args(Path(tmp) / "trainer", args)
        table.header(config, device, trainer_args.dataloader_num_workers, forward, n_matmul)
        for i, kind in enumerate(args.attention.split(",")):
            if i:  # a fresh model for each kind, compiled afresh
                torch._dynamo.reset()
                model = load_for_training(str(folder), space)
            trainer_args.fused_attention = kind == "default"  # build_trainer's own choice, as train-encoder's
            if kind not in ("default", "sdpa") and not use_fused_attention(model, kind):
                table.notes.append(f"--attention {kind}: this model does not attend through transformers' SDPA")
            trainer = build_trainer(model, tokenizer, train, None, trainer_args)
            timer = step_timer(args.warmup, args.warmup + args.steps)
            trainer.add_callback(timer)
            if args.profile:
                from profiling import Profile, step_window

                last = args.warmup + args.steps
                trainer.add_callback(step_window(Profile(f"training ({kind}), {args.profile} steps"), last,
                                                 last + args.profile))
            # the Trainer prints its summary, which would land inside the table (a profile, though, belongs there)
            try:
                with contextlib.redirect_stdout(sys.stderr) if not args.profile else contextlib.nullcontext():
                    trainer.train()
            except Exception as error:  # noqa: BLE001 - a kernel that fails here is a result; the next kind runs
                table.notes.append(f"--attention {kind}: failed: {str(error).strip().splitlines()[0][:200]}")
                print(f"| train, attention {kind} | failed (see the notes) | | | | | |", flush=True)
                continue
            per_s = args.steps * args.train_batch / (timer.end - timer.start)
            name = "train" if kind == "default" else f"train, attention {kind}"
            table.row(name, trainer_args.bf16, args.train_batch, per_s, 3 * forward)
        if args.plain_loop:
            per_s = plain_loop(load_for_training(str(folder), space).to(model.device), train, args,
                               trainer_args.bf16)
            table.row("train, plain PyTorch loop", trainer_args.bf16, args.train_batch, per_s, 3 * forward)
        modes = [False, True] if torch.cuda.is_available() else [False]
        for pure_bf16 in modes:  # pure bf16 last: it casts the weights in place
            trainer.args.bf16_full_eval = pure_bf16
            warm = synthetic_split(args.eval_batch * 2, args.length, config.vocab_size, 3)
            predict_scores(trainer, warm)
            scored = predict_scores(trainer, evaluation)
            last = (f"inference{' (pure bf16)' if pure_bf16 else ''}", trainer_args.bf16 or pure_bf16,
                    args.eval_batch)
            table.row(*last, args.eval_rows / scored.wall_s, forward)
            if args.profile:
                from profiling import Profile

                part = synthetic_split(args.eval_rows // 4, args.length, config.vocab_size, 4)
                with Profile(f"inference{' (pure bf16)' if pure_bf16 else ''}, {args.eval_rows // 4} rows"):
                    predict_scores(trainer, part)
        for backend in filter(None, args.sdpa_backends.split(",")):  # the last row's settings, one kernel allowed
            from torch.nn.attention import SDPBackend, sdpa_kernel

            kernel = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                      "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}[backend]
            try:
                with sdpa_kernel(kernel):
                    predict_scores(trainer, warm)
                    scored = predict_scores(trainer, evaluation)
            except RuntimeError as error:  # the kernel does not take these inputs on this device
                table.notes.append(f"SDPA {backend}: not run ({str(error).splitlines()[0][:120]})")
                continue
            name, bf16, batch = last
            table.row(f"{name}, SDPA {backend} only", bf16, batch, args.eval_rows / scored.wall_s, forward)


def plain_loop(model, train, args, bf16: bool) -> float:
    """Samples/s of a plain training loop over the same rows: Two-Way loss, fused AdamW (lr 2e-5), clipping at 1.0,
    bf16 autocast when `bf16`; every batch on the device before the timed steps (no data loading)."""
    import torch

    from llmcls.losses import two_way_loss

    device = model.device
    data = train.dataset.with_format("torch")
    batches = [(data[i * args.train_batch:(i + 1) * args.train_batch]) for i in range(args.warmup + args.steps)]
    batches = [(b["input_ids"].to(device), b["attention_mask"].to(device), b["labels"].to(device)) for b in batches]
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, fused=device.type == "cuda")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    model.train()
    for i, (ids, mask, labels) in enumerate(batches):
        if i == args.warmup:
            sync()
            started = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(input_ids=ids, attention_mask=mask).logits
        two_way_loss(logits.float(), labels).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    sync()
    return args.steps * args.train_batch / (time.perf_counter() - started)


class Table:
    """The benchmark's output: a header once the model is built, then one row per measurement as it is made (a run
    cut short by a time limit keeps the rows it measured), then the notes."""

    def __init__(self, args):
        self.args, self.notes = args, []

    def header(self, config, device: str, workers: int, forward: float, n_matmul: int) -> None:
        import torch
        import transformers

        args = self.args
        print(run_line())
        print(f"# bench_encoder_throughput: {' '.join(sys.argv)}")
        print(f"# device: {device}; torch {torch.__version__}, transformers {transformers.__version__}, "
              f"Python {platform.python_version()}")
        print(f"# model: random BERT ({config.num_hidden_layers} layers, hidden {config.hidden_size}, "
              f"{config.num_attention_heads} heads, attention dropout {config.attention_probs_dropout_prob:g}), "
              f"{N_LABELS} labels; every row {args.length} tokens; "
              f"torch_compile={args.torch_compile}; dataloader workers {workers}; training: {args.warmup} "
              f"untimed + {args.steps} timed steps; inference: {args.eval_rows:,} rows")
        print(f"# FLOPs/sample: forward 2*N*s + 4*L*d*s^2 = {forward / 1e9:.2f} GFLOP (N = {n_matmul:,} "
              f"matmul weights), training 3x; peak {args.peak_tflops:g} TFLOP/s")
        print()
        print("| pass | precision | batch | samples/s | tokens/s | TFLOP/s | MFU |")
        print("|---|---|---:|---:|---:|---:|---:|", flush=True)

    def row(self, name: str, bf16: bool, batch: int, per_s: float, flops: float) -> None:
        tflops = per_s * flops / 1e12
        print(f"| {name} | {'bf16' if bf16 else 'fp32'} | {batch} | {per_s:,.1f} | {per_s * self.args.length:,.0f} | "
              f"{tflops:.3g} | {100 * tflops / self.args.peak_tflops:.2g}% |", flush=True)

    def close(self) -> None:
        for note in self.notes:
            print(note)
        print()
        print("targets (H100/H200, BERT-base, length 256): training >= 2,000 samples/s, inference >= 8,000 samples/s")
        if self.args.tiny:
            print("(--tiny: a smoke run of the benchmark itself; its numbers say nothing about the targets)")


def main(argv=None) -> None:
    args = parse_args(argv)
    table = Table(args)
    measure(args, table)
    table.close()


if __name__ == "__main__":
    main()
