"""`llmcls sft` and `llmcls train-encoder` around the Trainer: a run resumed mid-epoch ends as the uninterrupted run
does with the default sampler (batches grouped by length), and option combinations that TRL or the Trainer would
refuse only with a traceback, after the data is tokenised or at the first evaluation, are refused up front in one
line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import RESOURCES, read_jsonl
from safetensors.torch import load_file
from tiny_encoders import save_tiny_bert
from tiny_encoders import train_tokenizer as train_wordpiece

from llmcls import sft
from llmcls.cli import main as cli_main
from llmcls.config import parse
from llmcls.sampling import EpochSeededLengthGroupedSampler

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    tokenizer = train_wordpiece([r["abstract"] for r in read_jsonl(RESOURCES / "aapd-train.jsonl")])
    return save_tiny_bert(tokenizer, tmp_path_factory.mktemp("tiny") / "bert")


def different_rng_state(seed: int) -> None:
    """Leave the global RNGs somewhere else than a fresh process's, as a resumed process's are."""
    torch.manual_seed(seed)
    torch.rand(seed)


# ---------------------------------------------------------------------------------------------- resuming
def test_the_grouped_order_depends_on_the_seed_and_the_epoch_only():
    lengths = [(i * 37) % 101 + 1 for i in range(40)]
    orders = []
    for state in (1, 2):
        different_rng_state(state)
        sampler = EpochSeededLengthGroupedSampler(4, lengths, seed=7)
        sampler.set_epoch(1)
        orders.append(list(sampler))
    assert orders[0] == orders[1] and sorted(orders[0]) == list(range(40))
    sampler.set_epoch(0)
    assert list(sampler) != orders[0]  # a new order each epoch
    assert list(EpochSeededLengthGroupedSampler(4, lengths, seed=8)) != list(sampler)


def test_sft_resumed_in_its_second_epoch_ends_with_the_uninterrupted_weights(tiny_llama, tmp_path):
    """8 rows, batches of 2, 2 epochs, resumed from step 6 of 8 (default sampler): the Trainer's LengthGroupedSampler
    drew epoch 2's order from the global RNG, whose state differs after a resume, and trained other batches."""
    def run(out: Path, *extra: str) -> dict:
        argv = ["sft", "--model_name_or_path", str(tiny_llama), "--train", "aapd-train", "--max_train_examples", "8",
                "--output_dir", str(out), "--prompt", "compact", "--max_length", "1024", "--bf16", "false",
                "--activation_checkpointing", "false", "--report_to", "none", "--dataloader_num_workers", "0",
                "--use_peft", "true", "--lora_r", "4", "--lora_alpha", "8", "--learning_rate", "1e-2",
                "--per_device_train_batch_size", "2", "--num_train_epochs", "2", "--save_strategy", "steps",
                "--save_steps", "6", "--skip_eval", "true", "--keep_checkpoints", "true", *extra]
        assert cli_main(argv) == 0
        return load_file(str(out / "adapter" / "adapter_model.safetensors"))

    full = run(tmp_path / "full")
    (tmp_path / "resumed").mkdir()
    shutil.copytree(tmp_path / "full" / "checkpoint-6", tmp_path / "resumed" / "checkpoint-6")
    different_rng_state(3)
    resumed = run(tmp_path / "resumed", "--resume_from_checkpoint", "true")
    assert full.keys() == resumed.keys()
    assert max((full[name] - resumed[name]).abs().max().item() for name in full) < 1e-6


def encoder_argv(model: Path, out: Path, batch_size: int) -> list[str]:
    """32 rows, 2 epochs of 32 / batch_size steps, a checkpoint at step 6 (in epoch 2 with batches of 8)."""
    return ["--model", str(model), "--train", "aapd-train", "--validation", "aapd-validation", "--max_train_examples",
            "32", "--max_eval_examples", "16", "--output_dir", str(out), "--max_length", "64",
            "--per_device_train_batch_size", str(batch_size), "--num_train_epochs", "2", "--learning_rate", "1e-3",
            "--eval_strategy", "no", "--save_strategy", "steps", "--save_steps", "6", "--save_total_limit", "2",
            "--keep_checkpoints", "true", "--disable_tqdm", "true", "--report_to", "none"]


def resume_from_step_6(tmp_path: Path, train) -> None:
    """`train(out, *extra)` uninterrupted, then resumed from a copy of its checkpoint-6: the same final weights."""
    full = tmp_path / "full"
    train(full)
    (tmp_path / "resumed").mkdir()
    shutil.copytree(full / "checkpoint-6", tmp_path / "resumed" / "checkpoint-6")
    different_rng_state(3)
    train(tmp_path / "resumed", "--resume", "true")
    weights = [load_file(str(out / "model" / "model.safetensors")) for out in (full, tmp_path / "resumed")]
    assert max((weights[0][name] - weights[1][name]).abs().max().item() for name in weights[0]) < 1e-6


def test_encoder_resumed_in_its_second_epoch_ends_with_the_uninterrupted_weights(tiny_bert, tmp_path):
    def train(out: Path, *extra: str) -> None:
        assert cli_main(["train-encoder", *encoder_argv(tiny_bert, out, 8), *extra]) == 0

    resume_from_step_6(tmp_path, train)


