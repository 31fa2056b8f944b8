"""Where `llmcls train-encoder` continues from, and whether it may: the checkpoint `--resume` or
`--resume_from_checkpoint` names (`resume_checkpoint`), refused before anything loads it when it was made for another
label space, model or head (`check_resume`, from its config.json) or trained with other options
(`check_resume_options`, from the `llmcls_options.json` the trainer writes into each checkpoint).
"""

from __future__ import annotations

import json
from pathlib import Path

from llmcls.config import DataArguments, changed_options, describe_changes
from llmcls.corpus import Corpus
from llmcls.encoder_args import EncoderArguments
from llmcls.encoder_model import config_mismatch, load_config
from llmcls.errors import LlmclsError
from llmcls.labels import LabelSpace
from llmcls.progress import console
from llmcls.runs import RunDir, checkpoint_step, read_json, wants_last_checkpoint


def resume_option(args: EncoderArguments) -> str | None:
    """The option that says where training continues from, as given (None: a fresh run): a checkpoint folder
    (--resume_from_checkpoint PATH, which wins), or the last checkpoint in --output_dir (--resume, or
    --resume_from_checkpoint true as `llmcls sft` takes it)."""
    if args.resume_from_checkpoint:
        last = wants_last_checkpoint(args.resume_from_checkpoint)
        return "--resume_from_checkpoint true" if last else "--resume_from_checkpoint"
    return "--resume" if args.resume else None


def resume_checkpoint(args: EncoderArguments) -> str | None:
    """The checkpoint that training continues from (see `resume_option`); None for a fresh run, a one-line error
    when the last checkpoint was asked for and there is none."""
    option = resume_option(args)
    if option is None:
        return None
    if option == "--resume_from_checkpoint":
        return str(args.resume_from_checkpoint)
    return RunDir(args.output_dir).required_last_checkpoint(option)


def check_resume(args: EncoderArguments, checkpoint: str | None, space: LabelSpace, config) -> None:
    """Refuse a checkpoint made for another label space, model or head before anything loads it: its config.json
    is compared with this run's (the Trainer would otherwise stop on a size mismatch after loading, or, with as many
    labels, train on with columns that mean other labels). Checkpoints without a config.json (mean pooling, before
    `EncoderTrainer._save` wrote one) are not checked."""
    if checkpoint is None or not (Path(checkpoint) / "config.json").is_file():
        return
    problem = config_mismatch(load_config(checkpoint), space, config, args.pooling)
    if problem:
        option = "--resume_from_checkpoint" if args.resume_from_checkpoint else "--resume"
        raise LlmclsError(f"{option}: checkpoint {checkpoint} {problem}; resume with the options of the run that "
                          "made it, or train afresh without --resume")


OPTIONS_FILE = "llmcls_options.json"  # in each checkpoint: the options it was trained with (`training_options`)

# What a resumed run must share with the run that saved the checkpoint: the options that shape the weight updates (the
# model, loss, optimizer and learning-rate schedule; the batches: their rows, texts, length, size, order, number of
# processes and precision) and the metric that picks the best checkpoint (the best value saved before the resume is
# compared with the evaluations after it). Resuming with another of these would train one run with two settings and
# record it under the second. Everything else may change on resume, since it does not change what is trained: where
# and how often the run evaluates, saves and logs, --per_device_eval_batch_size, dataloader workers, --report_to,
# --keep_checkpoints, early stopping, --test and --max_eval_examples, the thresholds' options (tuned at the end).
# The label space, model type and pooling are compared by `check_resume` (the checkpoint's config.json).
RESUME_OPTIONS = ("model", "loss", "tp", "tn", "pos_weight", "text_fields", "learning_rate", "lr_scheduler_type",
                  "lr_scheduler_kwargs", "warmup_steps", "weight_decay", "optim", "optim_args", "adam_beta1",
                  "adam_beta2", "adam_epsilon", "max_grad_norm", "per_device_train_batch_size",
                  "gradient_accumulation_steps", "train_sampling_strategy", "seed", "data_seed", "bf16", "fp16",
                  "metric_for_best_model", "greater_is_better")
