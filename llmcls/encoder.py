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
This module: the parser, the options' checks and the steps; `encoder_args` holds the options, `encoder_train` the
Trainer, prediction and the split files that predict-encoder shares.

Scores in predictions.jsonl and thresholds are raw logits. The Two-Way loss is unchanged when a constant is added to
every logit, so 0 is no natural cut for it: the thresholds tuned on validation are what turn scores into labels.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import asdict

import numpy as np
from transformers import set_seed

from llmcls.config import DataArguments, build_parser, check_distributed, command_line, parse
from llmcls.corpus import Corpus, load_corpus
from llmcls.encoder_args import TWO_WAY_TN, TWO_WAY_TP, EncoderArguments
from llmcls.encoder_data import EncodedSplit, effective_max_length, encode_corpus
from llmcls.encoder_model import count_trainable, load_config, load_for_training, load_tokenizer, save_trained
from llmcls.encoder_resume import (
    check_resume,
    check_resume_options,
    resume_checkpoint,
    resume_option,
    training_options,
)
from llmcls.encoder_train import (
    EVAL_KEYS,
    SplitScores,
    build_trainer,
    device_name,
    parse_min_labels,
    predict_scores,
    write_split,
)
from llmcls.errors import LlmclsError
from llmcls.metrics import Thresholds, tune_best_thresholds
from llmcls.progress import console
from llmcls.runs import RunDir, check_checkpoint, checkpoint_step, primary_split

SYSTEM = "encoder"
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


def tune(gold: np.ndarray, scores: np.ndarray, args) -> Thresholds:
    return tune_best_thresholds(gold, scores, min_labels=parse_min_labels(args.min_labels),
                                per_label=args.per_label_thresholds)


# ---------------------------------------------------------------------------------------------- run directory
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
