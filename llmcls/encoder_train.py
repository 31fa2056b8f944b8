"""The encoder's Trainer and what train-encoder and predict-encoder share: `EncoderTrainer` (the loss from
`losses.py`, batches grouped by length in a seeded order, the training options saved into each checkpoint),
`build_trainer`, the validation metrics of each evaluation (thresholds tuned first), the logits of a split
(`predict_scores`) and the predictions and metrics of a split written into a run directory (`write_split`).
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

from llmcls.config import number_list
from llmcls.encoder_args import EncoderArguments
from llmcls.encoder_attention import fused_kernels_on, use_fused_attention
from llmcls.encoder_data import EncodedSplit
from llmcls.encoder_infer import forward_logits, without_full_mask
from llmcls.encoder_model import is_mean_pooling
from llmcls.encoder_resume import OPTIONS_FILE
from llmcls.flops import CountedFlops
from llmcls.labels import LabelSpace
from llmcls.metrics import Thresholds, apply_thresholds, compute_metrics, tune_best_thresholds
from llmcls.progress import console
from llmcls.runs import Predictions, RunDir, atomic_write, split_summary
from llmcls.sampling import SeededLengthGrouping

EVAL_KEYS = ("micro_f1", "macro_f1", "samples_f1", "p_at_1", "lrap")  # logged after each epoch


def parse_min_labels(text: str) -> list[int]:
    return number_list(text, "min_labels", int, minimum=0)


# ---------------------------------------------------------------------------------------------- training
class EncoderTrainer(SeededLengthGrouping, CountedFlops, Trainer):
    """A `Trainer` whose loss comes from `losses.py` (the model never sees the labels), whose batches grouped by
    length come in an order set by the seed and the epoch (`llmcls.sampling`: a resumed run trains on the
    uninterrupted run's batches) and whose FLOPs log counts the parameters once (`llmcls.flops`)."""

    # Our losses are per-batch means: the Trainer must divide them by the gradient-accumulation steps itself.
    loss_is_scaled_for_ga = False

    def __init__(self, *args, loss_fn, options: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_fn = loss_fn
        self.options = options  # `training_options`, written into each checkpoint for `check_resume_options`

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        super()._save(output_dir, state_dict=state_dict)
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        # The Trainer saves only the weights of a model that is no PreTrainedModel (the mean-pooling head); its
        # config (labels, model type, pooling marker) lets `check_resume` compare a checkpoint with the run.
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        if self.args.should_save and is_mean_pooling(model):
            model.config.save_pretrained(output_dir)
        if self.args.should_save and self.options is not None:
            atomic_write(Path(output_dir) / OPTIONS_FILE, json.dumps(self.options, indent=2) + "\n")

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        targets = inputs.pop("labels")
        outputs = model(**inputs)
        loss = self.loss_fn(outputs.logits, targets)
        return (loss, outputs) if return_outputs else loss

    def _get_eval_sampler(self, eval_dataset):
        # transformers 5 applies group_by_length to evaluation too, which would shuffle predictions away from their
        # ids; evaluation splits are sorted by length beforehand instead, so a sequential order is both fast and safe.
        # Under DDP, None lets accelerate shard the dataset in order.
        import torch

        return torch.utils.data.SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None


def loss_function(args: EncoderArguments):
    from llmcls.losses import bce_loss, two_way_loss

    if args.loss == "twoway":
        return functools.partial(two_way_loss, tp=args.tp, tn=args.tn)
    return functools.partial(bce_loss, pos_weight=args.pos_weight)


class Collator(DataCollatorWithPadding):
    """Dynamic padding, and no attention mask in a batch that needs none (`encoder_infer.without_full_mask`)."""

    def __call__(self, features):
        return without_full_mask(super().__call__(features))


def make_collator(tokenizer) -> Collator:
    return Collator(tokenizer, pad_to_multiple_of=8)  # tensor cores like multiples of 8


def build_trainer(model, tokenizer, train_split: EncodedSplit | None, eval_split: EncodedSplit | None,
                  args: EncoderArguments, loss_fn=None, options: dict | None = None) -> EncoderTrainer:
    from transformers import EarlyStoppingCallback

    callbacks = []
    if args.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=args.early_stopping_patience))
    if eval_split is None:
        compute = None
    else:
        compute = functools.partial(epoch_metrics, min_labels=args.min_labels, per_label=args.per_label_thresholds)
    if args.torch_compile and args.fused_attention and fused_kernels_on(args.device):
        use_fused_attention(model, "flash")
    return EncoderTrainer(
        model=model, args=args, processing_class=tokenizer,
        data_collator=make_collator(tokenizer),
        train_dataset=train_split.dataset if train_split else None,
        eval_dataset=eval_split.dataset if eval_split else None,
        compute_metrics=compute, callbacks=callbacks, loss_fn=loss_fn or loss_function(args), options=options)