def test_encoder_resumed_under_ddp_ends_with_the_uninterrupted_weights(tiny_bert, tmp_path):
    """Two processes (gloo on CPU), 4 rows each a step: the loader of the epoch a run resumes in wraps the sampler
    too deeply for accelerate's set_epoch to reach it (`SeededLengthGrouping._run_epoch` sets it)."""
    def train(out: Path, *extra: str) -> None:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                   "-m", "llmcls.encoder", "--use_cpu", "true", *encoder_argv(tiny_bert, out, 4), *extra]
        result = subprocess.run(command, capture_output=True, text=True, env=os.environ | {"OMP_NUM_THREADS": "1"},
                                timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]

    resume_from_step_6(tmp_path, train)


# ---------------------------------------------------------------------------------------------- options
BASE = ["--model_name_or_path", "some/model", "--train", "aapd-train", "--bf16", "false", "--use_peft", "true"]


@pytest.mark.parametrize(("extra", "message"), [
    (["--padding_free", "true"], "--padding_free true without --packing leaves --max_length 1024 unenforced"),
    (["--eval_strategy", "steps", "--eval_steps", "1"], "--eval_strategy steps evaluates on a validation split"),
    (["--eval_strategy", "epoch"], "--eval_strategy epoch evaluates on a validation split"),
    (["--lora_target_modules", ".*(q_proj|lm_head)"], "a LoRA on lm_head is not trained by TRL's loss"),
    (["--lora_target_modules", "q_proj", "lm_head"], "a LoRA on lm_head is not trained by TRL's loss"),
    (["--validation", "aapd-validation", "--eval_strategy", "steps", "--load_best_model_at_end", "true",
      "--save_strategy", "steps", "--metric_for_best_model", "eval_gen_micro_f1"],
     "--metric_for_best_model eval_gen_micro_f1 is measured only with --generate_at_eval"),
    (["--validation", "aapd-validation", "--eval_strategy", "epoch", "--metric_for_best_model", "gen_macro_f1"],
     "--metric_for_best_model gen_macro_f1 is measured only with --generate_at_eval"),
    (["--load_in_4bit", "true"], "needs a CUDA GPU and bitsandbytes"),
])
def test_sft_refuses_before_reading_the_data(extra, message, tmp_path, monkeypatch, capsys):
    def no_data(*args, **kwargs):
        raise AssertionError("the data was read before the options were checked")

    monkeypatch.setattr(sft, "load_corpus", no_data)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli_main(["sft", *BASE, "--output_dir", str(tmp_path / "run"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err.splitlines()[-1] and "Traceback" not in err, err


@pytest.mark.parametrize("extra", [
    ["--padding_free", "true", "--max_length", "null"],
    ["--padding_free", "true", "--packing", "true"],
    ["--lora_target_modules", r".*\.(q_proj|v_proj)"],
    ["--lora_target_modules", "all-linear"],
    ["--lora_modules_to_save", "lm_head"],
    ["--eval_strategy", "steps", "--split_ratios", "0.8,0.2"],
    ["--validation", "aapd-validation", "--eval_strategy", "steps", "--generate_at_eval", "4",
     "--metric_for_best_model", "eval_gen_micro_f1"],
])
def test_sft_accepts_what_trains(extra, tmp_path):
    data_args, script_args, _, training_args, model_args = parse(sft.make_parser(), [
        *BASE, "--output_dir", str(tmp_path / "run"), *extra])
    sft.check_options(training_args, model_args, script_args)
    sft.check_evaluation(data_args, training_args, script_args)


def test_on_a_gpu_both_trainers_copy_pinned_batches_without_blocking(tmp_path, monkeypatch):
    """A blocking copy of each batch waits for the previous step's kernels, so the host cannot queue the next step
    meanwhile (the one wait per step of train-encoder's H200 profile). No GPU here: torch is told there is one, and
    the Trainer's own set-up (which would open the device) is left out."""
    from transformers import TrainingArguments

    from llmcls.encoder_args import EncoderArguments

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(TrainingArguments, "__post_init__", lambda self: None)
    monkeypatch.setattr(sft, "bf16_gpu", lambda: False)
    encoder = EncoderArguments(output_dir=str(tmp_path), model="m", bf16=False)
    assert encoder.accelerator_config == {"non_blocking": True} and encoder.dataloader_pin_memory
    chosen = EncoderArguments(output_dir=str(tmp_path), model="m", bf16=False,
                              accelerator_config={"split_batches": True})
    assert chosen.accelerator_config == {"split_batches": True}  # a user's own choice stands
    parser = sft.make_parser()
    assert parser.get_default("accelerator_config") == {"non_blocking": True}
    assert parser.get_default("dataloader_pin_memory") is True
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # no GPU: nothing to pin, nothing asked
    assert EncoderArguments(output_dir=str(tmp_path), model="m", bf16=False).accelerator_config is None
    assert sft.make_parser().get_default("accelerator_config") is None
