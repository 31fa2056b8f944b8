"""`llmcls predict-encoder`: score a file with a model trained by `llmcls train-encoder`, reusing its run.

    llmcls predict-encoder --run runs/scibert-twoway --test new.jsonl       # writes runs/scibert-twoway/predict-new
    llmcls predict-encoder --run runs/scibert-twoway --test new.jsonl --output_dir runs/scibert-on-new

The trained run fixes everything that shaped its predictions: the label space (labels.json), the input fields and
truncation (config.yaml), the thresholds (thresholds.json), the weights (model/) and, unless --bf16 or
--bf16_full_eval says otherwise, the precision it predicted at (config.yaml). The output is a run directory
of its own (predictions.jsonl, metrics.json, ...) that `llmcls compare` reads like any other.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from llmcls.config import DataArguments, bf16_gpu, build_parser, check_one_process, command_line, parse
from llmcls.corpus import load_corpus
from llmcls.encoder_args import EncoderArguments
from llmcls.encoder_data import EncodedSplit, encode_split
from llmcls.encoder_model import load_trained
from llmcls.encoder_train import SplitScores, build_trainer, device_name, predict_scores, write_split
from llmcls.errors import LlmclsError
from llmcls.progress import console
from llmcls.runs import RunDir


@dataclass
class PredictArguments:
    run: str | None = field(default=None, metadata={"help": "Run directory written by `llmcls train-encoder`."})
    output_dir: str | None = field(default=None, metadata={
        "help": "Run directory to write (default: RUN/predict-<name of the --test file>)."})
    batch_size: int = field(default=128, metadata={"help": "Examples per forward pass."})
    bf16: bool | None = field(default=None, metadata={
        "help": "bf16 autocast; default: as the trained run predicted (its --bf16; a --use_cpu run predicted in "
                "float32), or on when the GPU supports it for a run that does not record it."})
    bf16_full_eval: bool | None = field(default=None, metadata={
        "help": "Predict with the weights cast to bf16 (autocast then off); default: as the trained run (its "
                "--bf16_full_eval), whose thresholds were tuned on scores of that precision."})


def make_parser():
    return build_parser([DataArguments, PredictArguments], prog="llmcls predict-encoder",
                        description="Predict with a trained encoder run; writes a run directory.")


# data options that shape training data or the label space, which the trained run fixes: refused when given
TRAINING_ONLY = ("train", "validation", "labels", "min_label_count", "top_labels", "split_ratios", "split_seed",
                 "max_train_examples")


def main(argv: list[str] | None = None) -> int:
    data_args, args = parse(make_parser(), argv)
    check_one_process("predict-encoder")
    defaults = DataArguments()
    given = [name for name in TRAINING_ONLY if getattr(data_args, name) != getattr(defaults, name)]
    if given:
        raise LlmclsError(f"--{given[0]} does not apply to predict-encoder: the trained run fixes the label space "
                          "and the training data (its labels.json and config.yaml); give --run and --test")
    source = trained_run(args.run)
    if args.output_dir and Path(args.output_dir).resolve() == source.path.resolve():
        raise LlmclsError(f"--output_dir {args.output_dir} is the trained run itself, whose results it would replace; "
                          "leave it out (RUN/predict-<test file>) or name another folder")
    run = RunDir(args.output_dir or source.path / f"predict-{_stem(data_args.test)}")
    run.check_overwrite("predict-encoder")
    trained = read_training_config(source)
    match_precision(args, trained)
    thresholds = source.read_thresholds()  # read before the model runs: a broken file fails in a second
    data_args.labels = str(source.path / "labels.json")  # the trained label space, whatever the file holds
    level = trained.get("label_level", defaults.label_level)  # gold cs.IT is read as cs for an archive-level run
    if data_args.label_level not in (defaults.label_level, level):
        raise LlmclsError(f"--label_level {data_args.label_level}: the run was trained at --label_level {level}")
    data_args.label_level = level
    corpus = load_corpus(data_args, required=("test",), unlabelled=("test",))  # a file to predict needs no labels
    model, tokenizer = load_trained(source.path / "model")
    test = encode_split(corpus.get("test"), tokenizer, corpus.label_space, trained["text_fields"],
                        trained["max_length"], sort=True)
    scored, device, precision = predict(model, tokenizer, test, args)
    run.create().clear_results()
    run.write_config(asdict(data_args) | asdict(args) | precision | {
        "trained_run": str(source.path), "model": trained["model"], "text_fields": trained["text_fields"],
        "max_length": trained["max_length"], "data_sizes": corpus.sizes(), "notes": corpus.notes,
        "command": command_line()})
    run.write_labels(corpus.label_space)
    run.write_json("thresholds.json", thresholds.to_dict())
    labelled = np.array([bool(labels) for labels in corpus.get("test")["labels"]], dtype=bool)
    write_split(run, corpus.label_space, "test", "test", test, scored, thresholds, system=trained["system"],
                model=trained["model"], timing={"device": device}, extra={"trained_run": str(source.path)},
                labelled=labelled)
    return 0


def predict(model, tokenizer, test: EncodedSplit, args: PredictArguments) -> tuple[SplitScores, str, dict]:
    """The training command's prediction path (a Trainer in evaluation mode): logits, the device used and the
    precision used (config.yaml keys)."""
    import torch

    if args.bf16_full_eval:
        # cast here as predict_one_process does for train-encoder --bf16_full_eval, not through TrainingArguments,
        # which wants a bf16 GPU or --use_cpu for it where torch needs neither
        model = model.to(dtype=torch.bfloat16)
    with tempfile.TemporaryDirectory() as scratch:  # the Trainer wants an output_dir; nothing is kept there
        try:
            trainer_args = EncoderArguments(output_dir=scratch, per_device_eval_batch_size=args.batch_size,
                                            bf16=args.bf16, eval_strategy="no", save_strategy="no",
                                            disable_tqdm=True)
        except ValueError as err:  # what transformers refuses: bf16 without a GPU that has it
            if args.bf16:
                raise LlmclsError("--bf16 true: this machine has no GPU with bfloat16; leave --bf16 out (it is on by "
                                  "default where there is one)") from None
            raise LlmclsError(" ".join(str(err).split())) from None
        trainer = build_trainer(model, tokenizer, None, None, trainer_args, loss_fn=_no_loss)
        return predict_scores(trainer, test), device_name(trainer_args), precision_used(trainer_args, args)


def match_precision(args: PredictArguments, trained: dict) -> None:
    """Take --bf16_full_eval and --bf16 from the trained run where neither is given (one given replaces the run's
    precision: --bf16 true alone is bf16 autocast over float32 weights, whatever the run did).

    train-encoder predicted validation and test at its precision and tuned thresholds.json on those validation
    scores; scores of another precision differ (bf16 logits tie where float32 ones do not) and would meet
    thresholds tuned on others. A run whose config.yaml lacks a key keeps the older default: float32 weights, and
    bf16 autocast where the GPU has it."""
    if args.bf16 is not None and args.bf16_full_eval is None:  # a precision asked for replaces the run's
        args.bf16_full_eval = False
    if args.bf16_full_eval is None:
        args.bf16_full_eval = bool(trained.get("bf16_full_eval", False))
    if args.bf16_full_eval:
        args.bf16 = False  # autocast over bf16 weights only adds casts: train-encoder leaves it off there too
    elif args.bf16 is None and "bf16" in trained:
        args.bf16 = trained_autocast(trained)
        if args.bf16 and not bf16_gpu():  # trained on a GPU, predicted on a machine without one: still predict
            console.print("note: the trained run predicted under bf16 autocast on a GPU; this machine has no GPU with "
                          "bfloat16, so prediction runs in float32 (scores differ slightly from those its thresholds "
                          "were tuned on)")
            args.bf16 = False


def trained_autocast(trained: dict) -> bool:
    """Whether train-encoder predicted under bf16 autocast: its --bf16, on a GPU only (encoder_infer.forward_logits
    autocasts on CUDA; a --use_cpu run trained under CPU autocast but predicted in float32)."""
    return bool(trained["bf16"]) and not trained.get("use_cpu", False)


def precision_used(trainer_args: EncoderArguments, args: PredictArguments) -> dict:
    """The precision prediction ran at, for config.yaml: --bf16 as resolved (a run without the key: the GPU's
    default), and in words, since autocast applies on a GPU only (encoder_infer.forward_logits)."""
    autocast = bool(trainer_args.bf16) and trainer_args.device.type == "cuda"
    words = "bf16 weights" if args.bf16_full_eval else "bf16 autocast" if autocast else "float32"
    return {"bf16": bool(trainer_args.bf16), "bf16_full_eval": bool(args.bf16_full_eval), "precision": words}


def trained_run(path: str | None) -> RunDir:
    if not path:
        raise LlmclsError("--run is required (a run directory written by `llmcls train-encoder`)")
    run = RunDir(path)
    missing = [name for name in ("config.yaml", "labels.json", "thresholds.json", "model/config.json")
               if not (run.path / name).exists()]
    if missing:
        raise LlmclsError(f"{run.path}: not a finished train-encoder run (missing {', '.join(missing)})")
    return run


def read_training_config(run: RunDir) -> dict:
    config = run.read_config()
    missing = [key for key in ("model", "text_fields", "max_length", "loss") if key not in config]
    if missing:
        raise LlmclsError(f"{run.path / 'config.yaml'}: missing {', '.join(missing)} (not a train-encoder run?)")
    return config | {"system": f"encoder-{config['loss']}"}


def _no_loss(logits, targets):
    raise AssertionError("predict-encoder computes no loss")  # predict_scores drops the labels before the model


def _stem(spec: str) -> str:
    name = Path(spec).name
    for suffix in (".gz", ".jsonl", ".json", ".csv", ".parquet", ".ndjson"):
        name = name.removesuffix(suffix)
    return name or "test"


if __name__ == "__main__":
    import sys

    from llmcls.cli import main as cli_main

    raise SystemExit(cli_main(["predict-encoder", *sys.argv[1:]]))
