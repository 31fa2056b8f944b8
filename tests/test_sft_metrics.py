"""sft's trainer keeps TRL's per-step logged numbers (entropy, mean token accuracy, tokens seen) on the device until
the next log (`sft_trainer.DeferredMetrics`): the loss, the weights and every logged value must be TRL's own."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import llmcls.sft as sft
import llmcls.sft_data as sft_data
import llmcls.sft_trainer as sft_trainer
from llmcls.config import parse
from llmcls.corpus import load_corpus

TIMING = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "eval_runtime",
          "eval_samples_per_second", "eval_steps_per_second")


def _train(model: Path, out: Path, *extra: str) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """Four LoRA steps, logged at step 3 and evaluated at steps 2 and 4 (so numbers are pending across an
    evaluation): (log history without timings, LoRA weights)."""
    argv = ["--model_name_or_path", str(model), "--train", "aapd-train", "--validation", "aapd-validation",
            "--max_train_examples", "16", "--max_eval_examples", "4", "--output_dir", str(out), "--max_steps", "4",
            "--per_device_train_batch_size", "4", "--bf16", "false", "--activation_checkpointing", "false",
            "--report_to", "none", "--logging_steps", "3", "--eval_strategy", "steps", "--eval_steps", "2",
            "--save_strategy", "no", "--use_peft", "true", "--lora_r", "4", "--lora_alpha", "8",
            "--learning_rate", "5.0e-2", "--dataloader_num_workers", "0", "--max_length", "2048", "--prompt",
            "compact", "--seed", "0", *extra]
    data_args, script_args, _, training_args, model_args = parse(sft.make_parser(), argv)
    corpus = load_corpus(data_args, required=("train",))
    tokenizer = sft_data.load_training_tokenizer(model_args, training_args)
    train = sft_data.build_sft_dataset(corpus, "train", tokenizer, script_args, training_args)
    evaluation = sft_data.build_sft_dataset(corpus, "validation", tokenizer, script_args, training_args)
    trainer = sft_trainer.make_trainer(model_args, training_args, tokenizer, train, evaluation)
    trainer.train()
    history = [{k: v for k, v in entry.items() if k not in TIMING} for entry in trainer.state.log_history]
    weights = {name: p.detach().clone() for name, p in trainer.model.named_parameters() if "lora_" in name}
    return history, weights


@pytest.mark.parametrize("extra", [(), ("--padding_free", "true", "--packing", "true")], ids=["padded", "packed"])
def test_deferred_metrics_log_what_trl_logs(tiny_llama, tmp_path, monkeypatch, extra):
    deferred_class = sft_trainer.DeferredMetrics
    plain, decide = [], deferred_class._plain_loss
    monkeypatch.setattr(deferred_class, "_plain_loss", lambda self, r: plain.append(decide(self, r)) or plain[-1])
    deferred, deferred_weights = _train(tiny_llama, tmp_path / "deferred", *extra)
    assert plain.count(True) == 4 and plain.count(False) == 2  # the training steps deferred, the evaluations TRL's
    for name in ("compute_loss", "log"):  # TRL's own methods, which read the numbers back every step
        monkeypatch.delattr(sft_trainer.DeferredMetrics, name)
    stock, stock_weights = _train(tiny_llama, tmp_path / "stock", *extra)
    assert len(deferred) == len(stock) == 1 + 2 + 1  # the log at step 3, two evaluations, the summary
    for ours, theirs in zip(deferred, stock, strict=True):
        assert ours.keys() == theirs.keys()
        assert ours == pytest.approx(theirs, rel=0, abs=0), (ours, theirs)
    assert {"entropy", "mean_token_accuracy", "num_tokens"} <= deferred[1].keys()  # step 3's log
    assert 0 < deferred[0]["eval_num_tokens"] < deferred[1]["num_tokens"]  # evaluated after 2 steps' tokens
    for name, value in stock_weights.items():
        assert torch.equal(deferred_weights[name], value), name
