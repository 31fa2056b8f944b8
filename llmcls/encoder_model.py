"""Encoder models for `train-encoder` / `predict-encoder`: load, pool, save, load back.

Two ways to turn token states into label logits (`--pooling`):

- `model` (default): `AutoModelForSequenceClassification` with `problem_type="multi_label_classification"`, i.e.
  each architecture's own head (BERT's tanh pooler over [CLS], DeBERTa's ContextPooler, ModernBERT's head).
- `mean`: `AutoModel` + :class:`MeanPoolingClassifier`, the mean of the last hidden states over the real tokens,
  dropout and one linear layer. Sentence-transformers checkpoints (e.g. all-MiniLM-L6-v2) are trained for mean
  pooling and their [CLS] pooler is untrained for the task, so mean pooling is the natural head for them.

A trained model is saved as a Hugging Face folder (`RUN_DIR/model`): `config.json` (with `id2label`, and
`llmcls_pooling: mean` for the mean-pooling head), the weights and the tokenizer files. `load_trained` reads both
kinds back.
"""

from __future__ import annotations

from pathlib import Path

import torch

from llmcls.errors import LlmclsError
from llmcls.labels import LabelSpace
from llmcls.model_paths import check_model_path, model_errors

POOLING_KEY = "llmcls_pooling"  # config.json key that marks a saved MeanPoolingClassifier
WEIGHTS_FILE = "model.safetensors"
# Model types whose position ids start at padding_idx + 1 (fairseq's `make_positions`, transformers'
# `create_position_ids_from_input_ids`): the first padding_idx + 1 rows of their position embeddings never serve a
# token, so roberta-base's 514 positions take 512 tokens.
OFFSET_POSITION_TYPES = frozenset({"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text",
                                   "roberta-prelayernorm", "ibert", "longformer", "luke", "xmod", "mpnet"})
# config fields that fix the encoder's weight shapes: checkpoints that differ in one cannot be resumed
SHAPE_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")


class MeanPoolingClassifier(torch.nn.Module):
    """Mean of the encoder's last hidden states over real (attention mask 1) tokens -> dropout -> linear."""

    def __init__(self, encoder, num_labels: int):
        super().__init__()
        if getattr(encoder, "pooler", None) is not None:
            encoder.pooler = None  # BERT/RoBERTa's [CLS] pooler is unused here: DDP would fail on its missing grads
        self.encoder = encoder
        self.config = encoder.config  # the Trainer reads model.config; it also carries id2label and the marker
        dropout = getattr(self.config, "classifier_dropout", None)
        if dropout is None:
            dropout = getattr(self.config, "hidden_dropout_prob", 0.1)
        self.dropout = torch.nn.Dropout(dropout)
        self.classifier = torch.nn.Linear(self.config.hidden_size, num_labels)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None):
        from transformers.modeling_outputs import SequenceClassifierOutput

        # token_type_ids only when the tokenizer produced them: DeBERTa-v3 and ModernBERT do not take them
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        if attention_mask is None:
            pooled = hidden.mean(dim=1)
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        # `labels` is accepted because the Trainer finds the label column by the forward signature; the loss is
        # computed by the Trainer from losses.py, never here.
        return SequenceClassifierOutput(logits=self.classifier(self.dropout(pooled)))

    def activation_checkpointing_enable(self, **kwargs):
        """What the Trainer calls for --gradient_checkpointing on a model that is not a PreTrainedModel."""
        self.encoder.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs=kwargs.get("activation_checkpointing_kwargs"))


def _load(loader, name: str, **kwargs):
    """`loader.from_pretrained(name)`; a path that holds no model, or a model that cannot be found, is a one-line
    error, not a traceback."""
    check_model_path(name)
    with model_errors(name):
        return loader.from_pretrained(name, **kwargs)


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    return _load(AutoTokenizer, name)


def load_config(name: str):
    """The model's `config.json` only (no weights): its type, sizes and positions."""
    from transformers import AutoConfig

    return _load(AutoConfig, name)


def model_positions(config) -> int | None:
    """How many tokens the model takes: max_position_embeddings, less the padding offset of RoBERTa-style models
    (positions padding_idx + 1 ..., see `OFFSET_POSITION_TYPES`); None when the config states no number."""
    positions = getattr(config, "max_position_embeddings", None)
    if not isinstance(positions, int) or isinstance(positions, bool) or positions <= 0:
        return None
    if getattr(config, "model_type", None) in OFFSET_POSITION_TYPES:
        padding_idx = getattr(config, "pad_token_id", None)
        positions -= (padding_idx if isinstance(padding_idx, int) else 1) + 1  # RoBERTa's padding_idx is 1
    return positions


