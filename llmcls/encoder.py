"""`llmcls train-encoder`: fine-tune an encoder (BERT, SciBERT, RoBERTa, DeBERTa-v3, ModernBERT) for multi-label
classification with the Two-Way loss (or BCE); thresholds tuned on validation; writes a run directory.

    llmcls train-encoder --model allenai/scibert_scivocab_uncased --loss twoway \\
        --train train.jsonl --validation val.jsonl --test test.jsonl --output_dir runs/scibert-twoway
    llmcls train-encoder --config configs/encoder_scibert.yaml --train ... --validation ... --test ...  # a recipe
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml --num_processes 8 -m llmcls.encoder \\
        --config configs/encoder_scibert.yaml --train ... --validation ... --test ...  # DDP over 8 GPUs

Steps: read the splits and the label space (`corpus.py`) -> tokenise once (`encoder_data.py`: `datasets.map`,
cached; dynamic padding per batch) -> `AutoModelForSequenceClassification` (or the mean-pooling head,
`encoder_model.py`) -> `Trainer` whose `compute_loss` calls `losses.py` -> after each epoch, tune the threshold(s)
on validation and score micro-F1; the best epoch's weights are kept -> tune the final thresholds on validation,
apply them to test -> `RUN_DIR/{config.yaml, labels.json, thresholds.json, predictions*.jsonl, metrics*.json, model/}`.

Scores in predictions.jsonl and thresholds are raw logits. The Two-Way loss is unchanged when a constant is added to
every logit, so 0 is no natural cut for it: the thresholds tuned on validation are what turn scores into labels.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, set_seed

from llmcls.config import (
    SAMPLER_HELP,
    DataArguments,
    bf16_gpu,
    build_parser,
    check_distributed,
    command_line,
    number_list,
    parse,
)
from llmcls.corpus import Corpus, load_corpus
from llmcls.encoder_data import EncodedSplit, effective_max_length, encode_corpus
from llmcls.encoder_infer import forward_logits, without_full_mask
from llmcls.encoder_model import (
    count_trainable,
    is_mean_pooling,
    load_config,
    load_for_training,
    load_tokenizer,
    save_trained,
)
from llmcls.encoder_resume import (
    OPTIONS_FILE,
    check_resume,
    check_resume_options,
    resume_checkpoint,
    resume_option,
    training_options,
)
from llmcls.errors import LlmclsError
from llmcls.labels import LabelSpace
from llmcls.metrics import Thresholds, apply_thresholds, compute_metrics, tune_best_thresholds
from llmcls.progress import console
from llmcls.runs import (
    Predictions,
    RunDir,
    check_checkpoint,
    checkpoint_step,
    primary_split,
    split_summary,
)
from llmcls.sampling import SeededLengthGrouping

SYSTEM = "encoder"
TWO_WAY_TP, TWO_WAY_TN = 4.0, 1.0  # the paper's temperatures
EVAL_KEYS = ("micro_f1", "macro_f1", "samples_f1", "p_at_1", "lrap")  # logged after each epoch


@dataclass
class EncoderArguments(TrainingArguments):
    """Options of `train-encoder`: its own fields, then every `transformers.TrainingArguments` field (some with
    other defaults, below)."""

    model: str | None = field(default=None, metadata={
        "help": "Model to fine-tune: a Hugging Face name or a local folder (e.g. allenai/scibert_scivocab_uncased)."})
    loss: str = field(default="twoway", metadata={"help": "Training loss.", "choices": ["twoway", "bce"]})
    tp: float = field(default=TWO_WAY_TP, metadata={"help": "Two-Way loss: temperature of the positives."})
    tn: float = field(default=TWO_WAY_TN, metadata={"help": "Two-Way loss: temperature of the negatives."})
    pos_weight: float | None = field(default=None, metadata={
        "help": "BCE: weight of the positive entries, above 0 (> 1 favours recall)."})
    pooling: str = field(default="model", metadata={
        "help": "'model': the architecture's own classification head (BERT: [CLS] pooler); 'mean': mean of the "
                "token states + a linear layer (the head sentence-transformers models are trained for).",
        "choices": ["model", "mean"]})
    text_fields: str = field(default="title,abstract", metadata={
        "help": "Fields joined (with the tokenizer's separator) into the input; empty ones are skipped."})
    max_length: int = field(default=512, metadata={
        "help": "Truncate inputs to this many tokens; capped at the model's positions (the run records the cap)."})
    per_label_thresholds: bool = field(default=False, metadata={
        "help": "Tune one threshold per label (needs a large validation split) instead of one global."})
    min_labels: str = field(default="0,1,2", metadata={
        "help": "Always predict at least this many top-scored labels; a list is searched on --validation."})
    early_stopping_patience: int | None = field(default=None, metadata={
        "help": "Stop after this many evaluations without a better validation micro-F1 (needs --eval_strategy "
                "epoch or steps); unset or 0: no early stopping."})
    resume: bool = field(default=False, metadata={
        "help": "Continue from the last checkpoint in --output_dir (after a crash); --resume_from_checkpoint "
                "names one explicitly."})
    keep_checkpoints: bool = field(default=False, metadata={
        "help": "Keep the checkpoint-* folders (optimizer state, for --resume) after a successful run: the last one "
                "beside the best (--save_total_limit 1, the default, becomes 2, since transformers would delete "
                "all but the best at the end)."})

    # TrainingArguments fields with defaults for this task (the original research's lr; evaluation each epoch)
    output_dir: str | None = field(default="runs/encoder", metadata={"help": "Run directory to write."})
    learning_rate: float = field(default=2.0e-5, metadata={"help": "Peak AdamW learning rate."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Training batch size per device."})
    per_device_eval_batch_size: int = field(default=128, metadata={"help": "Evaluation batch size per device."})
    warmup_steps: float = field(default=0.1, metadata={
        "help": "Linear warm-up: a number of steps, or a fraction (< 1) of all steps."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    eval_strategy: str = field(default="epoch", metadata={"help": "When to evaluate: 'no', 'steps', 'epoch'."})
    save_strategy: str = field(default="epoch", metadata={"help": "When to checkpoint (as --eval_strategy)."})
    save_total_limit: int | None = field(default=1, metadata={
        "help": "Checkpoints to keep besides the best one."})
    load_best_model_at_end: bool = field(default=True, metadata={
        "help": "End with the weights of the evaluation with the best validation micro-F1."})
    metric_for_best_model: str | None = field(default="micro_f1", metadata={
        "help": "Validation metric (thresholds tuned first) that picks the best checkpoint."})
    logging_steps: float = field(default=50, metadata={"help": "Log the training loss every N steps."})
    train_sampling_strategy: str = field(default="group_by_length", metadata={
        "help": SAMPLER_HELP,
        "choices": ["random", "sequential", "group_by_length", "batch_rebalance"]})
    dataloader_num_workers: int | None = field(default=None, metadata={
        "help": "Processes that collate batches; default: 4 with a GPU (the GPU outruns one Python process), "
                "0 without."})
    ddp_find_unused_parameters: bool | None = field(default=False, metadata={
        "help": "DDP: search the graph for parameters without gradients every step (every parameter is used here)."})
    bf16: bool | None = field(default=None, metadata={
        "help": "bf16 autocast; default: on when the GPU supports it."})
    logging_nan_inf_filter: bool = field(default=False, metadata={
        "help": "Leave NaN/inf losses out of the logged mean. Off by default: the check reads the loss back from the "
                "GPU every step, a synchronisation that keeps the CPU from queueing the next step's work."})

    def __post_init__(self):
        import torch

        if self.bf16 is None:
            self.bf16 = bf16_gpu()
        if self.dataloader_num_workers is None:
            self.dataloader_num_workers = min(4, os.cpu_count() or 1) if torch.cuda.is_available() else 0
        if not torch.cuda.is_available():
            self.dataloader_pin_memory = False  # pinning needs an accelerator; torch warns on every loader otherwise
        if self.eval_strategy == "no":  # a string, or a strategy enum (which equals its value)
            self.load_best_model_at_end = False  # nothing to select on; transformers would refuse the combination
        elif self.save_strategy == "no":
            self.load_best_model_at_end = False  # no checkpoint to go back to (check_arguments says so)
        if self.keep_checkpoints and self.save_total_limit == 1 and self.load_best_model_at_end:
            self.save_total_limit = 2  # with 1, the Trainer ends by deleting every checkpoint but the best one
        check_best_checkpoint_saves(self)  # before transformers refuses it in terms of an option never set
        super().__post_init__()


def check_best_checkpoint_saves(args: EncoderArguments) -> None:
    """--load_best_model_at_end (on by default) goes back to the best evaluation's checkpoint, so transformers wants a
    checkpoint at every evaluation: the same strategy (unless --save_strategy best), and with steps, --save_steps a
    multiple of --eval_steps (which defaults to --logging_steps). Its error names the default as if the user had set
    it; this one says what to change."""
    def value(option) -> str:  # a string, or a strategy enum
        return str(getattr(option, "value", option))

    evaluate, save = value(args.eval_strategy), value(args.save_strategy)
    if not args.load_best_model_at_end or save == "best":
        return
    why = ("--load_best_model_at_end (on by default) goes back to the best evaluation's checkpoint, so every "
           "evaluation needs one")
    off = "or --load_best_model_at_end false"
    if evaluate != save:
        fix = " (and --save_steps a multiple of --eval_steps)" if evaluate == "steps" else ""
        raise LlmclsError(f"--eval_strategy {evaluate} with --save_strategy {save}: {why}: set --save_strategy "
                          f"{evaluate}{fix}, {off}")
    eval_steps = args.eval_steps or args.logging_steps  # transformers' default for --eval_steps
    if evaluate != "steps" or not eval_steps:  # no --eval_steps nor --logging_steps: transformers says so
        return
    named = f"--eval_steps {eval_steps:g}" + ("" if args.eval_steps else " (--logging_steps, its default)")
    if (eval_steps < 1) != (args.save_steps < 1):  # a fraction of the run and a number of steps
        raise LlmclsError(f"--save_steps {args.save_steps:g} with {named}: {why}, and a fraction of the run beside "
                          f"a number of steps cannot promise that: give both as steps or both as fractions, {off}")
    if round(args.save_steps * 1_000_000) % round(eval_steps * 1_000_000):
        raise LlmclsError(f"--save_steps {args.save_steps:g} is not a multiple of {named}: {why}: set --save_steps "
                          f"to a multiple of --eval_steps, {off}")


STAGED_MODEL = ".model.new"  # the trained model until the run's results are written


def make_parser():
    return build_parser([DataArguments, EncoderArguments], prog="llmcls train-encoder",
                        description="Fine-tune an encoder with the Two-Way (or BCE) loss and write a run directory.")


def main(argv: list[str] | None = None) -> int:
    data_args, args = parse(make_parser(), argv)
    check_distributed(args.world_size)
    checkpoint = resume_checkpoint(args)  # None: a fresh run
    check_arguments(args, checkpoint)
    RunDir(args.output_dir).check_overwrite("train-encoder")  # a finished run of another command stays whole
    if checkpoint is None:
        RunDir(args.output_dir).check_fresh_start("--resume")
    with args.main_process_first(desc="reading and tokenising"):  # rank 0 fills datasets' cache, then the rest
        corpus = load_corpus(data_args, required=("train", "validation"))
        config = load_config(args.model)
        check_resume(args, checkpoint, corpus.label_space, config)
        tokenizer = load_tokenizer(args.model)
        options = training_options(args, data_args, corpus, effective_max_length(tokenizer, args.max_length, config))
        check_resume_options(args, checkpoint, options)
        splits = encode_corpus(corpus, tokenizer, args, config)
    set_seed(args.seed)  # the new classification head's initial weights come from --seed, not from the process's RNG
    model = load_for_training(args.model, corpus.label_space, args.pooling)
    trainer = build_trainer(model, tokenizer, splits["train"], splits["validation"], args, options=options)
    check_parallelism(trainer)
    resumed = checkpoint_step(checkpoint) if checkpoint else None
    started = time.perf_counter()
    train_metrics = trainer.train(resume_from_checkpoint=checkpoint).metrics
    train_s = time.perf_counter() - started
    run = RunDir(args.output_dir)
    if trainer.is_world_process_zero():  # saved before predicting: --bf16_full_eval casts the weights in place
        trained = trainer.accelerator.unwrap_model(trainer.model, keep_torch_compile=False)
        # staged beside an earlier run's model/, which write_run replaces together with that run's results: a rerun
        # stopped before then leaves the earlier run whole, never its thresholds with the new weights
        shutil.rmtree(run.create().path / STAGED_MODEL, ignore_errors=True)
        save_trained(trained, tokenizer, run.path / STAGED_MODEL)
    scores = {name: predict_scores(trainer, split) for name, split in splits.items() if name != "train"}
    thresholds = tune(splits["validation"].gold, scores["validation"].scores, args)
    if trainer.is_world_process_zero():
        timing = {"train_s": round(train_s, 3),
                  "train_examples_per_s": round(train_metrics.get("train_samples_per_second", 0.0), 1)}
        if resumed is not None:  # train_s is this process's part; the Trainer's rate counts every epoch's examples
            timing |= {"resumed_from_step": resumed, "train_examples_per_s": None}
        write_run(run, corpus, args, data_args, splits, scores, thresholds, trainer.model, timing)
        if not args.keep_checkpoints:
            run.remove_checkpoints()
    return 0


def check_arguments(args: EncoderArguments, checkpoint: str | None) -> None:
    """Option values checked before anything is read; `checkpoint` is what training would resume from."""
    if not args.model:
        raise LlmclsError("--model is required (a Hugging Face name or a local model folder)")
    if args.max_length < 8:
        raise LlmclsError(f"--max_length must be at least 8, got {args.max_length}")
    if args.tp <= 0 or args.tn <= 0:
        raise LlmclsError("--tp and --tn must be positive")
    if args.pos_weight is not None and not args.pos_weight > 0:  # 0 would drop the positives from the loss
        raise LlmclsError(f"--pos_weight must be positive (> 1 favours recall), got {args.pos_weight}")
    # an option of the other loss would be recorded in config.yaml as if it had shaped this run
    if args.loss == "twoway" and args.pos_weight is not None:
        raise LlmclsError("--pos_weight weighs BCE's positives; the Two-Way loss has --tp and --tn (or --loss bce)")
    if args.loss == "bce" and (args.tp, args.tn) != (TWO_WAY_TP, TWO_WAY_TN):
        raise LlmclsError("--tp and --tn are the Two-Way loss's temperatures; with --loss bce they do nothing")
    if args.dataloader_drop_last:  # the Trainer's evaluation loaders take it too
        raise LlmclsError("--dataloader_drop_last would drop validation and test rows as well (thresholds, the best "
                          "checkpoint and the test metrics on part of the rows); leave it off")
    parse_min_labels(args.min_labels)
    metric = (args.metric_for_best_model or "").removeprefix("eval_")
    if args.load_best_model_at_end and metric not in (*EVAL_KEYS, "loss"):
        raise LlmclsError(f"--metric_for_best_model {args.metric_for_best_model}: the evaluations during training "
                          f"compute {', '.join(EVAL_KEYS)} (thresholds tuned first) and loss")
    check_early_stopping(args)
    if metric == "loss" and args.loss == "twoway" and (args.load_best_model_at_end or args.early_stopping_patience):
        console.print(f"note: the Two-Way loss of an evaluation depends on its batches (its column term compares the "
                      f"rows of one batch): eval_loss, which selects the checkpoint here, changes with "
                      f"--per_device_eval_batch_size ({args.per_device_eval_batch_size}); micro_f1 does not")
    if args.save_strategy == "no" and args.eval_strategy != "no":
        console.print("note: --save_strategy no saves no checkpoint to go back to, so the run ends with the last "
                      "epoch's weights, not the best validation epoch's")
    if checkpoint is not None:
        check_checkpoint(checkpoint, resume_option(args))


def check_early_stopping(args: EncoderArguments) -> None:
    patience = args.early_stopping_patience
    if patience is None or patience == 0:  # 0: off, as documented in the option's help
        return
    if patience < 0:
        raise LlmclsError(f"--early_stopping_patience must be 0 (off) or more, got {patience}")
    if args.eval_strategy == "no":
        raise LlmclsError("--early_stopping_patience needs evaluations to compare: set --eval_strategy epoch (or "
                          "steps)")
    if not args.metric_for_best_model:
        raise LlmclsError("--early_stopping_patience needs --metric_for_best_model (e.g. micro_f1)")


def check_parallelism(trainer) -> None:
    """Data parallel only: saving (`save_trained`) and prediction assume every process holds the whole model, and
    an encoder fits on one GPU, so sharding (FSDP, DeepSpeed ZeRO) would buy nothing."""
    if getattr(trainer, "is_fsdp_enabled", False) or getattr(trainer, "is_deepspeed_enabled", False):
        raise LlmclsError("train-encoder runs on one GPU or under DDP (accelerate_configs/multi_gpu.yaml); "
                          "FSDP and DeepSpeed are not supported")


def parse_min_labels(text: str) -> list[int]:
    return number_list(text, "min_labels", int, minimum=0)


# ---------------------------------------------------------------------------------------------- training
class EncoderTrainer(SeededLengthGrouping, Trainer):
    """A `Trainer` whose loss comes from `losses.py` (the model never sees the labels) and whose batches grouped by
    length come in an order set by the seed and the epoch (`llmcls.sampling`: a resumed run trains on the
    uninterrupted run's batches)."""

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
            (Path(output_dir) / OPTIONS_FILE).write_text(json.dumps(self.options, indent=2) + "\n", encoding="utf-8")

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
                  args: TrainingArguments, loss_fn=None, options: dict | None = None) -> EncoderTrainer:
    from transformers import EarlyStoppingCallback

    callbacks = []
    if getattr(args, "early_stopping_patience", None):
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=args.early_stopping_patience))
    if eval_split is None:
        compute = None
    else:
        compute = functools.partial(epoch_metrics, min_labels=getattr(args, "min_labels", "0"),
                                    per_label=getattr(args, "per_label_thresholds", False))
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


