"""Which attention kernel BERT-base's training step gets, eager and under torch.compile, and what each costs.

    python benchmarks/bench_attention_kernels.py            # a CUDA GPU: BERT-base's attention, batch 128, length 256
    python benchmarks/bench_attention_kernels.py --tiny     # any CPU: small shapes, to show it runs

Why: compiled, `train-encoder`'s BERT step spent about 30% of its kernel time in attention computed unfused
(`bmm`, then a softmax + dropout kernel: SDPA's math path) on an H200 (session 15), while the eager step ran cuDNN's
fused attention. This times one attention forward + backward of BERT-base's shapes (q, k, v laid out as BERT makes
them: a (batch, length, 768) projection viewed as heads and transposed) for each combination of

- the mask: none (train-encoder's collator drops a mask that hides nothing), a boolean (batch, 1, length, length)
  mask as transformers builds it for a padded batch (the last quarter of every other row's keys hidden);
- attention dropout: 0 and 0.1 (BERT's);
- how SDPA is called: `F.scaled_dot_product_attention` eager, the same under `torch.compile`, and under
  torch.compile each fused kernel's own op called directly (`aten._scaled_dot_product_{flash,efficient,cudnn}_
  attention`, with autograd formulas of their own), which leaves the choice of kernel to the caller;

and names the kernels the profiler saw (`torch._fused_sdp_choice` for the eager call). Each row: the median of
`--repeats` timed forward + backward passes after `--warmup`, CUDA synchronised around each; without dropout, also the
largest difference of its output from SDPA's in float32 on the same inputs (every bf16 kernel differs somewhat; the
eager SDPA row says by how much a kernel PyTorch picks itself does).

`--from-trainer` first prints what train-encoder's own Trainer hands BERT's attention, eager and compiled (session 16:
compiled with torch 2.11, a mask hiding nothing for batches that came without one); `--agreement` first compares the
whole encoder's last hidden states compiled with each kind of `llmcls/encoder_attention.py` against eager SDPA's,
with padding and without; `--no-kernels` then skips the table.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
import warnings

from aapd_protocol import run_line  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="Small shapes on any device (smoke run).")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--no-kernels", action="store_true",
                        help="Skip the table of kernels (with --from-trainer or --agreement).")
    parser.add_argument("--agreement", action="store_true",
                        help="First compare the encoder's last hidden states with each attention kind compiled "
                             "against transformers' SDPA call eager, with padding and without (model_agreement).")
    parser.add_argument("--from-trainer", action="store_true",
                        help="First report what train-encoder's own Trainer hands the attention function of a "
                             "random BERT (these shapes, bf16 autocast on a GPU, 3 steps of synthetic rows that "
                             "need no padding), eager and under --torch_compile: mask, dtypes, strides, dropout.")
    args = parser.parse_args(argv)
    if args.tiny:
        args.batch, args.length, args.heads, args.head_dim, args.warmup, args.repeats = 2, 16, 2, 8, 1, 2
    return args


def inputs(args, device, dtype, masked: bool):
    """q, k, v as BERT lays them out (views of a (batch, length, hidden) projection, heads transposed), requiring
    grad, and the mask."""
    import torch

    g = torch.Generator(device="cpu").manual_seed(0)
    shape = (args.batch, args.length, args.heads, args.head_dim)
    qkv = [torch.randn(shape, generator=g).to(device, dtype).requires_grad_() for _ in range(3)]
    mask = None
    if masked:
        mask = torch.ones(args.batch, 1, args.length, args.length, dtype=torch.bool)
        mask[::2, :, :, args.length * 3 // 4:] = False
        mask = mask.to(device)
    return qkv, mask


def attend(kind: str, dropout: float):
    """A function (q, k, v, mask) -> output (batch, heads, length, head dim) that calls SDPA the way `kind` says."""
    import torch
    import torch.nn.functional as F

    aten = torch.ops.aten

    def sdpa(q, k, v, mask):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)

    def bias_of(q, mask):  # an additive bias in q's dtype, which the efficient and cuDNN kernels take
        if mask is None:
            return None
        return torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(~mask, float("-inf"))

    def flash(q, k, v, mask):
        if mask is not None:
            raise RuntimeError("flash attention takes no mask")
        return aten._scaled_dot_product_flash_attention(q, k, v, dropout)[0]

    def efficient(q, k, v, mask):
        bias = bias_of(q, mask)
        if bias is not None:
            bias = bias.expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
        return aten._scaled_dot_product_efficient_attention(q, k, v, bias, True, dropout)[0]

    def cudnn(q, k, v, mask):
        bias = bias_of(q, mask)
        if bias is not None:
            bias = bias.expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
        return aten._scaled_dot_product_cudnn_attention(q, k, v, bias, True, dropout)[0]

    return {"sdpa": sdpa, "flash": flash, "efficient": efficient, "cudnn": cudnn}[kind]


def step(fn, qkv, mask):
    q, k, v = (t.transpose(1, 2) for t in qkv)  # (batch, heads, length, head dim) views, as BERT's
    out = fn(q, k, v, mask)
    out.float().square().mean().backward()


def kernels_seen(fn, qkv, mask) -> str:
    """The attention-related kernels one step ran (profiler names, shortened), most time first."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        step(fn, qkv, mask)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    keys = ("attention", "fmha", "flash", "softmax", "bmm", "cudnn", "dropout")
    names = []
    for event in sorted(prof.key_averages(), key=lambda e: -getattr(e, "device_time_total", 0.0)):
        name = event.key.removeprefix("aten::")[:60]
        if any(k in name.lower() for k in keys) and "::" not in name and name not in names:
            names.append(name)
    return ", ".join(names[:4]) or "-"


