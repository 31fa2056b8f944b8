"""Tiny random encoders for offline tests: a WordPiece tokenizer trained here on real abstracts, and BERT /
DeBERTa-v2 models built from configs, saved to folders so that the real `from_pretrained(path)` code runs."""

from __future__ import annotations

from pathlib import Path

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MAX_POSITIONS = 128


def train_tokenizer(texts: list[str], vocab_size: int = 600):
    """A lower-casing WordPiece tokenizer with BERT's special tokens and [CLS] ... [SEP] framing.

    The vocabulary is built here rather than by `tokenizers.trainers.WordPieceTrainer`, which breaks ties
    differently in every process: the tiny models (and so the tests' training outcomes) then varied from run to
    run. Here it is the special tokens, every character seen (alone and as a "##" continuation), then the most
    frequent words, ties in spelling order: the same vocabulary every time.
    """
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts = Counter(word for text in texts
                     for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    chars = sorted({char for word in counts for char in word})
    vocab = [*SPECIAL_TOKENS, *chars, *(f"##{char}" for char in chars)]
    known = set(vocab)
    words = [word for word, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0])) if word not in known]
    vocab += words[: max(0, vocab_size - len(vocab))]
    tokenizer = Tokenizer(models.WordPiece(vocab={token: i for i, token in enumerate(vocab)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.WordPiece()
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                   model_max_length=MAX_POSITIONS)


def _sizes(vocab_size: int) -> dict:
    return {"vocab_size": vocab_size, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 64, "max_position_embeddings": MAX_POSITIONS}


def save_tiny_bert(tokenizer, path: Path) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    BertModel(BertConfig(**_sizes(len(tokenizer)))).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_tiny_deberta(tokenizer, path: Path) -> Path:
    """DeBERTa-v2 shaped like v3: relative attention with position buckets, no absolute positions, no segments."""
    import torch
    from transformers import DebertaV2Config, DebertaV2Model

    torch.manual_seed(0)
    config = DebertaV2Config(**_sizes(len(tokenizer)), relative_attention=True, position_buckets=32,
                             pos_att_type=["p2c", "c2p"], position_biased_input=False, type_vocab_size=0)
    DebertaV2Model(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
