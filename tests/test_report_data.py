"""The report's inputs and derived numbers: reading runs (with files missing), threshold curves through
llmcls.metrics, names, escaping, and the environment that runs.py records for the report."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from report_runs import make_runs

from llmcls import __version__
from llmcls.metrics import Thresholds, apply_thresholds, compute_metrics
from llmcls.report import build_report, main
from llmcls.report_data import find_runs, load_run, load_runs, per_label_f1, run_names, threshold_curve
from llmcls.report_formats import latex_escape, markdown
from llmcls.report_tables import format_value
from llmcls.runs import RunDir, atomic_write


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return make_runs(tmp_path_factory.mktemp("runs"))


def test_threshold_curve_is_metrics_py_at_each_threshold(runs):
    predictions = load_run(runs[0], "linear").predictions
    curve = threshold_curve(predictions)
    assert len(curve) >= 10
    for point in curve:
        predicted = apply_thresholds(predictions.scores, Thresholds(np.full(predictions.scores.shape[1],
                                                                            point["threshold"])))
        metrics = compute_metrics(predictions.gold, predicted)
        assert (point["precision"], point["recall"], point["f1"]) == (
            metrics["micro_precision"], metrics["micro_recall"], metrics["micro_f1"])
    recalls = [point["recall"] for point in curve]  # thresholds fall along the curve, so recall only grows
    assert recalls == sorted(recalls) and recalls[-1] == 1.0
    assert [p["threshold"] for p in curve] == sorted((p["threshold"] for p in curve), reverse=True)


def test_no_curve_without_scores(runs):
    assert threshold_curve(load_run(runs[1], "zeroshot").predictions) == []
    assert threshold_curve(None) == []


def test_a_run_without_predictions_keeps_its_row_with_dashes(runs, tmp_path):
    run = tmp_path / "metrics-only"
    shutil.copytree(runs[1], run)
    (run / "predictions.jsonl").unlink()
    loaded = load_runs([runs[0], run])
    assert loaded[1].predictions is None and per_label_f1(loaded[1]) is None
    text = markdown(build_report(loaded, plots=False))
    per_label = text[text.index("## Per-label F1\n"):]
    rows = [line for line in per_label.splitlines() if line.startswith("| cs.")]
    assert rows and all(line.rstrip(" |").endswith("| -") for line in rows)
    assert main([str(runs[0]), str(run), "--out", str(tmp_path / "r")]) == 0  # plots without its curve or line
    assert (tmp_path / "r-per-label-f1.png").exists()


def test_labels_json_missing_falls_back_to_the_labels_in_the_predictions(runs, tmp_path):
    run = tmp_path / "no-labels"
    shutil.copytree(runs[2], run)
    (run / "labels.json").unlink()
    loaded = load_run(run, "no-labels")
    assert set(loaded.space.labels) <= set(load_run(runs[2], "bare").space.labels)
    assert loaded.predictions.gold.shape[0] == 40


def test_a_predictions_file_that_disagrees_with_metrics_json_is_noted(runs, tmp_path):
    run = tmp_path / "short"
    shutil.copytree(runs[2], run)
    lines = (run / "predictions.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (run / "predictions.jsonl").write_text("".join(lines[:30]), encoding="utf-8")
    loaded = load_run(run, "short")
    assert loaded.notes == ["short: predictions.jsonl has 30 examples, metrics.json reports 40"]
    assert "## Notes" in markdown(build_report([loaded], plots=False))


def test_run_names_add_parents_only_where_needed(tmp_path):
    paths = [tmp_path / "a" / "linear", tmp_path / "b" / "linear", tmp_path / "b" / "sft"]
    assert run_names(paths) == ["a/linear", "b/linear", "b/sft"]
    assert run_names(paths[2:]) == ["sft"]


def test_find_runs_rejects_what_is_not_a_run(tmp_path):
    from llmcls.errors import LlmclsError

    with pytest.raises(LlmclsError, match="no such run directory"):
        find_runs([tmp_path / "missing"])
    with pytest.raises(LlmclsError, match="no metrics.json in it or below it"):
        find_runs([tmp_path])


def test_formatting_and_escaping():
    assert format_value(None, "{:.4f}") == "-" and format_value(0.5, "{:.1%}") == "50.0%"
    assert format_value("n/a", "{:.4f}") == "n/a"  # text where a number was expected is shown as it is
    assert latex_escape(r"a_b & 5% #1 {x} ~^\ $") == (r"a\_b \& 5\% \#1 \{x\} \textasciitilde{}"
                                                      r"\textasciicircum{}\textbackslash{} \$")


def test_metrics_json_records_the_environment(runs):
    env = RunDir(runs[0]).read_metrics()["environment"]
    assert env["llmcls"] == __version__ and env["python"].count(".") == 2
    assert "numpy" in env["packages"] and env["cpu_count"] >= 1 and env["cpu"]


def test_atomic_write_takes_bytes(tmp_path):
    atomic_write(tmp_path / "x.png", b"\x89PNG\x00\xff")
    assert (tmp_path / "x.png").read_bytes() == b"\x89PNG\x00\xff"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_atomic_write_gives_the_mode_open_would(tmp_path):
    """Run files are for sharing: the umask decides, not mkstemp's owner-only 0600."""
    import os

    atomic_write(tmp_path / "m.json", "{}")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o666 & ~mask


