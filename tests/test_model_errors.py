"""A --model that is not a model is one line in every command; sft's bf16 default; help texts that match defaults."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from conftest import RESOURCES
from tiny_encoders import train_tokenizer

from llmcls.cli import main as cli_main
from llmcls.config import parse
from llmcls.errors import LlmclsError
from llmcls.model_paths import check_model_path

ROOT = Path(__file__).resolve().parents[1]
BF16_GPU = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
COMMANDS = {
    "train-encoder": ["--model", "MODEL", "--train", "aapd-train", "--validation", "aapd-validation",
                      "--max_train_examples", "8", "--max_eval_examples", "8"],
    "zeroshot": ["--model", "MODEL", "--test", "aapd-test", "--max_eval_examples", "4"],
    "sft": ["--model_name_or_path", "MODEL", "--train", "aapd-train", "--max_train_examples", "4"],
}


def not_a_model(kind: str, tmp_path) -> str:
    if kind == "empty folder":
        (tmp_path / "empty").mkdir()
        return str(tmp_path / "empty")
    if kind == "tokenizer only":  # a folder with a model's tokenizer files but no config.json
        train_tokenizer(["a few words of text"]).save_pretrained(tmp_path / "tok")
        return str(tmp_path / "tok")
    if kind == "config only":  # a model's config.json without its tokenizer files
        (tmp_path / "weights").mkdir()
        (tmp_path / "weights" / "config.json").write_text('{"model_type": "bert"}')
        return str(tmp_path / "weights")
    if kind == "missing path":
        return str(tmp_path / "no" / "model")
    if kind == "data file":
        return str(RESOURCES / "aapd-train.jsonl")
    return "no-such-org/no-such-model"  # a hub id that is not cached (the tests run offline)


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(("kind", "reason"), [
    ("empty folder", "not a model folder (no config.json)"),
    ("tokenizer only", "not a model folder (no config.json)"),
    ("config only", "no tokenizer in the folder (none of tokenizer.json, tokenizer_config.json"),
    ("missing path", "no such file or folder"),
    ("data file", "a file, not a model folder"),
    ("hub id", "couldn't find them in the cached files"),
])
def test_a_model_that_cannot_load_is_one_line(command, kind, reason, tmp_path, capsys):
    model = not_a_model(kind, tmp_path)
    argv = [model if value == "MODEL" else value for value in COMMANDS[command]]
    assert cli_main([command, *argv, "--output_dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines()[-1].startswith(f"llmcls {command}: error: cannot load model {model}: "), err
    assert reason in err.splitlines()[-1] and "Traceback" not in err, err


def test_model_folders_adapters_and_hub_ids_pass_the_path_check(tmp_path):
    for name in ("model", "adapter"):
        (tmp_path / name).mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    (tmp_path / "model" / "tokenizer.json").write_text("{}")
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    for name in (str(tmp_path / "model"), str(tmp_path / "adapter"), "org/name", "bert-base-uncased"):
        check_model_path(name)  # left to transformers
    with pytest.raises(LlmclsError, match="no such file or folder"):
        check_model_path(str(tmp_path / "adapter" / "nested" / "missing"))


# ---------------------------------------------------------------------------------------------------- sft's bf16
@pytest.mark.skipif(BF16_GPU, reason="a bf16 GPU keeps TRL's default")
def test_sft_bf16_defaults_off_without_a_bf16_gpu(tmp_path, capsys):
    from llmcls.sft import make_parser

    base = ["--model_name_or_path", "m", "--output_dir", str(tmp_path / "o")]
    assert parse(make_parser(), base)[3].bf16 is False
    assert parse(make_parser(), [*base, "--bf16", "true", "--use_cpu", "true"])[3].bf16 is True  # a flag wins
    config = tmp_path / "sft.yaml"
    config.write_text("bf16: true\nuse_cpu: true\n")
    assert parse(make_parser(), ["--config", str(config), *base])[3].bf16 is True  # so does a YAML key
    with pytest.raises(LlmclsError, match="bf16"):  # asked for on a machine without a bf16 GPU: one line
        parse(make_parser(), [*base, "--bf16", "true"])
    # the CPU recipe runs as its header says, and a missing model is reported as such
    recipe = ROOT / "configs" / "sft_smollm2-135m_lora.yaml"
    assert parse(make_parser(), ["--config", str(recipe), "--output_dir", str(tmp_path)])[3].bf16 is False
    assert cli_main(["sft", "--train", "aapd-train", "--output_dir", str(tmp_path / "run")]) == 2
    assert "--model_name_or_path is required" in capsys.readouterr().err


def test_sft_bf16_default_is_left_to_trl_on_a_bf16_gpu(monkeypatch):
    from llmcls.sft import make_parser

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert make_parser().get_default("bf16") is None  # TRL then turns it on unless --fp16


# ---------------------------------------------------------------------------------------------------- help texts
def option_help(parser, dest: str) -> str:
    """The rendered --help entry of one option, on one line."""
    formatter = parser._get_formatter()
    formatter.add_argument(next(action for action in parser._actions if action.dest == dest))
    return " ".join(formatter.format_help().split())


@pytest.mark.parametrize("module", ["llmcls.sft", "llmcls.encoder"])
def test_sampling_strategy_help_states_the_default_and_every_choice(module):
    import importlib

    parser = importlib.import_module(module).make_parser()
    text = option_help(parser, "train_sampling_strategy")
    assert text.endswith("(default: group_by_length)") and "'random' (default)" not in text, text
    described = text.split("}", 2)[-1]  # past the choices of the option and of its dashed alias
    for choice in ("'group_by_length'", "'random'", "'sequential'", "'batch_rebalance'"):
        assert choice in described, text


def test_sft_bf16_help_states_the_automatic_default():
    from llmcls.sft import make_parser

    text = option_help(make_parser(), "bf16")
    assert "CUDA GPU supports bfloat16" in text and "defaults to `True`" not in text, text


# ---------------------------------------------------------------------------------------------------- adapter files
@pytest.mark.parametrize(("content", "message"), [
    (b"[]", "not a PEFT adapter folder (no readable adapter_config.json)"),  # was a TypeError traceback
    (b'{"r": 8, "base_model_name_or_path": "m\xff"}', "not a PEFT adapter folder"),  # was a UnicodeDecodeError
    (b'{"r": 8}', "adapter_config.json names no base model (base_model_name_or_path): pass --model"),
])
def test_an_adapter_without_a_readable_base_model_is_one_line(tmp_path, content, message):
    from llmcls.backends.loading import base_model_of

    (tmp_path / "adapter_config.json").write_bytes(content)
    with pytest.raises(LlmclsError, match=re.escape(f"{tmp_path}: {message}")):
        base_model_of(str(tmp_path))