def output_error(fn, qkv, mask) -> float:
    """The largest difference of `fn`'s output (dropout 0) from SDPA's in float32 on the same inputs: whether a kernel
    called by name, with the mask as a bias of -inf entries, computes what SDPA does."""
    import torch
    import torch.nn.functional as F

    q, k, v = (t.detach().transpose(1, 2) for t in qkv)
    with torch.no_grad():
        reference = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask)
        return float((fn(q, k, v, mask).float() - reference).abs().max())


def timed(fn, qkv, mask, warmup: int, repeats: int) -> float:
    import torch

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        step(fn, qkv, mask)
    sync()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step(fn, qkv, mask)
        sync()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def chosen_backend(qkv, mask, dropout: float) -> str:
    import torch
    from torch.nn.attention import SDPBackend

    q, k, v = (t.transpose(1, 2) for t in qkv)
    return SDPBackend(torch._fused_sdp_choice(q, k, v, mask, dropout)).name.lower()


def random_bert(args, root):
    """A random BERT of these shapes (12 layers; 2 with --tiny) saved with a placeholder tokenizer under `root`, as
    bench_encoder_throughput saves its own."""
    import bench_encoder_throughput as encoder_bench
    from transformers import BertConfig

    config = BertConfig(num_attention_heads=args.heads, hidden_size=args.heads * args.head_dim,
                        intermediate_size=4 * args.heads * args.head_dim, num_hidden_layers=2 if args.tiny else 12)
    return encoder_bench.save_random_model(root / "model", args.tiny, None, config=config), config


