"""Host time of one training step of `llmcls train-encoder`'s Trainer against a plain PyTorch loop (a CPU benchmark).

    python benchmarks/bench_encoder_host.py                 # 12-layer BERT of width 32, batch 2 x 16 tokens
    python benchmarks/bench_encoder_host.py --profile       # also where the Trainer's own time goes (cProfile)

The model is so narrow and the batch so small that a step's arithmetic is negligible: its time is Python, operator
dispatch and bookkeeping, the host work a launch-bound GPU waits through. Both loops train the same randomly
initialised model (`encoder_model.load_for_training`, 54 labels) on the same synthetic batches with the Two-Way loss,
fused AdamW and gradient clipping at 1.0; the Trainer path is `encoder_train.build_trainer(...).train()` as
`bench_encoder_throughput.py` drives it (no logging, evaluation or saving). One thread (`torch.set_num_threads(1)`).
`--profile` adds the per-step cumulative time of the Trainer's bookkeeping calls (parameter count for the FLOPs log,
`model.train()`, `zero_grad`, gradient clipping) from a cProfile run of the Trainer path.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from pathlib import Path

import bench_encoder_throughput as throughput
from aapd_protocol import run_line  # noqa: E402

# the Trainer's per-step bookkeeping, as cProfile names it: (file suffix, function) -> label
BOOKKEEPING = {("modeling_utils.py", "num_parameters"): "parameter count (FLOPs log)",
               ("module.py", "train"): "model.train()", ("module.py", "zero_grad"): "zero_grad",
               ("accelerator.py", "clip_grad_norm_"): "gradient clipping"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--width", type=int, default=32, help="Hidden size (2 heads, intermediate 2x).")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--length", type=int, default=16)
    parser.add_argument("--steps", type=int, default=150, help="Timed steps.")
    parser.add_argument("--warmup", type=int, default=20, help="Untimed first steps.")
    parser.add_argument("--profile", action="store_true", help="Also profile the Trainer path (cProfile).")
    args = parser.parse_args()

    import torch
    from transformers import BertConfig

    from llmcls.encoder_model import load_for_training, load_tokenizer
    from llmcls.encoder_train import build_trainer
    from llmcls.labels import LabelSpace
    from llmcls.losses import two_way_loss

    torch.set_num_threads(1)
    throughput.model_config = lambda tiny: BertConfig(hidden_size=args.width, num_hidden_layers=args.layers,
                                                      num_attention_heads=2, intermediate_size=2 * args.width)
    options = throughput.parse_args(["--tiny", "--train-batch", str(args.batch), "--length", str(args.length),
                                     "--steps", str(args.steps), "--warmup", str(args.warmup), "--workers", "0"])
    space = LabelSpace([f"label{i}" for i in range(throughput.N_LABELS)])
    print(run_line())
    print(f"# bench_encoder_host: random BERT ({args.layers} layers, width {args.width}), batch {args.batch} x "
          f"{args.length} tokens, {args.steps} timed steps after {args.warmup}, one CPU thread, torch "
          f"{torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = throughput.save_random_model(Path(tmp) / "model", True, None)
        rows = args.batch * (args.warmup + args.steps)
        train = throughput.synthetic_split(rows, args.length, 30522, 1)

        def trainer_path(profiler=None) -> float:
            trainer = build_trainer(load_for_training(str(folder), space), load_tokenizer(str(folder)), train, None,
                                    throughput.training_args(Path(tmp) / "trainer", options))
            timer = throughput.step_timer(args.warmup, args.warmup + args.steps)
            trainer.add_callback(timer)
            with contextlib.redirect_stdout(io.StringIO()), profiler or contextlib.nullcontext():
                trainer.train()
            return (timer.end - timer.start) / args.steps

        def plain_loop() -> float:
            model = load_for_training(str(folder), space)
            optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, fused=True)
            data = train.dataset.with_format("torch")
            model.train()
            for i in range(args.warmup + args.steps):
                if i == args.warmup:
                    started = time.perf_counter()
                batch = data[i * args.batch:(i + 1) * args.batch]
                two_way_loss(model(input_ids=batch["input_ids"]).logits, batch["labels"]).backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            return (time.perf_counter() - started) / args.steps

        print()
        print("| loop | ms/step |")
        print("|---|---:|")
        print(f"| train-encoder's Trainer (`EncoderTrainer`) | {1000 * trainer_path():.1f} |", flush=True)
        print(f"| plain PyTorch loop | {1000 * plain_loop():.1f} |", flush=True)
        if args.profile:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            trainer_path(profiler)
            stats = pstats.Stats(profiler).stats  # (file, line, function) -> (calls, ..., total, cumulative, ...)
            steps = args.warmup + args.steps
            print(f"\nThe Trainer's bookkeeping (cProfile, cumulative ms a step over all {steps} steps):\n")
            print("| call | ms/step |")
            print("|---|---:|")
            for (suffix, function), label in BOOKKEEPING.items():
                cumulative = sum(value[3] for (file, _, name), value in stats.items()
                                 if name == function and file.endswith(suffix))
                print(f"| {label} | {1000 * cumulative / steps:.2f} |")


if __name__ == "__main__":
    main()
