"""Options that cannot work, refused in one line before any data is read or model loaded (sizes of 0, pairs that
contradict each other), and what a command says when its options quietly change what it does."""

from __future__ import annotations

import pytest

from llmcls import encoder
from llmcls.cli import main
from llmcls.config import parse

AAPD = ["--train", "aapd-train", "--validation", "aapd-validation"]


def _one_line_error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(("argv", "message"), [
    (["train-encoder", "--model", "no/model", *AAPD, "--per_device_train_batch_size", "0"],
     "--per_device_train_batch_size must be at least 1, got 0"),
    (["train-encoder", "--model", "no/model", *AAPD, "--per_device_eval_batch_size", "-1"],
     "--per_device_eval_batch_size must be at least 1, got -1"),
    (["sft", "--model_name_or_path", "no/model", "--train", "aapd-train", "--gradient_accumulation_steps", "0"],
     "--gradient_accumulation_steps must be at least 1, got 0"),
    (["sft", "--model_name_or_path", "no/model", "--train", "aapd-train", "--per_device_train_batch_size", "0"],
     "--per_device_train_batch_size must be at least 1, got 0"),
    (["zeroshot", "--model", "no/model", "--test", "aapd-test", "--batch_size", "0"],
     "--batch_size must be at least 1, got 0"),
])
def test_a_batch_of_nothing_is_refused_before_the_model_loads(argv, message, capsys, tmp_path):
    """torch refused a batch size of 0 with a traceback once the data was tokenised and the model loaded (a hub id
    that does not exist here would have been tried first: it is never reached)."""
    err = _one_line_error([*argv, "--output_dir", str(tmp_path / "run")], capsys)
    assert err.endswith(message), err


@pytest.mark.parametrize("command", [["zeroshot", "--model", "no/model", "--test", "aapd-test"],
                                     ["sft", "--model_name_or_path", "no/model", "--train", "aapd-train"]])
def test_generation_options_that_contradict_each_other_are_refused_by_zeroshot_and_sft_alike(command, capsys,
                                                                                              tmp_path):
    """sft's evaluation ran `--mode score --constrained true` in score mode where zeroshot refused the pair."""
    out = ["--output_dir", str(tmp_path / "run")]
    err = _one_line_error([*command, "--mode", "score", "--constrained", "true", *out], capsys)
    assert "--constrained applies to --mode generate" in err
    err = _one_line_error([*command, "--per_label_thresholds", "true", *out], capsys)
    assert "--per_label_thresholds applies to --mode score" in err
    # an empty value (an unset shell variable) ran with the option's default: sft's --chat_template_kwargs ""
    err = _one_line_error([*command, "--chat_template_kwargs", "", *out], capsys)
    assert err.endswith("--chat_template_kwargs is empty; leave it out for its default, or give a value")


@pytest.mark.parametrize(("options", "message"), [
    (["--min_labels", "3"], "--min_labels applies to --mode score (generated answers are parsed, not thresholded)"),
    (["--score_ends", "all"], "--score_ends applies to --mode score"),
    (["--constrained", "true", "--mode", "score", "--constrained", "false", "--score_ends", "none"], None),
    (["--stop_off_format", "false"], "--stop_off_format applies to --constrained true"),
    (["--stop_off_format", "false", "--mode", "score"], "--stop_off_format applies to --constrained true"),
    (["--selection", "balanced"], "--selection balanced applies to few-shot prompts (--k > 0)"),
    (["--mode", "score", "--temperature", "0.7"], "--temperature applies to --mode generate (score mode samples"),
    (["--top_p", "0.9"], "--top_p applies to sampling (--temperature > 0) only"),
    (["--backend", "vllm", "--compile_layers", "true"], "--compile_layers applies to the HF backend; vLLM compiles"),
    (["--adapter", ""], "--adapter is empty; leave it out for its default, or give a value"),  # ran without one
    (["--prompt", " "], "--prompt is empty; leave it out for its default"),  # ran the default template
    (["--chat_template_kwargs", ""], "--chat_template_kwargs is empty"),
    (["--backend", "vllm", "--static_cache", "true", "--compile_layers", "true"],
     "--static_cache and --compile_layers apply to the HF backend"),
])
def test_an_option_of_another_mode_is_refused_not_ignored(options, message, capsys, tmp_path):
    """--min_labels in generate mode, --selection without --k, ... changed nothing and said nothing."""
    argv = ["zeroshot", "--model", "no/model", "--test", "aapd-test", *options, "--output_dir", str(tmp_path / "r")]
    if message is None:  # score mode takes --score_ends: the run goes on (notes on its data) to the model, not here
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert "applies to" not in err and "cannot load model no/model" in err, err
    else:
        assert message in _one_line_error(argv, capsys)


def test_save_strategy_no_trains_without_best_checkpoint_selection_and_says_so(capsys):
    """Transformers refused --save_strategy no because of --load_best_model_at_end, a default the user never set;
    without checkpoints there is nothing to go back to, so the run keeps its last weights, said in a note."""
    _, args = parse(encoder.make_parser(), ["--model", "m", *AAPD, "--save_strategy", "no"])
    assert args.load_best_model_at_end is False
    encoder.check_arguments(args, None)
    assert "--save_strategy no saves no checkpoint to go back to" in " ".join(capsys.readouterr().err.split())
    _, args = parse(encoder.make_parser(), ["--model", "m", *AAPD])
    assert args.load_best_model_at_end is True
    encoder.check_arguments(args, None)
    assert "--save_strategy" not in capsys.readouterr().err


@pytest.mark.parametrize(("loss", "metric", "noted"), [("twoway", "eval_loss", True), ("twoway", "micro_f1", False),
                                                    ("bce", "loss", False)])
def test_selecting_checkpoints_by_the_two_way_eval_loss_says_it_depends_on_the_batch(loss, metric, noted, capsys):
    _, args = parse(encoder.make_parser(), ["--model", "m", *AAPD, "--loss", loss, "--metric_for_best_model", metric])
    encoder.check_arguments(args, None)
    said = " ".join(capsys.readouterr().err.split())
    assert ("eval_loss, which selects the checkpoint here, changes with --per_device_eval_batch_size" in said) == noted


def test_a_rerun_into_a_finished_run_of_the_same_command_says_it_replaces_it(tmp_path, capsys):
    out = ["--output_dir", str(tmp_path / "run")]
    assert main(["train-linear", *AAPD, *out]) == 0
    assert "holds a finished" not in capsys.readouterr().err
    assert main(["train-linear", *AAPD, *out]) == 0
    said = " ".join(capsys.readouterr().err.split())
    assert f"note: {tmp_path / 'run'} holds a finished `llmcls train-linear` run: this run replaces it" in said


def test_sft_refuses_a_base_model_inside_the_folders_it_replaces(tmp_path, capsys):
    """Continuing from an earlier run's merged model into the same folder deleted the base before the new adapter,
    which names it, was saved."""
    run = tmp_path / "run"
    (run / "merged").mkdir(parents=True)
    err = _one_line_error(["sft", "--model_name_or_path", str(run / "merged"), "--train", "aapd-train",
                           "--output_dir", str(run)], capsys)
    assert err.endswith(f"--model_name_or_path {run / 'merged'} lies in --output_dir's merged/, which this run "
                        "replaces with its own: copy the model elsewhere, or choose another --output_dir")
