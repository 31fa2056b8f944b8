"""train-encoder --resume continues only the run it was given: options that shape training must be the interrupted
run's (else one line naming them, old -> new), and a checkpoint at every evaluation when the best one is kept
(--eval_strategy and --save_strategy), said in llmcls's terms before anything loads."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from conftest import write_jsonl
from tiny_encoders import save_tiny_bert, train_tokenizer

from llmcls import encoder
from llmcls.cli import main
from llmcls.config import parse
from llmcls.encoder_resume import OPTIONS_FILE
from llmcls.runs import RunDir

SPLITS = ["--train", "aapd-train", "--validation", "aapd-validation"]  # the option checks read no data


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory, aapd_rows):
    return save_tiny_bert(train_tokenizer([row["abstract"] for row in aapd_rows]),
                          tmp_path_factory.mktemp("tiny_encoder") / "bert")


@pytest.fixture(scope="module")
def data(tmp_path_factory, aapd_rows):
    """16 training rows; validation: 8 other rows whose labels are all in the space: a run with no notes, so that a
    refusal is the only line on stderr."""
    root = tmp_path_factory.mktemp("data")
    space = {label for row in aapd_rows[:16] for label in row["labels"]}
    validation = [row for row in aapd_rows[16:] if set(row["labels"]) <= space][:8]
    assert len(validation) == 8
    return {"train": write_jsonl(root / "train.jsonl", aapd_rows[:16]),
            "validation": write_jsonl(root / "validation.jsonl", validation)}


def argv(model, data, out, *extra) -> list[str]:
    """4 steps of 4 rows, a checkpoint every 2 (checkpoint-4 kept: --keep_checkpoints), no evaluation."""
    return ["train-encoder", "--train", str(data["train"]), "--validation", str(data["validation"]), "--model",
            str(model), "--output_dir", str(out), "--max_length", "32", "--per_device_train_batch_size", "4",
            "--max_steps", "4", "--learning_rate", "1e-3", "--eval_strategy", "no", "--save_strategy", "steps",
            "--save_steps", "2", "--keep_checkpoints", "true", "--disable_tqdm", "true", "--report_to", "none",
            "--seed", "0", *extra]


@pytest.fixture(scope="module")
def trained(tiny_bert, data, tmp_path_factory):
    """A Two-Way run whose last checkpoint (step 4) a later command resumes from."""
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(argv(tiny_bert, data, out)) == 0
    return out


@pytest.fixture
def interrupted(trained, tmp_path):
    """The run's folder as an interruption after its last checkpoint leaves it: checkpoint-4 only."""
    out = tmp_path / "run"
    shutil.copytree(trained / "checkpoint-4", out / "checkpoint-4")
    return out


def one_line_error(args: list[str], capsys) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("llmcls train-encoder: error: "), err
    return err.removeprefix("llmcls train-encoder: error: ")


def files(out) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}


def test_each_checkpoint_records_the_options_it_was_trained_with(trained):
    options = json.loads((trained / "checkpoint-4" / OPTIONS_FILE).read_text())
    assert options["loss"] == "twoway" and options["learning_rate"] == 1e-3 and options["max_length"] == 32
    assert options["max_steps"] == 4 and options["train_rows"].startswith("16 rows, ")
    assert "per_device_eval_batch_size" not in options and "output_dir" not in options