def model_agreement(args) -> list[str]:
    """The largest difference of the last hidden states of train-encoder's BERT (random weights, the encoder under
    its classification head, eval mode, bf16 autocast on a GPU, up to 16 rows) compiled with each attention kind from
    transformers' SDPA call eager, on a batch with padding (every other row's last quarter) and on one without a
    mask: whether the kernels called by name, the mask as a bias, compute in the whole model what SDPA does.
    Compiled SDPA's own difference is the yardstick (bf16 rounding)."""
    import tempfile
    from pathlib import Path

    import bench_encoder_throughput as encoder_bench
    import torch

    from llmcls.encoder_attention import use_fused_attention
    from llmcls.encoder_model import load_for_training
    from llmcls.labels import LabelSpace

    device = "cuda" if torch.cuda.is_available() else "cpu"
    space = LabelSpace([f"label{i}" for i in range(encoder_bench.N_LABELS)])
    with tempfile.TemporaryDirectory() as tmp:
        folder, config = random_bert(args, Path(tmp))
        g = torch.Generator().manual_seed(1)
        ids = torch.randint(1000, config.vocab_size, (min(args.batch, 16), args.length), generator=g).to(device)
        mask = torch.ones_like(ids)
        mask[::2, args.length * 3 // 4:] = 0

        def logits(model):  # the encoder's last hidden states: more telling than a random head's small logits
            with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
                return (model(input_ids=ids, attention_mask=mask).last_hidden_state.float(),
                        model(input_ids=ids).last_hidden_state.float())

        def load():  # the encoder under the classification head, as train-encoder loads it
            return load_for_training(str(folder), space).base_model.to(device).eval()

        reference = logits(load())
        lines = []
        for kind in ("sdpa", "flash", "unmasked", "cudnn", "efficient"):
            torch._dynamo.reset()
            model = load()
            if kind != "sdpa":
                use_fused_attention(model, kind)
            try:
                padded, full = logits(torch.compile(model))
            except Exception as error:  # noqa: BLE001 - a kernel that refuses these inputs is a result here
                lines.append(f"{kind}, compiled: not run: {str(error).strip().splitlines()[0][:140]}")
                continue
            lines.append(f"{kind}, compiled: largest difference of the last hidden states from eager SDPA's: "
                         f"padded batch {float((padded - reference[0]).abs().max()):.3g}, unpadded "
                         f"{float((full - reference[1]).abs().max()):.3g} (values up to "
                         f"{float(reference[0].abs().max()):.3g})")
    return lines


def trainer_inputs(args, compiled: bool) -> list[str]:
    """What the attention function of train-encoder's BERT receives: the first call of each distinct kind, as text
    (under torch.compile the tensors are the tracer's, so only their metadata)."""
    import tempfile
    from pathlib import Path

    import bench_encoder_throughput as encoder_bench
    import torch
    from torch.nn.attention import SDPBackend
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    from llmcls.encoder_model import load_for_training, load_tokenizer
    from llmcls.encoder_train import build_trainer
    from llmcls.labels import LabelSpace

    seen: list[str] = []

    def describe(t):
        return "None" if t is None else f"{str(t.dtype).removeprefix('torch.')} {tuple(t.shape)} stride {t.stride()}"

    def recording(module, query, key, value, attention_mask, **kwargs):
        line = (f"q {describe(query)}; mask {describe(attention_mask)}; dropout {kwargs.get('dropout')}; "
                f"training {module.training}")
        if query.is_cuda and not torch.compiler.is_compiling():
            choice = torch._fused_sdp_choice(query, key, value, attention_mask, kwargs.get("dropout", 0.0))
            line += f"; SDPA's choice here: {SDPBackend(choice).name.lower()}"
        if line not in seen:
            seen.append(line)
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register("bench_recording", recording)
    AttentionMaskInterface.register("bench_recording", sdpa_mask)
    bench_args = encoder_bench.parse_args(["--train-batch", str(args.batch), "--length", str(args.length),
                                           "--steps", "2", "--warmup", "1"] + (["--torch-compile"] if compiled
                                                                              else []))
    with tempfile.TemporaryDirectory() as tmp:
        folder, config = random_bert(args, Path(tmp))
        space = LabelSpace([f"label{i}" for i in range(encoder_bench.N_LABELS)])
        model, tokenizer = load_for_training(str(folder), space), load_tokenizer(str(folder))
        model.set_attn_implementation("bench_recording")
        train = encoder_bench.synthetic_split(args.batch * 3, args.length, config.vocab_size, 1)
        trainer = build_trainer(model, tokenizer, train, None,
                                encoder_bench.training_args(Path(tmp) / "trainer", bench_args))
        batch = next(iter(trainer.get_train_dataloader()))
        seen.append(f"batch from the Trainer's loader: {', '.join(sorted(batch))}")
        with contextlib.redirect_stdout(sys.stderr):
            trainer.train()
    return seen


def main(argv=None) -> None:
    import torch

    args = parse_args(argv)
    cuda = torch.cuda.is_available()
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    print(run_line())
    print(f"# bench_attention_kernels: {' '.join(sys.argv)}")
    print(f"# device: {torch.cuda.get_device_name() if cuda else 'CPU'}; torch {torch.__version__}; {dtype}; "
          f"batch {args.batch}, {args.heads} heads x {args.head_dim}, length {args.length}; one forward + backward "
          f"(median of {args.repeats} after {args.warmup} warm-up)")
    print()
    if args.from_trainer:
        for compiled in (False, True):
            torch._dynamo.reset()
            for line in trainer_inputs(args, compiled):
                print(f"- train-encoder's Trainer, {'compiled' if compiled else 'eager'}: {line}", flush=True)
        print()
    if args.agreement:
        for line in model_agreement(args):
            print(f"- {line}", flush=True)
        print()
    if args.no_kernels:
        return
    print("| call | mask | dropout | ms / step | max error (dropout 0) | kernels (profiler, most time first) |")
    print("|---|---|---:|---:|---:|---|", flush=True)
    for masked in (False, True):
        for dropout in (0.0, 0.1):
            qkv, mask = inputs(args, device, dtype, masked)
            mask_name = "bool, padded" if masked else "none"
            rows = [("sdpa eager", attend("sdpa", dropout))]
            rows += [(f"{kind}, compiled", torch.compile(attend(kind, dropout), dynamic=False))
                     for kind in ("sdpa", "flash", "efficient", "cudnn")]
            for name, fn in rows:
                torch._dynamo.reset()
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        ms = timed(fn, qkv, mask, args.warmup, args.repeats)
                        seen = kernels_seen(fn, qkv, mask)
                except Exception as error:  # noqa: BLE001 - a kernel that refuses these inputs is a result here
                    print(f"| {name} | {mask_name} | {dropout:g} | - | - | not run: "
                          f"{str(error).strip().splitlines()[0][:140]} |", flush=True)
                    continue
                if name == "sdpa eager" and cuda:
                    seen = f"choice: {chosen_backend(qkv, mask, dropout)}; {seen}"
                error = f"{output_error(fn, qkv, mask):.2g}" if dropout == 0 else "-"
                print(f"| {name} | {mask_name} | {dropout:g} | {ms:.3f} | {error} | {seen} |", flush=True)
    if args.tiny:
        print("\n(--tiny: a smoke run of the benchmark itself; its numbers say nothing)")


if __name__ == "__main__":
    main()
