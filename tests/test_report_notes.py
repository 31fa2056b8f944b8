"""What `llmcls compare` says beside its tables: unfinished runs it leaves out, how the runs were not scored alike
(naming only what differs), and what --out writes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from report_runs import CONFIG, LABELS, gold_matrix, make_runs, write_run

from llmcls.errors import LlmclsError
from llmcls.labels import LabelSpace
from llmcls.report import REPORT_SUFFIXES, main, make_parser
from llmcls.report_data import find_runs


def interrupted(finished, path, kept: int):
    """A generative run killed while predicting: config.yaml, labels.json and the first `kept` predictions."""
    shutil.copytree(finished, path)
    (path / "metrics.json").unlink()
    lines = (path / "predictions.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (path / "predictions.jsonl").write_text("".join(lines[:kept]), encoding="utf-8")
    return path


def test_an_unfinished_run_in_a_folder_is_named_in_a_note(tmp_path, capsys):
    cmp = tmp_path / "cmp"
    linear, zeroshot, bare = make_runs(cmp)
    stopped = interrupted(zeroshot, cmp / "zs-interrupted", 8)
    interrupted(zeroshot, cmp / ".zs.previous", 3)  # the benchmark's kept run: hidden, never named
    (cmp / "data").mkdir()  # the benchmark's row slices: not a run, whatever it holds
    (cmp / "data" / "config.yaml").write_text("test: aapd-test\n", encoding="utf-8")
    (cmp / "notes").mkdir()  # a folder with nothing of a run: not named
    (cmp / "notes" / "todo.txt").write_text("x", encoding="utf-8")
    failed = cmp / "sft-failed"  # a benchmark's system that failed while training
    (failed / "checkpoint-10").mkdir(parents=True)
    (failed / "checkpoint-20").mkdir()
    (failed / "benchmark.json").write_text(json.dumps({"status": "failed"}), encoding="utf-8")
    (failed / "error.log").write_text("Traceback ...", encoding="utf-8")
    left_out: list[str] = []
    assert find_runs([cmp], None, left_out) == [bare, linear, zeroshot]
    assert left_out == [
        f"{failed}: failed (checkpoints up to checkpoint-20, no metrics.json; see its error.log, then rerun the "
        "benchmark to resume)",
        f"{stopped}: unfinished (8 predictions, no metrics.json; rerun its command to resume)"]
    capsys.readouterr()
    assert main([str(cmp)]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert f"note: left out: {stopped}: unfinished (8 predictions, no metrics.json; rerun its command to resume)" \
        in err
    assert ".zs.previous" not in err and f"{cmp / 'data'}" not in err and "notes" not in err


def test_an_unfinished_run_below_a_run_or_named_alone_is_described(tmp_path):
    linear, zeroshot, _ = make_runs(tmp_path / "runs")
    below = interrupted(zeroshot, linear / "predict-new", 0)
    (below / "predictions.validation.jsonl").write_text((zeroshot / "predictions.jsonl").read_text())
    (below / "checkpoint-3").mkdir()
    left_out: list[str] = []
    assert find_runs([linear], None, left_out) == [linear]
    assert left_out == [f"{below}: unfinished (0 predictions in predictions.jsonl, 40 in "
                        "predictions.validation.jsonl, checkpoint-3, no metrics.json; rerun its command with "
                        "--resume (sft: --resume_from_checkpoint true) to resume)"]
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(zeroshot / "config.yaml", alone)
    with pytest.raises(LlmclsError) as caught:  # still an error, which now says what the folder holds
        find_runs([alone])
    assert str(caught.value) == (f"{alone}: not a finished run directory (no metrics.json in it or below it); "
                                 f"{alone}: unfinished (no predictions, no metrics.json; rerun its command)")


def sized_runs(root, sizes, splits=None, tests=None):
    space, gold = LabelSpace(LABELS), gold_matrix(np.random.default_rng(0))
    splits, tests = splits or ["test"] * len(sizes), tests or ["aapd-test"] * len(sizes)
    return [write_run(root / name, space, gold[:n], gold[:n], system="s", model="m", timing={}, split=split,
                      primary=split, config={**CONFIG, split: test})
            for (name, n), split, test in zip(sizes, splits, tests, strict=True)]


def notes_of(paths, capsys, out=None) -> str:
    capsys.readouterr()
    assert main([*map(str, paths), *(["--out", str(out), "--no_plots"] if out else [])]) == 0
    return " ".join(capsys.readouterr().err.split())


def test_runs_of_one_split_and_file_but_other_sizes_are_said_to_differ_in_examples_only(tmp_path, capsys):
    paths = sized_runs(tmp_path, [("enc", 6), ("pe-unseen", 5), ("zs-smol", 24)])
    err = notes_of(paths, capsys, out=tmp_path / "report")
    note = ("the runs were scored on different numbers of examples: enc: 6; pe-unseen: 5; zs-smol: 24 (test split of "
            "each)")
    assert f"note: {note}" in err
    assert "differ in the evaluated split" not in err and "evaluated file" not in err
    markdown = " ".join((tmp_path / "report.md").read_text(encoding="utf-8").split())
    assert note in markdown and "differ in the evaluated split" not in markdown  # report.md's Notes
    same = sized_runs(tmp_path / "same", [("big", 40), ("small", 10), ("big2", 40)])
    assert ("note: the runs were scored on different numbers of examples: big, big2: 40; small: 10 (test split of "
            "each)") in notes_of(same, capsys)


def test_runs_of_other_splits_or_files_name_that_difference_only(tmp_path, capsys):
    paths = sized_runs(tmp_path / "splits", [("a", 20), ("b", 20)], splits=["test", "validation"])
    err = notes_of(paths, capsys)
    assert "note: the runs differ in the evaluated split (a: test; b: validation): their rows are not scored alike" \
        in err
    assert "numbers of examples" not in err
    paths = sized_runs(tmp_path / "files", [("a", 20), ("b", 20)], tests=["aapd-test", "other.jsonl"])
    err = notes_of(paths, capsys)
    assert "note: the runs differ in the evaluated file (a: aapd-test; b: other.jsonl): their rows are not scored " \
           "alike" in err
    assert "differ in the evaluated split" not in err and "numbers of examples" not in err
    paths = sized_runs(tmp_path / "both", [("a", 20), ("b", 10)], splits=["test", "validation"])
    err = notes_of(paths, capsys)  # the split and the size differ: both named, no shared split claimed
    assert "the runs differ in the evaluated split (a: test; b: validation)" in err
    assert "the runs were scored on different numbers of examples: a: 20; b: 10:" not in err
    assert "the runs were scored on different numbers of examples: a: 20; b: 10" in err and "split of each" not in err


def test_out_help_lists_the_files_it_writes():
    out = next(action for action in make_parser()._actions if action.dest == "out")
    assert out.metavar == "PREFIX" and "docstring" not in out.help and "--no_plots" in out.help
    for suffix in REPORT_SUFFIXES:
        assert suffix in out.help


def test_runs_finished_without_metrics_are_not_called_unfinished(tmp_path):
    """predict-encoder on a file without gold labels and sft --skip_eval end without metrics.json by design: they
    were named "unfinished ... rerun its command" (which retrains an sft run)."""
    linear, zeroshot, _ = make_runs(tmp_path / "runs")
    unlabelled = interrupted(zeroshot, tmp_path / "runs" / "predict-unlabelled", 3)
    (unlabelled / "config.yaml").write_text(f"trained_run: {linear}\n", encoding="utf-8")
    skipped = tmp_path / "runs" / "sft-trained"
    (skipped / "adapter").mkdir(parents=True)
    (skipped / "config.yaml").write_text("system: sft\nskip_eval: true\n", encoding="utf-8")
    crashed = interrupted(zeroshot, tmp_path / "runs" / "sft-crashed", 2)  # its evaluation stopped, adapter saved
    (crashed / "config.yaml").write_text("system: sft\nskip_eval: false\n", encoding="utf-8")
    (crashed / "adapter").mkdir()
    left_out: list[str] = []
    find_runs([tmp_path / "runs"], None, left_out)
    assert left_out == [
        f"{crashed}: unfinished (2 predictions, no metrics.json; `llmcls zeroshot --adapter {crashed / 'adapter'}` "
        "evaluates it, or rerun its command to train again)",
        f"{skipped}: trained, not evaluated (--skip_eval true): `llmcls zeroshot --adapter {skipped / 'adapter'}` "
        "evaluates it"]


def test_copies_of_one_file_in_two_benchmark_folders_are_one_evaluated_file(tmp_path, capsys):
    """Two benchmarks slice the same rows into their own data/test.jsonl: compare said the runs "differ in the
    evaluated file", which only a file of other rows means."""
    rows = "".join(json.dumps({"id": str(i), "abstract": "a", "labels": ["cs.IT"]}) + "\n" for i in range(3))
    first, second, other = (tmp_path / name / "data" / "test.jsonl" for name in ("one", "two", "three"))
    for path, text in ((first, rows), (second, rows), (other, rows.replace("cs.IT", "cs.LG"))):
        path.parent.mkdir(parents=True)
        path.write_text(text)
    paths = sized_runs(tmp_path / "copies", [("a", 20), ("b", 20)], tests=[str(first), str(second)])
    assert "evaluated file" not in notes_of(paths, capsys)
    paths = sized_runs(tmp_path / "other", [("a", 20), ("b", 20)], tests=[str(first), str(other)])
    assert f"the runs differ in the evaluated file (a: {first}; b: {other})" in notes_of(paths, capsys)