@pytest.mark.parametrize(("extra", "changes"), [
    (["--loss", "bce"], "loss: 'twoway' -> 'bce'"),
    (["--learning_rate", "2e-3", "--max_length", "24"], "learning_rate: 0.001 -> 0.002, max_length: 32 -> 24"),
    (["--tp", "2"], "tp: 4.0 -> 2.0"),
    (["--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "2"],
     "per_device_train_batch_size: 4 -> 8, gradient_accumulation_steps: 1 -> 2"),
    (["--seed", "1"], "seed: 0 -> 1"),
    (["--text_fields", "abstract"], "text_fields: 'title,abstract' -> 'abstract'"),
    (["--train", "EDITED"], "train_rows: '16 rows, "),
    (["--warmup_steps", "0", "--weight_decay", "0", "--lr_scheduler_type", "constant", "--loss", "bce"],
     "loss: 'twoway' -> 'bce', lr_scheduler_type: 'linear' -> 'constant', warmup_steps: 0.1 -> 0.0, and 1 more)"),
])
def test_resume_with_other_training_options_is_refused_in_one_line(extra, changes, tiny_bert, data, interrupted,
                                                                    capsys, tmp_path):
    """The walkthrough's run resumed with --loss bce trained on without a word, and metrics.json called the mixed run
    encoder-bce; --learning_rate and --max_length changes went through as well."""
    out = interrupted
    if extra == ["--train", "EDITED"]:  # the training file's rows in another order, read from another path
        rows = [json.loads(line) for line in data["train"].read_text().splitlines()]
        extra = ["--train", str(write_jsonl(tmp_path / "edited.jsonl", rows[::-1]))]
    before = files(out)
    err = one_line_error([*argv(tiny_bert, data, out), "--resume", "true", *extra], capsys)
    assert err.startswith(f"--resume: {out / 'checkpoint-4'} was trained with other options ("), err
    assert changes in err, err
    assert err.endswith("); resume with the same options, or train afresh in another --output_dir"), err
    assert files(out) == before  # refused before training: no checkpoint, no result rewritten


def test_the_walkthroughs_message(tiny_bert, data, interrupted, capsys):
    checkpoint = interrupted / "checkpoint-4"
    err = one_line_error([*argv(tiny_bert, data, interrupted), "--resume_from_checkpoint", str(checkpoint),
                          "--loss", "bce", "--learning_rate", "2e-3"], capsys)
    assert err == (f"--resume_from_checkpoint: {checkpoint} was trained with other options (loss: 'twoway' -> 'bce', "
                   "learning_rate: 0.001 -> 0.002); resume with the same options, or train afresh in another "
                   "--output_dir")


def test_resume_may_train_longer_and_change_what_does_not_shape_training(tiny_bert, data, interrupted, capsys):
    """Evaluation, saving, logging, the test split and --max_eval_examples may change; a longer --max_steps trains on
    from the checkpoint, with a note on the learning-rate schedule."""
    out = interrupted
    capsys.readouterr()
    # and other spellings of the same settings: the model's folder by a relative path, spaces in --text_fields
    assert main([*argv(os.path.relpath(tiny_bert), data, out), "--resume", "true", "--max_steps", "6",
                 "--per_device_eval_batch_size", "4", "--logging_steps", "1", "--max_eval_examples", "6", "--test",
                 str(data["validation"]), "--keep_checkpoints", "false", "--text_fields", "title, abstract",
                 "--metric_for_best_model", "eval_micro_f1"]) == 0
    said = " ".join(capsys.readouterr().err.split())
    assert (f"note: {out / 'checkpoint-4'} was trained toward max_steps 4, this run goes on to max_steps 6: from "
            "step 4 on, the learning rate follows the schedule of the new length") in said
    record = RunDir(out).read_metrics()
    assert record["system"] == "encoder-twoway" and record["timing"]["resumed_from_step"] == 4
    assert not list(out.glob("checkpoint-*"))  # --keep_checkpoints false: removed after the run


def test_a_checkpoint_without_recorded_options_resumes_as_before_with_a_note(tiny_bert, data, interrupted, capsys):
    """Checkpoints of an older llmcls hold no llmcls_options.json: they resume unchecked, and the run says so."""
    out = interrupted
    (out / "checkpoint-4" / OPTIONS_FILE).unlink()
    capsys.readouterr()
    assert main([*argv(tiny_bert, data, out), "--resume", "true", "--loss", "bce"]) == 0  # step 4 of 4: no training
    said = " ".join(capsys.readouterr().err.split())
    assert (f"note: {out / 'checkpoint-4'} has no {OPTIONS_FILE} (saved by an older llmcls): the options it "
            "was trained with could not be compared with this run's") in said


@pytest.mark.parametrize("content", ['{"loss": "twoway", "learning_rate', "[]"], ids=["cut short", "a list"])
def test_a_broken_options_file_is_one_line_naming_it(tiny_bert, data, interrupted, capsys, content):
    """The file was read with a bare json.loads: a JSONDecodeError traceback (an AttributeError for a list)."""
    recorded = interrupted / "checkpoint-4" / OPTIONS_FILE
    recorded.write_text(content)
    err = one_line_error([*argv(tiny_bert, data, interrupted), "--resume", "true"], capsys)
    assert err.startswith(f"{recorded}: "), err


def test_options_recorded_as_given_by_an_earlier_llmcls_compare_by_their_meaning(tiny_bert, data, interrupted,
                                                                                 monkeypatch):
    """The first llmcls to record options wrote them as given (a relative model path, spaces in --text_fields, an
    eval_ metric): only this run's side was normalised, so the same spelling was refused as a change."""
    monkeypatch.chdir(tiny_bert.parent)
    recorded = interrupted / "checkpoint-4" / OPTIONS_FILE
    options = json.loads(recorded.read_text())
    recorded.write_text(json.dumps(options | {"model": tiny_bert.name, "text_fields": "title, abstract",
                                              "metric_for_best_model": "eval_micro_f1"}))
    assert main([*argv(tiny_bert, data, interrupted), "--resume", "true"]) == 0


# ---------------------------------------------------------------------------------------------- best checkpoint
OFF = "or --load_best_model_at_end false"
WHY = "--load_best_model_at_end (on by default) goes back to the best evaluation's checkpoint, so every evaluation " \
      "needs one"


@pytest.mark.parametrize(("extra", "message"), [
    (["--eval_strategy", "steps"],
     f"--eval_strategy steps with --save_strategy epoch: {WHY}: set --save_strategy steps (and --save_steps a "
     f"multiple of --eval_steps), {OFF}"),
    (["--save_strategy", "steps"], f"--eval_strategy epoch with --save_strategy steps: {WHY}: set --save_strategy "
                                   f"epoch, {OFF}"),
    (["--eval_strategy", "steps", "--save_strategy", "steps", "--eval_steps", "30"],
     f"--save_steps 500 is not a multiple of --eval_steps 30: {WHY}: set --save_steps to a multiple of --eval_steps, "
     f"{OFF}"),
    (["--eval_strategy", "steps", "--save_strategy", "steps", "--logging_steps", "30"],
     "--save_steps 500 is not a multiple of --eval_steps 30 (--logging_steps, its default): "),
    (["--eval_strategy", "steps", "--save_strategy", "steps", "--eval_steps", "0.1"],
     "--save_steps 500 with --eval_steps 0.1: "),
])
def test_eval_and_save_strategies_that_cannot_keep_the_best_checkpoint_are_one_llmcls_line(extra, message, capsys,
                                                                                            tmp_path):
    """transformers refused --eval_strategy steps with a message about --load_best_model_at_end, llmcls's default
    that the user never set, and "Save strategy: SaveStrategy.EPOCH" on a second line."""
    err = one_line_error(["train-encoder", "--model", "no/model", *SPLITS, "--output_dir", str(tmp_path / "r"),
                          *extra], capsys)
    assert err.startswith(message), err
    assert "SaveStrategy" not in err


@pytest.mark.parametrize("extra", [
    ["--eval_strategy", "steps", "--save_strategy", "steps"],  # 500 is a multiple of --logging_steps 50
    ["--eval_strategy", "steps", "--save_strategy", "steps", "--eval_steps", "25", "--save_steps", "100"],
    ["--eval_strategy", "steps", "--save_strategy", "steps", "--eval_steps", "0.1", "--save_steps", "0.2"],
    ["--eval_strategy", "steps", "--save_strategy", "best"],
    ["--eval_strategy", "steps", "--load_best_model_at_end", "false"],
    ["--eval_strategy", "no", "--save_strategy", "steps"],
])
def test_strategies_that_keep_a_checkpoint_per_evaluation_parse(extra):
    _, args = parse(encoder.make_parser(), ["--model", "m", *SPLITS, *extra])
    assert args.eval_strategy == extra[1]
