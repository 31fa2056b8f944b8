"""The encoder's data: every split tokenised once (`datasets.map`, cached by datasets across runs) into an
`EncodedSplit`, evaluation splits sorted longest first, with `--max_length` capped at what the model can read.
Shared by train-encoder and predict-encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmcls.corpus import Corpus, text_field_names
from llmcls.encoder_args import EncoderArguments
from llmcls.encoder_model import model_positions
from llmcls.labels import LabelSpace
from llmcls.progress import console


@dataclass
class EncodedSplit:
    """A tokenised split. Evaluation splits are sorted longest first (less padding per batch); `order[i]` is the
    original row of dataset row i, and `ids` / `gold` stay in the original order."""

    dataset: object  # datasets.Dataset: input_ids, attention_mask, [token_type_ids], labels (multi-hot int8)
    ids: list[str]
    gold: np.ndarray
    order: np.ndarray

    def restore_order(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty_like(rows)
        out[self.order] = rows
        return out


def encode_corpus(corpus: Corpus, tokenizer, args: EncoderArguments, config=None) -> dict[str, EncodedSplit]:
    """Tokenise every split; --max_length above the model's positions is lowered in `args` (so config.yaml records
    the length used, which predict-encoder tokenises with)."""
    max_length = effective_max_length(tokenizer, args.max_length, config)
    if max_length < args.max_length:
        console.print(f"note: --max_length {args.max_length} capped at the model's {max_length} positions")
        args.max_length = max_length
    return {name: encode_split(ds, tokenizer, corpus.label_space, args.text_fields, args.max_length,
                               sort=name != "train")
            for name, ds in corpus.splits.items() if ds is not None}


def effective_max_length(tokenizer, max_length: int, config=None) -> int:
    """--max_length, capped at the tokenizer's model_max_length when it states a real one (BERT: 512) and at the
    positions of the model's config (`model_positions`; SciBERT's tokenizer states no length): longer inputs would
    index past the position embeddings."""
    limits = [max_length]
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and limit < 100_000:  # tokenizers that state none say 1e30
        limits.append(limit)
    positions = model_positions(config) if config is not None else None
    if positions is not None:
        limits.append(positions)
    return min(limits)


def encode_split(ds, tokenizer, space: LabelSpace, text_fields: str, max_length: int, sort: bool) -> EncodedSplit:
    """Tokenise with one batched `datasets.map` (cached by datasets across runs); labels become multi-hot rows."""
    import pyarrow.compute as pc

    names = text_field_names(ds, text_fields)
    sep = f" {tokenizer.sep_token} " if tokenizer.sep_token else " "  # a real separator token between fields
    max_length = effective_max_length(tokenizer, max_length)

    def encode(batch):
        texts = [sep.join(part for part in parts if part) for parts in zip(*(batch[n] for n in names), strict=True)]
        encoded = tokenizer(texts, truncation=True, max_length=max_length)
        # int8 keeps the cache small (1 byte a label); the losses read targets by comparison (> 0, == 0, < 0)
        encoded["labels"] = space.to_multi_hot(batch["labels"]).astype(np.int8)
        return encoded

    gold = space.to_multi_hot(ds["labels"])
    ids = [str(i) for i in ds["id"]]
    tokenised = ds.map(encode, batched=True, remove_columns=ds.column_names, desc="Tokenising")
    order = np.arange(len(tokenised))
    if sort:
        lengths = pc.list_value_length(tokenised.data.column("input_ids")).to_numpy()
        order = np.argsort(-lengths, kind="stable")
        tokenised = tokenised.select(order)
    return EncodedSplit(tokenised, ids, gold, order)
