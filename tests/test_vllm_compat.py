"""The vLLM backend where real vLLM differs from what the backend once assumed (a review against vLLM's source, 0.11
to 0.33), on tests/fake_vllm.py's stand-in engine, which refuses what vLLM refuses."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import fake_vllm as fake
import numpy as np
import pytest
from conftest import RESOURCES, read_jsonl
from tiny_llms import PREFIX_LABELS, build_tiny_lora_adapter, label_prompts

from llmcls.backends import LabelConstraint, ModelArguments, load_backend
from llmcls.errors import LlmclsError

LABELS = PREFIX_LABELS


@pytest.fixture(scope="module")
def prompts(backend):
    return label_prompts(backend.tokenizer, read_jsonl(RESOURCES / "aapd-test.jsonl")[:3])


def _vllm(path, **kwargs):
    return load_backend(ModelArguments(model=str(path), backend="vllm", **kwargs))


def _edit_adapter(adapter: Path, **fields) -> Path:
    config_path = adapter / "adapter_config.json"
    config_path.write_text(json.dumps(json.loads(config_path.read_text()) | fields))
    return adapter


@pytest.mark.parametrize("version", ["0.20.0", "0.19.0"])
def test_vllm_without_counted_logprob_token_ids_is_refused_at_load(tiny_dir, monkeypatch, version):
    """0.20 has logprob_token_ids but returns no log-probabilities for them (score mode crashed on None); 0.19 has
    none (the whole-vocabulary fallback built ~10 GB of Python objects per batch). The extra asks for 0.21."""
    fake.install(monkeypatch, version=version)
    with pytest.raises(LlmclsError, match=re.escape(f"vLLM {version}")):
        _vllm(tiny_dir)
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^vllm = \["vllm>=0\.21,<1"\]', pyproject, re.MULTILINE)


def test_score_requests_keep_to_the_logprob_token_ids_cap(tiny_dir, backend, prompts, monkeypatch):
    """vLLM refuses lists longer than MAX_LOGPROB_TOKEN_IDS (128): a trie node's tokens go in several requests."""
    engines = fake.install(monkeypatch)
    monkeypatch.setattr(sys.modules["vllm.sampling_params"], "MAX_LOGPROB_TOKEN_IDS", 3)
    engine = _vllm(tiny_dir)
    for kwargs in ({}, {"separator": ", ", "ends": "all"}):
        np.testing.assert_allclose(engine.score(prompts, LABELS, **kwargs), backend.score(prompts, LABELS, **kwargs),
                                   atol=1e-4)
    assert max(len(p.logprob_token_ids) for _, p in engines[0].requests) == 3


def test_load_in_4bit_is_refused_where_vllm_has_no_bitsandbytes(tiny_dir, monkeypatch):
    fake.install(monkeypatch, version="0.33.0")
    with pytest.raises(LlmclsError, match=r"bitsandbytes.*--backend hf"):
        _vllm(tiny_dir, load_in_4bit=True)
    engines = fake.install(monkeypatch, version="0.24.0")  # still there
    _vllm(tiny_dir, load_in_4bit=True)
    assert engines[0].engine_args["quantization"] == "bitsandbytes"


@pytest.mark.parametrize("fields", [{"use_dora": True}, {"bias": "lora_only"}, {"modules_to_save": ["lm_head"]},
                                    {"r": 600}])
def test_adapters_vllm_cannot_load_are_refused_at_load(tiny_dir, tmp_path, monkeypatch, fields):
    adapter = _edit_adapter(build_tiny_lora_adapter(tiny_dir, tmp_path / "adapter"), **fields)
    fake.install(monkeypatch)
    with pytest.raises(LlmclsError, match=rf"{next(iter(fields))}.*llmcls sft --merge"):
        load_backend(ModelArguments(adapter=str(adapter), backend="vllm"))


def test_lora_rank_counts_rank_pattern_and_vllm_sizes(tiny_dir, tmp_path, prompts, monkeypatch):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from llmcls.backends.loading import peft_wrapping

    with peft_wrapping():
        peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_dir), LoraConfig(
            r=1, rank_pattern={"q_proj": 20}, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    peft_model.save_pretrained(tmp_path / "patterned")
    engines = fake.install(monkeypatch)
    engine = load_backend(ModelArguments(adapter=str(tmp_path / "patterned"), backend="vllm"))
    assert engines[0].engine_args["max_lora_rank"] == 32
    engine.score(prompts[:1], LABELS)  # the engine takes the adapter
    load_backend(ModelArguments(adapter=str(_edit_adapter(tmp_path / "patterned", rank_pattern={})), backend="vllm"))
    assert engines[1].engine_args["max_lora_rank"] == 1  # vLLM's sizes: 1, 8, 16, ..., 256, 320, 512


def test_mistral_format_folders_keep_the_hf_tokenizer(tiny_dir, backend, prompts, tmp_path, monkeypatch):
    """tokenizer_mode "auto" gives official Mistral repos vLLM's own tokenizer, without the HF attributes used here."""
    folder = shutil.copytree(tiny_dir, tmp_path / "mistral")
    (folder / "tekken.json").write_text("{}")  # and Mistral-format weights, which vLLM's check looks for too
    shutil.copy(folder / "model.safetensors", folder / "consolidated.safetensors")
    engines = fake.install(monkeypatch)
    engine = _vllm(folder)
    assert engines[0].engine_args["tokenizer_mode"] == "hf"
    assert engine.tokenizer.chat_template == backend.tokenizer.chat_template
    assert engine.count_tokens(prompts) == backend.count_tokens(prompts)


def test_answers_cut_by_max_tokens_hold_whole_labels(tiny_dir, prompts, monkeypatch):
    """A structured answer that max_tokens cuts ends at its last whole label: neither "cs.I" nor "math" on the way
    to "math.IT". Greedy answers are deterministic, so a cut answer is a run of the full answer's first labels."""
    fake.install(monkeypatch)
    monkeypatch.setattr(fake.LLM, "ignore_end", True)  # answers never end early: every budget below cuts them
    engine = _vllm(tiny_dir)
    constraint = LabelConstraint(LABELS, ", ", max_labels=4)
    full = [text.split(", ") for text in engine.generate(prompts, max_new_tokens=40, constraint=constraint)]
    for budget in range(1, 10):
        for text, items in zip(engine.generate(prompts, max_new_tokens=budget, constraint=constraint), full,
                               strict=True):
            assert text in {", ".join(items[:k]) for k in range(len(items) + 1)}, (budget, text, items)

    from llmcls.backends.vllm import _whole_labels

    for cut, whole in [("cs.LG, math", "cs.LG"), ("cs.LG, math-ph", "cs.LG, math-ph"), ("cs.LG,", "cs.LG"),
                       ("cs.LG, cs.I", "cs.LG"), ("cs", ""), ("cs.AI", "cs.AI")]:
        assert _whole_labels(cut, constraint) == whole
    assert _whole_labels(" cs.AI, stat", LabelConstraint(LABELS, ", ", prefix=" ")) == " cs.AI"


def test_the_engines_context_bounds_prompts(tiny_dir, monkeypatch):
    fake.install(monkeypatch)
    assert _vllm(tiny_dir, max_model_len=256).max_positions == 256  # prompts are fitted to it (task.Task)
    assert _vllm(tiny_dir).max_positions == 4096  # the model's own