def tune(gold: np.ndarray, scores: np.ndarray, args) -> Thresholds:
    return tune_best_thresholds(gold, scores, min_labels=parse_min_labels(args.min_labels),
                                per_label=args.per_label_thresholds)


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


def write_run(run: RunDir, corpus: Corpus, args: EncoderArguments, data_args: DataArguments,
              splits: dict[str, EncodedSplit], scores: dict[str, SplitScores], thresholds: Thresholds, model,
              timing: dict) -> None:
    console.print(f"Thresholds tuned on validation: {'per label' if thresholds.per_label else 'global'} "
                  f"(median {np.median(thresholds.values):.4g}), min_labels={thresholds.min_labels}, "
                  f"validation micro-F1 {thresholds.validation_micro_f1:.4f}")
    space = corpus.label_space
    run.create().clear_results()
    shutil.rmtree(run.path / "model", ignore_errors=True)
    os.replace(run.path / STAGED_MODEL, run.path / "model")
    run.write_config(asdict(data_args) | args.to_dict() | {
        "data_sizes": corpus.sizes(), "notes": corpus.notes, "command": command_line()})
    run.write_labels(space)
    run.write_json("thresholds.json", thresholds.to_dict())
    primary = primary_split(scores)
    timing = {"device": device_name(args)} | timing
    extra = {"params_trained": count_trainable(model), "loss": args.loss, "pooling": args.pooling}
    for split in scores:
        write_split(run, space, split, primary, splits[split], scores[split], thresholds,
                    system=f"{SYSTEM}-{args.loss}", model=args.model, timing=timing, extra=extra)
    console.print(f"Run written to {run.path} (model in {run.path / 'model'})")


if __name__ == "__main__":  # `accelerate launch -m llmcls.encoder ...`: the same command, one-line errors
    from llmcls.cli import main as cli_main

    raise SystemExit(cli_main(["train-encoder", *sys.argv[1:]]))