# The length may change, to train on past the planned end (the Trainer supports it): a note says that from the
# resumed step on, the learning rate follows the new length's schedule.
LENGTH_OPTIONS = ("max_steps", "num_train_epochs")


def training_options(args: EncoderArguments, data_args: DataArguments, corpus: Corpus, max_length: int) -> dict:
    """`RESUME_OPTIONS` and `LENGTH_OPTIONS` in this run, as JSON values, plus the length inputs are cut to
    (`max_length`, after the cap at the model's positions), the columns read as text, the number of processes, and
    a digest of the training rows (ids and labels, so a file edited in place, other filters, --max_train_examples or
    --split_ratios tell). The file's path is not compared: the same rows may be read from a moved file."""
    values, train = args.to_dict(), Corpus(corpus.label_space, {"train": corpus.get("train")})  # train's digest only
    options = {name: values[name] for name in (*RESUME_OPTIONS, *LENGTH_OPTIONS)} | {
        "max_length": max_length, "text_field": data_args.text_field, "title_field": data_args.title_field,
        "world_size": args.world_size, "train_rows": f"{train.sizes()['train']} rows, {train.fingerprints()['train']}"}
    return normalised(json.loads(json.dumps(options)))  # as read back from a checkpoint (tuples become lists)


def normalised(options: dict) -> dict:
    """Spellings of one setting made equal: ./bert and bert, "title, abstract" and "title,abstract", eval_micro_f1
    and micro_f1 (applied to the recorded options too: an older llmcls recorded them as given)."""
    options = dict(options)
    if isinstance(options.get("model"), str):
        model = Path(options["model"]).expanduser()
        options["model"] = str(model.resolve()) if model.exists() else options["model"]
    if isinstance(options.get("text_fields"), str):
        options["text_fields"] = ",".join(part.strip() for part in options["text_fields"].split(",") if part.strip())
    if "metric_for_best_model" in options:
        options["metric_for_best_model"] = (options["metric_for_best_model"] or "").removeprefix("eval_") or None
    return options


def check_resume_options(args: EncoderArguments, checkpoint: str | None, options: dict) -> None:
    """Refuse to continue a checkpoint trained with other options (`RESUME_OPTIONS`), naming up to three as old ->
    new; a longer (or shorter) run is noted. A checkpoint of an older llmcls, without `OPTIONS_FILE`, resumes unchecked
    (said in a note)."""
    if checkpoint is None:
        return
    path = Path(checkpoint) / OPTIONS_FILE
    if not path.is_file():
        console.print(f"note: {checkpoint} has no {OPTIONS_FILE} (saved by an older llmcls): the options it was "
                      "trained with could not be compared with this run's", soft_wrap=True, markup=False)
        return
    recorded = read_json(path)
    if not isinstance(recorded, dict):
        raise LlmclsError(f"{path}: not a record of training options (a JSON {type(recorded).__name__})")
    old = normalised(recorded)
    changed = changed_options(old, options, ignore=LENGTH_OPTIONS)
    if changed:
        raise LlmclsError(f"{resume_option(args)}: {checkpoint} was trained with other options "
                          f"({describe_changes(changed)}); resume with the same options, or train afresh in another "
                          "--output_dir")

    def length(values: dict) -> str:
        return f"max_steps {values['max_steps']}" if values["max_steps"] > 0 else \
            f"num_train_epochs {values['num_train_epochs']:g}"

    if all(key in old for key in LENGTH_OPTIONS) and length(old) != length(options):
        console.print(f"note: {checkpoint} was trained toward {length(old)}, this run goes on to {length(options)}: "
                      f"from step {checkpoint_step(checkpoint)} on, the learning rate follows the schedule of the new "
                      "length (warm-up and decay spread over it), not the one the checkpoint was trained with",
                      soft_wrap=True, markup=False)