def config_mismatch(saved, space: LabelSpace, config, pooling: str) -> str | None:
    """Why weights saved with config `saved` (a checkpoint's) do not fit the model that `load_for_training` makes
    from `config` with a head over `space` and `pooling`; None when they fit. The model type and the pooling fix the
    architecture (`AutoModelForSequenceClassification` has one class a type); `SHAPE_KEYS` its sizes."""
    saved_type, model_type = getattr(saved, "model_type", None), getattr(config, "model_type", None)
    if saved_type != model_type:
        return f"holds a {saved_type} model, and this run's --model is a {model_type} model"
    saved_pooling = getattr(saved, POOLING_KEY, None) or "model"
    if saved_pooling != pooling:
        return f"was trained with --pooling {saved_pooling}, this run has --pooling {pooling}"
    for key in SHAPE_KEYS:
        before, now = getattr(saved, key, None), getattr(config, key, None)
        if before != now:
            return f"holds a model with {key} {before}, and this run's --model has {now}"
    id2label = getattr(saved, "id2label", None) or {}
    labels = [str(id2label[i]) for i in sorted(id2label, key=int)]
    if labels != list(space.labels):
        if len(labels) != len(space):
            detail = f"{len(labels)} labels, this run has {len(space)}"
        else:  # as many labels: no shape error, but the columns would mean other labels
            i = next(i for i, (a, b) in enumerate(zip(labels, space.labels, strict=True)) if a != b)
            detail = f"label {i} is {labels[i]} there, {space.labels[i]} in this run"
        return f"was trained for another label space ({detail})"
    return None


def load_for_training(name: str, space: LabelSpace, pooling: str = "model"):
    """A pretrained encoder with a fresh multi-label head over `space`, in float32 (the optimizer's precision;
    bf16 enters through autocast, not through the weights)."""
    from transformers import AutoModel, AutoModelForSequenceClassification

    id2label = dict(enumerate(space.labels))
    label2id = {label: i for i, label in id2label.items()}
    if pooling == "model":
        return _load(AutoModelForSequenceClassification, name, num_labels=len(space), id2label=id2label,
                     label2id=label2id, problem_type="multi_label_classification", dtype=torch.float32)
    if pooling != "mean":
        raise LlmclsError(f"unknown pooling {pooling!r} (use model or mean)")
    encoder = _load(AutoModel, name, dtype=torch.float32)
    encoder.config.id2label, encoder.config.label2id = id2label, label2id
    encoder.config.problem_type = "multi_label_classification"
    setattr(encoder.config, POOLING_KEY, "mean")
    return MeanPoolingClassifier(encoder, len(space))


def is_mean_pooling(model) -> bool:
    return getattr(getattr(model, "config", None), POOLING_KEY, None) == "mean"


def save_trained(model, tokenizer, path: str | Path) -> Path:
    """Write the model and its tokenizer as a folder that `load_trained` (and, for `--pooling model`, plain
    `AutoModelForSequenceClassification.from_pretrained`) reads back."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if is_mean_pooling(model):
        from safetensors.torch import save_file

        model.config.save_pretrained(path)
        state = {key: value.detach().contiguous().cpu() for key, value in model.state_dict().items()}
        save_file(state, str(path / WEIGHTS_FILE), metadata={"format": "pt"})
    else:
        model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def load_trained(path: str | Path):
    """A model saved by `save_trained`, in float32, and its tokenizer."""
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

    path = Path(path)
    if not (path / "config.json").exists():
        raise LlmclsError(f"{path}: no trained model here (config.json is missing)")
    config = _load(AutoConfig, str(path))
    if getattr(config, POOLING_KEY, None) == "mean":
        from safetensors.torch import load_file

        model = MeanPoolingClassifier(AutoModel.from_config(config, dtype=torch.float32), config.num_labels)
        model.load_state_dict(load_file(str(path / WEIGHTS_FILE)))
    else:
        model = _load(AutoModelForSequenceClassification, str(path), dtype=torch.float32)
    return model, load_tokenizer(str(path))


def count_trainable(model) -> int:
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))
