"""The options of `llmcls train-encoder` (`EncoderArguments`: its own fields and transformers' TrainingArguments with
this task's defaults), in a module of their own so that the modules of the run (`encoder_data`, `encoder_resume`,
`encoder_train`) and `predict-encoder` can use them without importing the command.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from transformers import TrainingArguments

from llmcls.config import NON_BLOCKING_BATCHES, SAMPLER_HELP, bf16_gpu
from llmcls.errors import LlmclsError

TWO_WAY_TP, TWO_WAY_TN = 4.0, 1.0  # the paper's temperatures


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
    fused_attention: bool = field(default=True, metadata={
        "help": "With --torch_compile on a GPU (Ampere or later), call SDPA's fused attention kernels by name "
                "(bf16/fp16; flash attention for batches without padding, the memory-efficient kernel with a mask) "
                "in models that attend through transformers' SDPA (BERT, RoBERTa, ModernBERT; DeBERTa has its own "
                "attention): compiled, SDPA's own call ran BERT's attention with dropout unfused."})
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
        elif self.accelerator_config is None:
            self.accelerator_config = dict(NON_BLOCKING_BATCHES)
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
