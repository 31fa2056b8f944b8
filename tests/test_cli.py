"""The command line end to end on the bundled sample: help, data, train-linear, evaluate, compare, errors."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from llmcls.cli import COMMANDS, main
from llmcls.labels import LabelSpace
from llmcls.metrics import compute_metrics
from llmcls.runs import RunDir

AAPD = ["--train", "aapd-train", "--validation", "aapd-validation", "--test", "aapd-test"]


def test_top_level_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, (_, description) in COMMANDS.items():
        assert name in out and description in out


@pytest.mark.parametrize("command", [["data", "list"], ["data", "stats"], ["train-linear"], ["evaluate"],
                                     ["compare"]])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    assert "usage: llmcls" in capsys.readouterr().out


def test_python_dash_m_entry_point():
    result = subprocess.run([sys.executable, "-m", "llmcls", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "train-linear" in result.stdout


@pytest.mark.parametrize("rank", ["0", "1"])
def test_only_the_first_launched_process_prints_notes_and_results(tmp_path, rank):
    """Under `accelerate launch` every process runs the command: notes, progress and tables once (RANK 0), errors
    from every process."""
    good = tmp_path / "good.jsonl"
    good.write_text('{"id": "1", "abstract": "a b", "labels": ["cs.IT"]}\n')
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1",\n')
    env = {**os.environ, "RANK": rank}

    def run(path):
        return subprocess.run([sys.executable, "-m", "llmcls", "data", "stats", str(path)], capture_output=True,
                              text=True, env=env)

    stats, failed = run(good), run(bad)
    assert stats.returncode == 0 and ("examples" in stats.stdout) == (rank == "0")
    assert failed.returncode == 2 and "malformed JSON" in failed.stderr


def test_unknown_command_and_data_error_are_one_line(capsys, tmp_path):
    assert main(["frobnicate"]) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1", "abstract": "a", "labels": ["x"]}\n{"id": 2,\n')
    assert main(["data", "stats", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"llmcls data stats: error: {bad}:2: malformed JSON (Expecting property name enclosed in " \
                      "double quotes at column 10)"


def test_config_file_sets_defaults_and_rejects_unknown_keys(tmp_path, capsys):
    config = tmp_path / "linear.yaml"
    config.write_text("train: aapd-train\nclassifer: svm\n")  # typo must not pass silently
    assert main(["train-linear", "--config", str(config), "--output_dir", str(tmp_path / "run")]) == 2
    assert "classifer" in capsys.readouterr().err


def test_data_stats_json_and_plot(tmp_path, capsys):
    plot = tmp_path / "stats.png"
    assert main(["data", "stats", "arxiv-snapshot", "--json", "--plot", str(plot)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["n_examples"] == 300
    assert stats["label_frequency"][0]["label"] == "astro-ph"
    co = stats["cooccurrence"]
    assert np.array_equal(np.diag(co["counts"]), [item["count"] for item in stats["label_frequency"][:10]])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_data_stats_describe_the_rows_a_filter_keeps(capsys):
    # --categories drops rows (an indices mapping over the file's table): the figures must be those of the kept rows
    assert main(["data", "stats", "arxiv-snapshot", "--categories", "cs,stat.ML", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    n = stats["n_examples"]
    assert 0 < n < 300
    assert stats["labels_per_example"]["min"] >= 1  # every kept row has a kept label
    total = sum(item["count"] for item in stats["label_frequency"])
    assert stats["label_cardinality"] == pytest.approx(total / n)


def test_data_stats_of_an_empty_path_is_one_line(capsys):
    assert main(["data", "stats", ""]) == 2  # it described "." as "is a directory"
    assert capsys.readouterr().err.strip() == ("llmcls data stats: error: data stats needs a data file or bundled "
                                               "sample name as PATH, got an empty one")


def test_data_stats_notes_and_errors_name_the_file_not_a_split(tmp_path, capsys):
    """`data stats FILE` reads FILE as --train: its notes said `train: ...` and its errors `--train: ...`."""
    assert main(["data", "stats", "aapd-test", "--min_label_count", "3", "--json"]) == 0
    said = " ".join(capsys.readouterr().err.split())
    assert "note: aapd-test: 28 gold labels of 20 labels outside the label space were dropped" in said
    assert "note: aapd-test: dropped 1 rows with no label in the label space" in said and "train:" not in said
    (tmp_path / "labels.txt").write_text("zz.yy\n")
    assert main(["data", "stats", "aapd-test", "--labels", str(tmp_path / "labels.txt")]) == 2
    assert "error: aapd-test: no row has a label in the label space" in capsys.readouterr().err


@pytest.fixture(scope="module")
def linear_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "linear"
    assert main(["train-linear", *AAPD, "--output_dir", str(out), "--c", "0.5,1.0"]) == 0
    return out


@pytest.mark.parametrize(("options", "message"), [
    (["--text_fields", "title,abstrct"], "--text_fields: unknown field(s) abstrct"),
    (["--text_fields", "title"], "--text_fields title: every row's text is empty"),  # AAPD has no titles
    (["--c", "1.0,abc"], "--c must be numbers separated by commas, got '1.0,abc'"),
    (["--c", "nan"], "--c must be finite numbers >= 1e-12 separated by commas, got 'nan'"),
    (["--text_fields", "labels"], "--text_fields: field 'labels' holds list<item: string>, not text"),
    (["--min_labels", "x"], "--min_labels must be integers separated by commas"),
    (["--min_df", "0"], "--min_df must be at least 1"),
    (["--min_label_count", "0"], "--min_label_count must be at least 1, got 0"),  # it added "... got 0 and None"
    (["--top_labels", "-1"], "--top_labels must be at least 1, got -1"),
    (["--top_labels", "0"], "--top_labels must be at least 1, got 0"),  # was "the label space is empty"
    (["--max_train_examples", "-5"], "--max_train_examples must be at least 1"),
    (["--label_sep", ""], "--label_sep is empty; leave it out for its default, or give a value"),  # a traceback
    (["--categories", " "], "--categories is empty; leave it out for its default"),  # was no filter, silently
    (["--labels", ""], "--labels is empty; leave it out for its default"),  # was the training rows' labels
    (["--config", ""], "--config is empty; give a YAML file (see configs/)"),  # was "[Errno 2] No such file ...: ''"
])
def test_train_linear_options_fail_in_one_line(tmp_path, capsys, options, message):
    assert main(["train-linear", *AAPD, "--output_dir", str(tmp_path / "run"), *options]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err.splitlines()[-1] and "Traceback" not in err  # notes on the data may come first


@pytest.mark.parametrize(("text", "message"), [
    ("systems: [\n", "invalid YAML at line 2"),
    ("train: aapd-train\nclasifier: svm\n", "unknown field 'clasifier' (did you mean 'classifier'?)"),
    ("train: aapd-train\nmax_eval_examples: abc\n", "invalid int value: 'abc'"),
    ("train: aapd-train\nsince: 2020-13-01\n", "a date that does not exist (month must be in 1..12)"),
])
def test_config_file_mistakes_name_the_file_in_one_line(tmp_path, capsys, text, message):
    config = tmp_path / "recipe.yaml"
    config.write_text(text)
    assert main(["train-linear", "--config", str(config), "--output_dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"llmcls train-linear: error: {config}: ") and message in err and "\n" not in err, err


def test_config_with_an_equals_sign(tmp_path):
    config = tmp_path / "recipe.yaml"
    config.write_text("train: aapd-train\ntest: aapd-test\nc: '1.0'\n")
    assert main(["train-linear", f"--config={config}", "--output_dir", str(tmp_path / "run")]) == 0


def test_evaluate_says_which_labels_a_labels_file_leaves_out(linear_run, tmp_path, capsys):
    few = tmp_path / "few.txt"
    few.write_text("cs.IT\nmath.IT\n")
    assert main(["evaluate", str(linear_run / "predictions.jsonl"), "--labels", str(few)]) == 0
    assert "labels of the file are outside the label space and not scored" in capsys.readouterr().err
    other = tmp_path / "other.txt"
    other.write_text("q-bio.NC\n")
    assert main(["evaluate", str(linear_run / "predictions.jsonl"), "--labels", str(other)]) == 2
    assert "labels is in the label space" in capsys.readouterr().err  # all-zero metrics would look like a result


def test_evaluate_leaves_out_rows_with_no_gold_label_in_the_space(tmp_path, capsys):
    """A row whose only gold label is outside the space counted as an exact match when nothing was predicted (the
    data readers drop such rows; evaluate scored them)."""
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\n")
    rows = [{"id": "1", "labels": ["a"], "predicted": ["a"]}, {"id": "2", "labels": ["zz"], "predicted": []},
            {"id": "3", "labels": ["b"], "predicted": ["a"]}]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["evaluate", str(path), "--labels", str(labels), "--json"]) == 0
    out = capsys.readouterr()
    metrics = json.loads(out.out)
    assert metrics["n_examples"] == 2 and metrics["subset_accuracy"] == 0.5 and metrics["samples_f1"] == 0.5
    assert "1 of 3 records have no gold label in the label space: not scored" in " ".join(out.err.split())
    path.write_text(json.dumps({"id": "2", "labels": ["zz"], "predicted": ["a"]}) + "\n")
    assert main(["evaluate", str(path), "--labels", str(labels)]) == 2
    assert "no record has a gold label in the label space" in capsys.readouterr().err


def test_an_output_dir_that_is_a_file_is_refused(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("not a run")
    assert main(["train-linear", *AAPD, "--output_dir", str(taken)]) == 2
    assert "is a file, not a run directory" in capsys.readouterr().err
    assert main(["train-linear", *AAPD, "--output_dir", str(taken / "run")]) == 2  # below a file
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"llmcls train-linear: error: {taken / 'run'}: cannot write (Not a directory)")


def test_an_unfinished_zeroshot_run_is_not_replaced(tmp_path, capsys):
    """Its predictions so far are work a rerun of zeroshot resumes from."""
    run = RunDir(tmp_path / "zs").create()
    run.write_config({"system": "zeroshot", "model": "m"})
    (run.path / "predictions.jsonl").write_text('{"id": "1", "labels": ["cs.it"], "predicted": [], "raw": ""}\n')
    assert main(["train-linear", *AAPD, "--output_dir", str(run.path)]) == 2
    assert "holds the predictions of an unfinished `llmcls zeroshot` run" in capsys.readouterr().err
    assert (run.path / "predictions.jsonl").exists()


def test_a_write_that_fails_is_one_line(tmp_path, monkeypatch):
    """A full disk while predictions are appended: one line naming the file (the finished lines stay readable)."""
    from llmcls.errors import LlmclsError
    from llmcls.runs import PredictionWriter

    writer = PredictionWriter(tmp_path / "predictions.jsonl")
    writer.append([{"id": "1", "labels": [], "predicted": []}])

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.fsync", full)
    with pytest.raises(LlmclsError, match=r"predictions.jsonl: cannot write \(No space left on device\)"):
        writer.append([{"id": "2", "labels": [], "predicted": []}])


def test_a_rerun_into_a_finished_run_leaves_none_of_its_files(tmp_path):
    out = tmp_path / "run"
    assert main(["train-linear", *AAPD, "--output_dir", str(out), "--c", "1.0"]) == 0
    assert (out / "metrics.validation.json").exists()
    # the same folder, now without a test split: validation becomes the reported split, nothing of the first is kept
    assert main(["train-linear", "--train", "aapd-train", "--validation", "aapd-validation", "--output_dir", str(out),
                 "--c", "2.0"]) == 0
    assert sorted(p.name for p in out.iterdir() if p.suffix in (".json", ".jsonl")) == [
        "labels.json", "metrics.json", "predictions.jsonl", "thresholds.json"]
    assert RunDir(out).read_metrics()["split"] == "validation"


def test_linear_run_directory_is_complete(linear_run):
    for name in ("config.yaml", "labels.json", "predictions.jsonl", "metrics.json", "thresholds.json",
                 "predictions.validation.jsonl", "metrics.validation.json"):
        assert (linear_run / name).exists(), name
    record = RunDir(linear_run).read_metrics()
    assert record["schema"] == 1 and record["system"] == "linear" and record["split"] == "test"
    assert set(record["timing"]) >= {"wall_s", "examples_per_s", "device"}
    lines = (linear_run / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 100
    first = json.loads(lines[0])
    assert set(first) == {"id", "labels", "predicted", "scores"}


def test_linear_beats_most_frequent_labels_baseline(linear_run):
    space = LabelSpace.load(linear_run / "labels.json")
    records = [json.loads(line) for line in (linear_run / "predictions.jsonl").read_text().splitlines()]
    gold = space.to_multi_hot([r["labels"] for r in records], unknown="ignore")
    # the baseline: always predict the two most frequent training labels (AAPD rows have at least 2)
    frequent = np.zeros_like(gold)
    frequent[:, :2] = True
    floor = compute_metrics(gold, frequent)["micro_f1"]
    model = RunDir(linear_run).read_metrics()["metrics"]["micro_f1"]
    assert model > floor + 0.15, (model, floor)


def test_evaluate_recomputes_the_stored_metrics(linear_run, capsys):
    assert main(["evaluate", str(linear_run / "predictions.jsonl"), "--json"]) == 0
    recomputed = json.loads(capsys.readouterr().out)
    stored = RunDir(linear_run).read_metrics()["metrics"]
    assert recomputed.keys() == stored.keys()
    for key, value in stored.items():
        assert recomputed[key] == pytest.approx(value, abs=1e-12), key


def test_evaluate_of_a_file_moved_from_its_run_takes_the_space_its_scores_name(linear_run, tmp_path, capsys):
    """Without labels.json beside it the space was the labels seen in the file: macro-F1 and mAP changed silently
    (0.2712 against the run's 0.1649 on the snapshot sample). The scores name the run's whole space."""
    moved = tmp_path / "predictions.jsonl"
    shutil.copy(linear_run / "predictions.jsonl", moved)
    assert main(["evaluate", str(moved), "--json"]) == 0
    out, err = capsys.readouterr()
    stored = RunDir(linear_run).read_metrics()["metrics"]
    assert json.loads(out) == pytest.approx(stored, abs=1e-12)
    n_labels = len(RunDir(linear_run).label_space())
    assert f"note: no labels.json beside {moved}: the label space is the {n_labels} labels its scores name" in \
        " ".join(err.split())
    unscored = tmp_path / "unscored.jsonl"  # no scores: the labels seen, said too
    unscored.write_text("".join(json.dumps({k: v for k, v in json.loads(line).items() if k != "scores"}) + "\n"
                                for line in moved.read_text().splitlines()))
    lines = moved.read_text().splitlines()
    mixed = tmp_path / "mixed.jsonl"  # every other record without scores: no ranking metrics, and a note says so
    mixed.write_text("".join((line if i % 2 else unscored.read_text().splitlines()[i]) + "\n"
                             for i, line in enumerate(lines)))
    assert main(["evaluate", str(mixed), "--json"]) == 0
    out, err = capsys.readouterr()
    assert "map" not in json.loads(out)
    assert (f"note: {len(lines) // 2} of {len(lines)} records have scores: the ranking metrics (P@k, nDCG@k, mAP) "
            "are left out") in " ".join(err.split())
    assert main(["evaluate", str(unscored)]) == 0
    said = " ".join(capsys.readouterr().err.split())
    assert f"note: no labels.json beside {unscored}: the label space is the " in said, said
    assert " labels seen in the file (gold and predicted); macro-averages" in said, said


def test_a_reader_that_closes_stdout_ends_the_command_quietly(linear_run):
    """`llmcls evaluate ... | head`: the reader goes away before the output is written; no traceback, and no
    "Exception ignored" from Python's flush of stdout at exit."""
    command = [sys.executable, "-m", "llmcls", "evaluate", str(linear_run / "predictions.jsonl"), "--json"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        proc.stdout.close()  # closed before the command writes: its first write raises BrokenPipeError
        stderr = proc.stderr.read().decode()
    assert proc.returncode == 141, stderr
    assert stderr == ""


def test_evaluate_rejects_a_broken_predictions_file(tmp_path, capsys):
    path = tmp_path / "predictions.jsonl"
    path.write_text('{"id": "1", "labels": ["a"], "predicted": ["a"]}\n{"id": "2", "labels": ["a"]}\n')
    assert main(["evaluate", str(path)]) == 2
    assert capsys.readouterr().err.strip() == (f"llmcls evaluate: error: {path}:2: field 'predicted' is missing or "
                                               "not a list (fields present: id, labels)")


@pytest.mark.parametrize(("lines", "message"), [
    ("", "no predictions in the file"),
    ('{"id": "1", "labels": ["a", 3], "predicted": ["a"]}\n', ":1: field 'labels' holds 3, not a label string"),
    ('{"id": "1", "labels": ["a"], "predicted": ["a"], "scores": {"a": "high"}}\n',
     ":1: field 'scores' gives 'a' the score 'high', not a number"),
    ('{"id": "1", "labels": ["a"], "predicted": ["a"], "scores": {"a": NaN}}\n',
     ":1: field 'scores' gives 'a' the score nan, not a number"),
    ('{"id": "1", "labels": ["a"], "predicted": ["a"], "scores": {"a": 1, "b": true}}\n',
     ":1: field 'scores' gives 'b' the score True, not a number"),
    ('{"id": "1", "labels": [], "predicted": []}\n', "no label to score: the records name none and there is no "
                                                     "labels.json beside the file (pass --labels)"),
    ('{"id": "1", "labels": null, "predicted": ["a"]}\n', 'no record has gold labels ("labels": null in all 1): '
                                                          "predictions only, nothing to score"),
    ('{"id": "1", "labels": ["a"], "predicted": ["a"]}\n{"id": "2", "labels": ["a"], "predicted": []}\n'
     '{"id": 1, "labels": ["b"], "predicted": ["a"]}\n',  # was scored twice, silently
     ":3: id '1' was predicted on line 1 already: ids are unique in a predictions file (two runs appended to one "
     "file?)"),
])
def test_evaluate_names_what_is_wrong_in_a_damaged_file(tmp_path, capsys, lines, message):
    path = tmp_path / "predictions.jsonl"
    path.write_text(lines)
    assert main(["evaluate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(message) and str(path) in err and "\n" not in err


def test_evaluate_refuses_an_empty_labels_option(tmp_path, capsys):
    """`--labels ""` (an unset shell variable) was read as no option: the file's own labels, silently."""
    path = tmp_path / "predictions.jsonl"
    path.write_text('{"id": "1", "labels": ["a"], "predicted": ["a"]}\n')
    assert main(["evaluate", str(path), "--labels", ""]) == 2
    assert capsys.readouterr().err.strip() == ("llmcls evaluate: error: --labels is empty; leave it out (the "
                                               "labels.json beside the file, else the labels the file names), or "
                                               "give a labels file")


def test_compare_says_in_the_terminal_when_runs_are_not_alike(linear_run, tmp_path, capsys):
    other = tmp_path / "other"
    assert main(["train-linear", "--train", "aapd-train", "--validation", "aapd-validation", "--test",
                 "aapd-validation", "--output_dir", str(other), "--c", "1.0"]) == 0
    lines = (other / "predictions.jsonl").read_text().splitlines()
    (other / "predictions.jsonl").write_text("\n".join(lines[:3]) + "\n")  # as if cut short
    capsys.readouterr()
    assert main(["compare", str(linear_run), str(other)]) == 0
    err = capsys.readouterr().err
    assert "note: the runs differ in the evaluated file (linear: aapd-test; other: aapd-validation)" in err
    assert "predictions.jsonl has 3 examples" in err


def test_compare_split_over_a_folder_leaves_out_runs_without_it(tmp_path, capsys):
    folder = tmp_path / "runs"
    assert main(["train-linear", *AAPD, "--output_dir", str(folder / "with"), "--c", "1.0"]) == 0
    assert main(["train-linear", "--train", "aapd-train", "--test", "aapd-test", "--output_dir",
                 str(folder / "without"), "--c", "1.0"]) == 0
    capsys.readouterr()
    assert main(["compare", str(folder), "--split", "validation"]) == 0
    captured = capsys.readouterr()
    assert "note: left out: " in captured.err and "without: no validation split" in captured.err
    assert main(["compare", str(folder / "without"), "--split", "validation"]) == 2  # named: still an error
    assert capsys.readouterr().err.strip().endswith("the run did not evaluate the validation split (its "
                                                    "metrics.json reports test)")


def test_compare_notes_runs_scored_on_different_examples(linear_run, tmp_path, capsys):
    """Same split name, file and size, other rows (test splits carved by --split_ratios with other seeds)."""
    other = tmp_path / "other"
    shutil.copytree(linear_run, other)
    records = [json.loads(line) for line in (other / "predictions.jsonl").read_text().splitlines()]
    (other / "predictions.jsonl").write_text("".join(json.dumps(r | {"id": f"x{r['id']}"}) + "\n" for r in records))
    capsys.readouterr()
    assert main(["compare", str(linear_run), str(other), "--out", str(tmp_path / "report"), "--plots", "false"]) == 0
    assert "note: the runs scored different examples" in capsys.readouterr().err
    assert "the runs scored different examples" in (tmp_path / "report.md").read_text()  # in the file too
    assert main(["compare", str(other / "predictions.jsonl")]) == 2
    assert "a file, not a run directory (give the folder that holds metrics.json)" in capsys.readouterr().err


def test_compare_notes_label_spaces_of_the_same_size(linear_run, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(linear_run, other)
    space = LabelSpace.load(other / "labels.json")
    LabelSpace(["renamed.label", *space.labels[1:]]).save(other / "labels.json")
    capsys.readouterr()
    assert main(["compare", str(linear_run), str(other)]) == 0
    assert "note: the runs have different label spaces of the same size" in capsys.readouterr().err


def test_compare_over_a_folder_skips_hidden_folders(linear_run, tmp_path, capsys):
    """A benchmark keeps a finished run aside in `.NAME.previous` while its rerun goes on: not a run to compare."""
    folder = tmp_path / "runs"
    shutil.copytree(linear_run, folder / "linear")
    shutil.copytree(linear_run, folder / ".linear.previous")
    assert main(["compare", str(folder), "--out", str(tmp_path / "report"), "--plots", "false"]) == 0
    rows = list(csv.DictReader(io.StringIO((tmp_path / "report.csv").read_text())))
    assert [row["run"] for row in rows] == ["linear"]


def test_compare_shows_a_run_whose_predictions_file_is_empty(linear_run, tmp_path, capsys):
    empty = tmp_path / "empty"
    shutil.copytree(linear_run, empty)
    (empty / "predictions.jsonl").write_text("")
    capsys.readouterr()
    assert main(["compare", str(linear_run), str(empty), "--out", str(tmp_path / "report"), "--plots", "false"]) == 0
    assert "empty: predictions.jsonl holds no scored prediction" in capsys.readouterr().err
    assert (tmp_path / "report.md").exists()


def test_compare_writes_markdown_and_csv(linear_run, tmp_path):
    prefix = tmp_path / "table"
    assert main(["compare", str(linear_run), str(linear_run.parent), "--out", str(prefix)]) == 0
    rows = list(csv.DictReader(io.StringIO((tmp_path / "table.csv").read_text())))
    assert len(rows) == 1 and rows[0]["system"] == "linear"  # given twice (itself, its folder): listed once
    stored = RunDir(linear_run).read_metrics()["metrics"]
    assert float(rows[0]["micro-F1"]) == pytest.approx(stored["micro_f1"])
    assert f"{stored['micro_f1']:.4f}" in (tmp_path / "table.md").read_text()
    assert main(["compare", str(tmp_path)]) == 2  # no finished run below it


def test_train_linear_ranks_untrained_labels_last_and_keeps_min_labels_without_validation(tmp_path, capsys):
    from conftest import RESOURCES, read_jsonl

    trained = sorted({label for row in read_jsonl(RESOURCES / "aapd-train.jsonl") for label in row["labels"]})
    (tmp_path / "labels.txt").write_text("\n".join([*trained, "zz.XX"]) + "\n")
    out = tmp_path / "run"
    assert main(["train-linear", "--train", "aapd-train", "--test", "aapd-test", "--labels",
                 str(tmp_path / "labels.txt"), "--classifier", "logreg", "--min_labels", "3,1", "--c", "1,2",
                 "--output_dir", str(out)]) == 0
    err = " ".join(capsys.readouterr().err.split())  # the console may wrap lines
    assert "1 labels have no training example (zz.XX): ranked last, never predicted" in err
    assert "C=1 and min_labels=3 (the first values of --c and --min_labels) are used" in err
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert all(len(r["predicted"]) >= 3 and "zz.XX" not in r["predicted"] for r in records)  # the rule, still
    assert all(r["scores"]["zz.XX"] < min(v for k, v in r["scores"].items() if k != "zz.XX") for r in records)
    assert not (out / "thresholds.json").exists()  # nothing was tuned


def test_data_stats_counts_unicode_spaces_and_refuses_empty_tables(tmp_path, capsys):
    rows = [{"id": "a", "abstract": "x\u00a0y\u2003z  w", "labels": ["cs.IT"]}, {"id": "b", "abstract": "one two",
                                                                              "labels": ["cs.IT"]}]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["data", "stats", str(path), "--json"]) == 0
    words = json.loads(capsys.readouterr().out)["abstract_words"]
    assert (words["min"], words["max"]) == (2, 4)  # as str.split() counts them
    assert main(["data", "stats", str(path), "--top", "0"]) == 2
    assert "--top must be at least 1, got 0" in " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize("option", [["--test", "aapd-test"], ["--split_ratios", "0.8,0.1,0.1"],
                                    ["--validation", "aapd-validation"], ["--max_eval_examples", "5"]])
def test_data_stats_refuses_split_options_it_would_describe_nowhere(option, capsys, tmp_path):
    """--test was read (its notes printed) and --split_ratios split the file, yet the tables described the training
    rows alone."""
    assert main(["data", "stats", "aapd-train", *option]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"llmcls data stats: error: {option[0]}: data stats describes the one file given as PATH (llmcls "
                   "data stats FILE) and takes no split options; run it once per file"), err
    if option[0] == "--test":  # a recipe's train: is PATH's (PATH wins, as before): not refused
        recipe = tmp_path / "recipe.yaml"
        recipe.write_text("train: aapd-validation\n")
        assert main(["data", "stats", "aapd-train", "--config", str(recipe), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["n_examples"] == 400