def test_paired_difference_matches_examples_by_id_and_labels_by_name(runs, tmp_path):
    """A run whose predictions file lists the examples in another order, over a label space in another order,
    pairs with the reference exactly as the same run written in the reference's order."""
    from report_runs import LABELS, example_ids, write_run

    from llmcls.labels import LabelSpace
    from llmcls.metrics import bootstrap_difference
    from llmcls.report_data import paired_difference

    linear, zeroshot = load_run(runs[0], "linear"), load_run(runs[1], "zeroshot")
    expected = paired_difference(linear, zeroshot)
    n, f1_a, f1_b, difference, low, high = expected
    gold, a, b = linear.predictions.gold, linear.predictions.predicted, zeroshot.predictions.predicted
    assert n == len(gold) and (difference, low, high) == bootstrap_difference(gold, a, b)
    assert f1_b - f1_a == pytest.approx(difference)

    rows, columns = np.random.default_rng(1).permutation(len(gold)), np.arange(len(LABELS))[::-1]
    shuffled = write_run(tmp_path / "shuffled", LabelSpace([LABELS[c] for c in columns]), gold[rows][:, columns],
                         b[rows][:, columns], system="zeroshot", model="tiny-llm", timing={},
                         ids=[example_ids(len(gold))[r] for r in rows])
    assert paired_difference(linear, load_run(shuffled, "shuffled")) == pytest.approx(expected)

    half = write_run(tmp_path / "half", LabelSpace(LABELS), gold[:20], b[:20], system="zeroshot", model="m",
                     timing={})  # the first 20 ids only: paired on those
    assert paired_difference(linear, load_run(half, "half"))[0] == 20
    other_gold = write_run(tmp_path / "other_gold", LabelSpace(LABELS), ~gold, b, system="s", model="m", timing={})
    assert paired_difference(linear, load_run(other_gold, "g")) == "different gold labels for the same ids"
    elsewhere = write_run(tmp_path / "elsewhere", LabelSpace(LABELS), gold, b, system="s", model="m", timing={},
                          ids=[f"x{i}" for i in range(len(gold))])
    assert paired_difference(linear, load_run(elsewhere, "e")) == "no example in common"
    fewer = write_run(tmp_path / "fewer", LabelSpace(LABELS[:-1]), gold[:, :-1], b[:, :-1], system="s", model="m",
                      timing={})
    assert paired_difference(linear, load_run(fewer, "f")) == "different label spaces"


def test_paired_table_reads_each_run_against_the_first(runs):
    from llmcls.report_tables import paired_table

    loaded = load_runs(runs)
    table = paired_table(loaded)
    assert [row[0] for row in table.rows] == [run.name for run in loaded[1:]]
    assert table.title.endswith(loaded[0].name)
    for row in table.rows:  # the verdict follows the interval
        low, high = row[5].low, row[5].high
        assert f"{row[5]}" == f"{low:+.3f} to {high:+.3f}"  # one cell where text is shown
        assert low <= row[4] <= high
        assert row[6] == ("ahead" if low > 0 else "behind" if high < 0 else "not separated")
    assert paired_table(loaded[:1]) is None
