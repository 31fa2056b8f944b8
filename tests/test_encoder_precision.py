"""predict-encoder predicts at the precision its trained run predicted (and tuned its thresholds) at: a run's own test
file gives the scores train-encoder wrote, bf16 weights (--bf16_full_eval) included. Tiny BERT, CPU, a few steps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from tiny_encoders import save_tiny_bert, train_tokenizer

from llmcls.cli import main

AAPD = ["--train", "aapd-train", "--validation", "aapd-validation", "--test", "aapd-test"]
BF16_GPU = torch.cuda.is_available() and torch.cuda.is_bf16_supported()


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory, aapd_rows) -> Path:
    tokenizer = train_tokenizer([row["abstract"] for row in aapd_rows])
    return save_tiny_bert(tokenizer, tmp_path_factory.mktemp("tiny_bert") / "bert")


def train(model: Path, out: Path, *extra: str) -> Path:
    """A few steps, no evaluation during training: only the final predictions matter here."""
    assert main(["train-encoder", *AAPD, "--model", str(model), "--output_dir", str(out), "--max_train_examples",
                 "32", "--max_steps", "4", "--max_length", "64", "--per_device_train_batch_size", "8",
                 "--learning_rate", "1e-3", "--eval_strategy", "no", "--save_strategy", "no", "--disable_tqdm",
                 "true", "--seed", "0", *extra]) == 0
    return out


@pytest.fixture(scope="module")
def bf16_run(tiny_bert, tmp_path_factory) -> Path:
    # trained where predict-encoder will predict; transformers wants --use_cpu for --bf16_full_eval without a bf16 GPU
    on_cpu = [] if BF16_GPU else ["--use_cpu", "true"]
    return train(tiny_bert, tmp_path_factory.mktemp("runs") / "bf16", "--bf16_full_eval", "true", *on_cpu)


@pytest.fixture(scope="module")
def fp32_run(tiny_bert, tmp_path_factory) -> Path:
    return train(tiny_bert, tmp_path_factory.mktemp("runs") / "fp32", "--bf16", "false")


def predict(run: Path, out: Path, *extra: str) -> Path:
    assert main(["predict-encoder", "--run", str(run), "--test", "aapd-test", "--output_dir", str(out), *extra]) == 0
    return out


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]


def scores(run: Path) -> list[list[float]]:
    return [list(record["scores"].values()) for record in records(run)]


def config(run: Path) -> dict:
    return yaml.safe_load((run / "config.yaml").read_text())


def test_predict_encoder_reproduces_a_bf16_full_eval_run(bf16_run, tmp_path):
    assert config(bf16_run)["bf16_full_eval"] is True
    out = predict(bf16_run, tmp_path / "again")
    # the same weights cast the same way on the same inputs: the same numbers, not merely close ones
    assert [r["id"] for r in records(out)] == [r["id"] for r in records(bf16_run)]
    assert scores(out) == scores(bf16_run)
    assert [r["predicted"] for r in records(out)] == [r["predicted"] for r in records(bf16_run)]
    assert json.loads((out / "metrics.json").read_text())["metrics"] == \
        json.loads((bf16_run / "metrics.json").read_text())["metrics"]
    recorded = config(out)
    assert (recorded["bf16_full_eval"], recorded["bf16"], recorded["precision"]) == (True, False, "bf16 weights")


def test_float32_scores_differ_from_the_bf16_runs_and_an_option_overrides_the_run(bf16_run, tmp_path):
    """What the test above guards against: float32 scores of the same weights are not the run's."""
    out = predict(bf16_run, tmp_path / "fp32", "--bf16_full_eval", "false")
    assert scores(out) != scores(bf16_run)
    assert config(out)["precision"] == "float32" and config(out)["bf16_full_eval"] is False


def test_a_run_without_the_precision_keys_keeps_float32_weights(bf16_run, tmp_path):
    """A run written before predict-encoder read them: the earlier default (float32 weights, bf16 autocast where a
    GPU has it)."""
    old = tmp_path / "old"
    shutil.copytree(bf16_run, old)
    kept = {key: value for key, value in config(old).items() if key not in ("bf16", "bf16_full_eval")}
    (old / "config.yaml").write_text(yaml.safe_dump(kept, sort_keys=False))
    out = predict(old, tmp_path / "old-predicted")
    default = predict(bf16_run, tmp_path / "default", "--bf16_full_eval", "false", "--bf16", str(BF16_GPU).lower())
    assert scores(out) == scores(default)
    assert config(out)["precision"] == ("bf16 autocast" if BF16_GPU else "float32")


def test_predict_encoder_reproduces_a_float32_run(fp32_run, tmp_path):
    assert config(fp32_run)["bf16"] is False and config(fp32_run)["bf16_full_eval"] is False
    out = predict(fp32_run, tmp_path / "again")
    assert scores(out) == scores(fp32_run)  # float32 on both sides, even where a GPU would default to autocast
    assert [r["predicted"] for r in records(out)] == [r["predicted"] for r in records(fp32_run)]
    assert config(out)["precision"] == "float32"


def test_a_bf16_autocast_run_predicted_without_a_bf16_gpu_runs_in_float32_with_a_note(fp32_run, tmp_path, capsys,
                                                                                      monkeypatch):
    """A run that predicted under bf16 autocast on a GPU, predicted where none is: float32, and a note saying so."""
    run = tmp_path / "gpu"
    shutil.copytree(fp32_run, run)
    (run / "config.yaml").write_text(yaml.safe_dump(config(run) | {"bf16": True, "use_cpu": False}, sort_keys=False))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    capsys.readouterr()
    out = predict(run, tmp_path / "p")
    said = " ".join("".join(capsys.readouterr()).split())
    assert "predicted under bf16 autocast on a GPU" in said and "prediction runs in float32" in said, said
    assert config(out)["precision"] == "float32"
    assert scores(out) == scores(fp32_run)  # the same weights in float32 on both sides


def test_a_bf16_cpu_run_predicts_in_float32_in_both_commands(tiny_bert, tmp_path):
    """Training under CPU autocast (--use_cpu --bf16) leaves accelerate's autocast wrapper on the model's forward;
    train-encoder's predictions must not run through it, or predict-encoder (float32 on a CPU) gets other scores."""
    run = train(tiny_bert, tmp_path / "cpu-bf16", "--use_cpu", "true", "--bf16", "true")
    out = predict(run, tmp_path / "again")
    assert config(out)["precision"] == "float32"
    assert scores(out) == scores(run)


def test_an_explicit_bf16_replaces_the_runs_bf16_weights():
    """--bf16 given alone asks for autocast over float32 weights: the run's --bf16_full_eval must not override it."""
    from llmcls.encoder_predict import PredictArguments, match_precision

    run = {"bf16_full_eval": True, "bf16": True, "use_cpu": False}
    asked = PredictArguments(run="x", bf16=True)
    match_precision(asked, run)
    assert (asked.bf16, asked.bf16_full_eval) == (True, False)
    both = PredictArguments(run="x", bf16=True, bf16_full_eval=True)  # both given: bf16 weights, autocast off
    match_precision(both, run)
    assert (both.bf16, both.bf16_full_eval) == (False, True)
    inherited = PredictArguments(run="x")
    match_precision(inherited, run)
    assert (inherited.bf16, inherited.bf16_full_eval) == (False, True)