def test_splits_carved_from_other_training_files_are_other_evaluated_files(tmp_path, capsys):
    """Runs whose test rows --split_ratios carved from two different --train files recorded no test file, and compare
    said nothing of it (only, at times, other numbers of examples)."""
    space, gold = LabelSpace(LABELS), gold_matrix(np.random.default_rng(0))

    def carved(name, train, seed=42, ratios="0.8,0.1,0.1"):
        config = {**CONFIG, "train": train, "validation": None, "test": None, "split_ratios": ratios,
                  "split_seed": seed}
        return write_run(tmp_path / name, space, gold[:20], gold[:20], system="s", model="m", timing={},
                         config=config)

    snapshot, abstracts = carved("snap", "aapd-train"), carved("abs", "aapd-validation")
    said = notes_of([snapshot, abstracts], capsys)
    assert ("the runs differ in the evaluated file (snap: aapd-train, its test split by --split_ratios 0.8,0.1,0.1 "
            "--split_seed 42; abs: aapd-validation, its test split by --split_ratios 0.8,0.1,0.1 --split_seed 42)"
            ) in said, said
    assert "evaluated file" not in notes_of([snapshot, carved("again", "aapd-train")], capsys)
    assert "evaluated file" not in notes_of([snapshot, carved("spelt", "aapd-train", ratios=".8,.1,.1")], capsys)
    assert "evaluated file" in notes_of([snapshot, carved("seed", "aapd-train", seed=1)], capsys)


def test_a_resumed_run_says_its_train_time_is_the_part_after_the_resume(tmp_path, capsys):
    """A run stopped at step 2 and resumed showed 15.6 s of training beside the 27.9 s of the same run made at once,
    with no mark (train-encoder records the step in timing, sft beside it)."""
    space, gold = LabelSpace(LABELS), gold_matrix(np.random.default_rng(0))
    runs = [write_run(tmp_path / "once", space, gold, gold, system="s", model="m", timing={"train_s": 27.9},
                      config=CONFIG),
            write_run(tmp_path / "enc", space, gold, gold, system="s", model="m", config=CONFIG,
                      timing={"train_s": 15.6, "resumed_from_step": 2}),
            write_run(tmp_path / "sft", space, gold, gold, system="s", model="m", config=CONFIG,
                      timing={"train_s": 15.6}, extra={"resumed_from_step": 2})]
    said = notes_of(runs, capsys)
    for name in ("enc", "sft"):
        assert f"note: {name}: resumed from step 2: its train time counts only the training after the resume" in said
    assert "once: resumed" not in said