def epoch_metrics(eval_pred, min_labels: str, per_label: bool) -> dict[str, float]:
    """Validation metrics after each evaluation, with the thresholds tuned on the same predictions: the number
    that selects the best checkpoint is the micro-F1 the run will actually get from its thresholds."""
    scores = np.asarray(eval_pred.predictions, dtype=np.float32)
    gold = np.asarray(eval_pred.label_ids) > 0.5
    thresholds = tune_best_thresholds(gold, scores, min_labels=parse_min_labels(min_labels), per_label=per_label)
    metrics = compute_metrics(gold, apply_thresholds(scores, thresholds), scores)
    return {key: metrics[key] for key in EVAL_KEYS} | {"threshold": float(np.median(thresholds.values)),
                                                        "min_labels": thresholds.min_labels}


# ---------------------------------------------------------------------------------------------- prediction
@dataclass
class SplitScores:
    scores: np.ndarray  # (n, n_labels) logits, original row order
    wall_s: float


def predict_scores(trainer: EncoderTrainer, split: EncodedSplit) -> SplitScores:
    """Logits for every row of `split` (all processes take part under DDP), in the split's original order."""
    dataset = split.dataset.remove_columns("labels")  # no labels: a forward pass only, no loss
    started = time.perf_counter()
    if trainer.args.world_size > 1:  # the Trainer shards the rows over the processes and gathers them
        logits = trainer.predict(dataset).predictions
    else:
        logits = predict_one_process(trainer, dataset)
    wall = time.perf_counter() - started
    return SplitScores(split.restore_order(np.asarray(logits, dtype=np.float32)), wall)


def predict_one_process(trainer: EncoderTrainer, dataset) -> np.ndarray:
    """The fast loop of encoder_infer, with the Trainer's precision settings: bf16 autocast (`--bf16`) or, with
    `--bf16_full_eval`, the weights cast to bf16 in place (as the Trainer's own evaluation does).

    The model stays eager here even with `--torch_compile` (which compiles training): compiled prediction was not
    faster on an H200 (6,885 against 6,917 samples/s, BERT-base, batch 256, length 256) and a fifth slower on an H100
    (5,203 against 6,540), besides its compilation time and a recompilation for each new padded length."""
    import torch

    args = trainer.args
    # without accelerate's mixed-precision wrapper, which training leaves on forward (an autocast of its own, CPU
    # autocast with --use_cpu --bf16): the precision here is the one forward_logits is told, as in predict-encoder
    model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False, keep_torch_compile=False)
    if args.bf16_full_eval:
        model = model.to(dtype=torch.bfloat16)
    pad_id = trainer.processing_class.pad_token_id or 0
    # autocast over bf16 weights would only add casts (layer norms run in fp32 under autocast)
    return forward_logits(model, dataset, batch_size=args.per_device_eval_batch_size, pad_id=pad_id,
                          device=args.device, autocast_bf16=bool(args.bf16) and not args.bf16_full_eval)


# ---------------------------------------------------------------------------------------------- run directory
def device_name(args: TrainingArguments) -> str:
    import torch

    if args.device.type == "cuda":
        name = torch.cuda.get_device_name(args.device)
        return name if args.world_size <= 1 else f"{args.world_size} x {name}"
    return args.device.type if args.world_size <= 1 else f"{args.world_size} x {args.device.type}"


def write_split(run: RunDir, space: LabelSpace, split: str, primary: str, encoded: EncodedSplit,
                scored: SplitScores, thresholds: Thresholds, *, system: str, model: str, timing: dict,
                extra: dict, labelled: np.ndarray | None = None) -> dict | None:
    """Apply the thresholds, write predictions and metrics of one split. `labelled` (a row mask, predict-encoder)
    limits the metrics to the rows with gold labels; with none, no metrics are written."""
    predicted = apply_thresholds(scored.scores, thresholds)
    n = len(encoded.ids)
    if labelled is not None and not labelled.all():
        console.print(f"note: {split}: {int((~labelled).sum())} of {n} rows have no gold label in the label space: "
                      "predicted, not scored")
    timing = {"wall_s": round(scored.wall_s, 3), "examples_per_s": round(n / max(scored.wall_s, 1e-9), 1)} | timing
    metrics = run.write_split(Predictions(encoded.ids, encoded.gold, predicted, scored.scores, labelled=labelled),
                              space, split, primary, system=system, model=model, timing=timing, extra=extra)
    if metrics is None:
        console.print(f"{split}: {n} rows predicted (predictions.jsonl); no gold labels, so no metrics")
        return None
    console.print(split_summary(split, metrics, n if labelled is None else int(labelled.sum())))
    return metrics
