"""Every shipped recipe parses with the parser of the command its header names (typos must not pass)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from llmcls.cli import COMMANDS, command_module
from llmcls.config import parse

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "configs").glob("*.yaml"))


def command_of(recipe: Path) -> str:
    """The command in the recipe's header comment: `#   llmcls <command> --config configs/<name>.yaml`."""
    match = re.search(r"^#\s+llmcls ([\w-]+) --config", recipe.read_text(), flags=re.MULTILINE)
    assert match, f"{recipe.name}: the header must show the launch command"
    return match.group(1)


def test_there_are_recipes():
    assert RECIPES


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_parses(recipe):
    command = command_of(recipe)
    assert command in COMMANDS, f"{recipe.name} names unknown command {command!r}"
    module = command_module(command)
    argv = ["--config", str(recipe)]
    if re.search(r"^bf16: true", recipe.read_text(), flags=re.MULTILINE):
        argv += ["--bf16", "false"]  # GPU recipes: transformers refuses bf16 at parse time on this CPU-only machine
    parsed = parse(module.make_parser(), argv)
    assert parsed  # dataclass instances built from the YAML keys


ACCELERATE = sorted((ROOT / "accelerate_configs").glob("*.yaml"))


@pytest.mark.parametrize("path", ACCELERATE, ids=lambda p: p.name)
def test_accelerate_config_loads(path):
    """accelerate's own loader builds a dataclass from the file: an unknown key is a TypeError."""
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    assert config.num_machines >= 1 and config.mixed_precision == "bf16"
    assert "accelerate launch --config_file accelerate_configs/" in path.read_text()  # the header shows the launch


def test_changed_options_name_what_a_resumed_run_would_change():
    from llmcls.config import NOT_RECORDED, changed_options, describe_changes

    old = {"model": "a", "k": 5, "batch_size": 8}
    new = {"model": "b", "k": 5, "batch_size": 16, "seed": None, "mode": "score", "x": 1, "y": 2}
    changed = changed_options(old, new, ignore={"batch_size"})
    # seed: unknown to the earlier run and unset now, no change
    assert changed == [("model", "a", "b"), ("mode", NOT_RECORDED, "score"), ("x", NOT_RECORDED, 1),
                       ("y", NOT_RECORDED, 2)]
    assert describe_changes(changed, absent="(not set)") == ("model: 'a' -> 'b', mode: (not set) -> 'score', x: (not "
                                                             "set) -> 1, and 1 more")


@pytest.mark.parametrize(("command", "yaml_text", "message"), [
    # YAML reads an unquoted off as false: a KeyError traceback deep in the run, after config.yaml was written
    ("zeroshot", "chat: off\n", "field 'chat': False is not one of auto, on, off (YAML reads unquoted on/off/yes/no "
                                "as true/false: quote the value)"),
    ("zeroshot", "selection: nearest\n", "field 'selection': 'nearest' is not one of knn, random, balanced"),
    ("data", "label_level: Archive\n", "field 'label_level': 'Archive' is not one of category, archive"),  # was read
    ("train-encoder", "loss: twoway2\n", "field 'loss': 'twoway2' is not one of twoway, bce"),     # as category
])
def test_a_config_file_value_outside_an_options_choices_is_one_line(tmp_path, capsys, command, yaml_text, message):
    from llmcls.cli import main

    config = tmp_path / "recipe.yaml"
    config.write_text(yaml_text)
    argv = {"zeroshot": ["zeroshot", "--model", "m", "--test", "aapd-test"],
            "data": ["data", "stats", "aapd-test"],
            "train-encoder": ["train-encoder", "--model", "m", "--train", "aapd-train"]}[command]
    output = [] if command == "data" else ["--output_dir", str(tmp_path / "run")]
    assert main([*argv, "--config", str(config), *output]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"error: {config}: {message}") and "\n" not in err, err
    assert not (tmp_path / "run").exists()
    if command == "zeroshot" and "off" in yaml_text:  # quoted, the same value is taken
        config.write_text('chat: "off"\n')
        parsed = parse(command_module("zeroshot").make_parser(), ["--config", str(config), "--model", "m"])
        assert parsed[2].chat == "off"
