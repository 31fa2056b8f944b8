"""`llmcls compare --out`: every file of the report from three small run directories written by llmcls/runs.py
(a linear run with scores, a generative run with a well-formed rate, a bare run without optional fields)."""

from __future__ import annotations

import base64
import csv
import io
import json
import re

import numpy as np
import pytest
from report_runs import LABELS, make_runs
from sklearn.metrics import f1_score

from llmcls.cli import main as cli_main
from llmcls.labels import LabelSpace
from llmcls.metrics import bootstrap_interval
from llmcls.report import build_report, main, write_files
from llmcls.report_data import find_runs, load_run, load_runs
from llmcls.report_tables import COMPARISON, ORIGINAL
from llmcls.runs import RunDir, predictions_from_records, read_predictions

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGURES = ("per-label-f1", "f1-vs-cost", "precision-recall")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The runs and the report written from them once (matplotlib makes this the slow part)."""
    root = tmp_path_factory.mktemp("report")
    runs = make_runs(root / "runs")
    prefix = root / "out" / "cmp"
    assert main([str(p) for p in runs] + ["--out", str(prefix)]) == 0
    return {"runs": {p.name: p for p in runs}, "prefix": prefix, "dir": prefix.parent}


def _csv(path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def _record(run) -> dict:
    return RunDir(run).read_metrics()


def _row_of(text: str, run: str) -> list[str]:
    """The cells of a run's row in the first Markdown table that has one."""
    line = next(line for line in text.splitlines() if line.startswith(f"| {run} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_every_documented_file_is_written(report):
    prefix = report["prefix"]
    names = {p.name for p in report["dir"].iterdir()}
    expected = {f"cmp{suffix}" for suffix in (".md", ".csv", ".tex", ".html", "-original.csv", "-per-label.csv",
                                              "-bands.csv", "-runs.csv", "-paired.csv",
                                              *(f"-{f}.png" for f in FIGURES))}
    assert expected == names, prefix


def test_csv_holds_the_metrics_json_values(report):
    rows = {row["run"]: row for row in _csv(report["dir"] / "cmp.csv")}
    intervals = [[f"{header} low", f"{header} high"] if key == "micro_f1_interval" else [header]
                 for header, key, _ in COMPARISON]  # an interval is two raw columns
    assert list(next(iter(rows.values()))) == [column for columns in intervals for column in columns]
    assert set(rows) == {"linear_svm", "zeroshot", "bare"}
    for name, run in report["runs"].items():
        record = _record(run)
        for header, key in (("micro-F1", "micro_f1"), ("macro-F1", "macro_f1"), ("samples-F1", "samples_f1"),
                            ("precision", "micro_precision"), ("recall", "micro_recall"),
                            ("Hamming", "hamming_loss"), ("label acc", "label_accuracy"),
                            ("subset acc", "subset_accuracy")):
            assert float(rows[name][header]) == record["metrics"][key], (name, header)
        assert rows[name]["system"] == record["system"] and rows[name]["model"] == record["model"]
        assert int(rows[name]["n"]) == record["metrics"]["n_examples"]
    linear = _record(report["runs"]["linear_svm"])
    assert float(rows["linear_svm"]["P@1"]) == linear["metrics"]["p_at_1"]
    assert int(rows["linear_svm"]["params trained"]) == linear["params_trained"]
    assert float(rows["linear_svm"]["train s"]) == linear["timing"]["train_s"]
    assert float(rows["linear_svm"]["ex/s"]) == linear["timing"]["examples_per_s"]
    assert float(rows["zeroshot"]["well-formed"]) == 0.925 and rows["zeroshot"]["device"] == "cuda:0"
    assert float(rows["zeroshot"]["unknown"]) == 0.05 and rows["linear_svm"]["unknown"] == ""
    assert rows["bare"]["P@1"] == rows["bare"]["device"] == rows["bare"]["params trained"] == ""  # not recorded
    for name, run in report["runs"].items():  # the interval is the bootstrap of the run's own predictions
        loaded = load_run(run, name)
        _, low, high = bootstrap_interval(loaded.predictions.gold, loaded.predictions.predicted)
        assert float(rows[name]["micro-F1 95% CI low"]) == low and float(rows[name]["micro-F1 95% CI high"]) == high
        assert low <= _record(run)["metrics"]["micro_f1"] <= high < 1.0


def test_missing_optional_fields_show_a_dash(report):
    text = (report["dir"] / "cmp.md").read_text(encoding="utf-8")
    headers = [header for header, _, _ in COMPARISON]
    bare, zeroshot = dict(zip(headers, _row_of(text, "bare"), strict=True)), \
        dict(zip(headers, _row_of(text, "zeroshot"), strict=True))
    for header in ("params trained", "P@1", "well-formed", "train s", "ex/s", "device"):
        assert bare[header] == "-", header
    assert zeroshot["P@1"] == "-" and zeroshot["train s"] == "-" and zeroshot["well-formed"] == "92.5%"
    assert zeroshot["unknown"] == "5.0%" and bare["unknown"] == "-"
    assert zeroshot["params trained"] == "0"


def test_original_layout_uses_label_accuracy_and_micro_averages(report):
    rows = {row["run"]: row for row in _csv(report["dir"] / "cmp-original.csv")}
    assert list(next(iter(rows.values()))) == [header for header, _, _ in ORIGINAL]
    for name, run in report["runs"].items():
        metrics = _record(run)["metrics"]
        assert float(rows[name]["accuracy"]) == metrics["label_accuracy"]
        assert float(rows[name]["F1"]) == metrics["micro_f1"]
        assert float(rows[name]["precision"]) == metrics["micro_precision"]
        assert float(rows[name]["Hamming loss"]) == metrics["hamming_loss"]
    text = (report["dir"] / "cmp.md").read_text(encoding="utf-8")
    assert "micro-averaged" in text and "label-wise accuracy" in text


def test_per_label_f1_matches_sklearn(report):
    rows = _csv(report["dir"] / "cmp-per-label.csv")
    assert sorted(row["label"] for row in rows) == sorted(LABELS)
    supports = [int(row["support"]) for row in rows]
    assert supports == sorted(supports, reverse=True)  # labels by support in the evaluated split
    for name, run in report["runs"].items():
        space = LabelSpace.load(run / "labels.json")
        predictions = predictions_from_records(read_predictions(run / "predictions.jsonl"), space)
        expected = f1_score(predictions.gold, predictions.predicted, average=None, zero_division=0)
        for row in rows:
            assert float(row[name]) == pytest.approx(expected[space.index(row["label"])], abs=1e-12), (name, row)
        gold_support = predictions.gold.sum(axis=0)
        assert all(int(row["support"]) == gold_support[space.index(row["label"])] for row in rows)


def test_bands_average_the_per_label_values(report):
    per_label = _csv(report["dir"] / "cmp-per-label.csv")
    bands = _csv(report["dir"] / "cmp-bands.csv")
    assert per_label[-1]["label"] == "nlin.AO" and per_label[-1]["support"] == "0"
    assert [int(b["count"]) for b in bands] == [3, 3, 2]  # the label without an example is left out
    tail = per_label[-3:-1]
    assert float(bands[-1]["zeroshot"]) == pytest.approx(np.mean([float(r["zeroshot"]) for r in tail]))


def test_latex_is_booktabs_with_the_numbers_escaped(report):
    tex = (report["dir"] / "cmp.tex").read_text(encoding="utf-8")
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert tex.count(rule) >= 5, rule  # comparison, original, bands, per-label, runs
    assert r"\usepackage{booktabs}" in tex and r"\begin{document}" in tex and tex.rstrip().endswith(r"\end{document}")
    metrics = _record(report["runs"]["linear_svm"])["metrics"]
    assert f"{metrics['micro_f1']:.4f}" in tex and f"{metrics['label_accuracy']:.5f}" in tex
    assert r"linear\_svm" in tex and "linear_svm" not in tex.replace(r"linear\_svm", "")
    assert r"92.5\%" in tex
    for figure in FIGURES:
        assert rf"\includegraphics[width=\linewidth]{{cmp-{figure}.png}}" in tex


def test_html_is_self_contained(report):
    page = (report["dir"] / "cmp.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page and "<table>" in page
    metrics = _record(report["runs"]["zeroshot"])["metrics"]
    assert f"<td class=\"num\">{metrics['micro_f1']:.4f}</td>" in page
    images = re.findall(r'src="([^"]*)"', page)
    assert len(images) == len(FIGURES) and all(src.startswith("data:image/png;base64,") for src in images)
    for src in images:
        assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG_SIGNATURE
    assert "href=" not in page  # no stylesheet or other file to fetch


@pytest.mark.parametrize("figure", FIGURES)
def test_plots_are_readable_pngs(report, figure):
    import matplotlib.image

    path = report["dir"] / f"cmp-{figure}.png"
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image.std() > 0  # something was drawn


def test_markdown_states_data_sizes_hardware_and_versions(report):
    text = (report["dir"] / "cmp.md").read_text(encoding="utf-8")
    assert "aapd-train / aapd-validation / aapd-test" in text and "400 / 100 / 40" in text
    assert "- Labels: 9" in text and "test (40 examples)" in text
    env = _record(report["runs"]["bare"])["environment"]
    assert f"llmcls {env['llmcls']}" in text and f"Python {env['python']}" in text
    runs = {row["run"]: row for row in _csv(report["dir"] / "cmp-runs.csv")}
    assert runs["zeroshot"]["hardware"].startswith("cuda:0") and runs["bare"]["train"] == ""
    for figure in FIGURES:
        assert f"](cmp-{figure}.png)" in text


def test_terminal_shows_the_table_and_the_written_paths(report, tmp_path, capsys, monkeypatch):
    from llmcls.progress import results

    monkeypatch.setattr(results, "width", 200)
    capsys.readouterr()
    assert main([str(report["runs"]["zeroshot"]), "--out", str(tmp_path / "t"), "--plots", "false"]) == 0
    out, err = capsys.readouterr()
    assert "llmcls compare" in out and "zeroshot" in out and "92.5%" in out
    assert "P@1" not in out  # no run recorded it: left out of the terminal table (the files keep the column)
    assert "Paired differences" not in out  # one run: nothing to pair
    assert f"Wrote {tmp_path / 't.md'}" in err and f"Wrote {tmp_path / 't.html'}" in err
    assert not list(tmp_path.glob("*.png"))
    assert "data:image/png" not in (tmp_path / "t.html").read_text(encoding="utf-8")


def test_terminal_pairs_each_run_with_the_first(report, capsys, monkeypatch):
    from llmcls.progress import results

    monkeypatch.setattr(results, "width", 200)
    capsys.readouterr()
    assert main([str(report["runs"][name]) for name in ("linear_svm", "zeroshot", "bare")]) == 0
    out = capsys.readouterr().out
    assert "Paired differences against linear_svm" in out and ("not separated" in out or "behind" in out)
    paired = _csv(report["prefix"].with_name("cmp-paired.csv"))
    assert [row["run"] for row in paired] == ["zeroshot", "bare"]
    for row in paired:  # the interval as two numbers around the difference
        assert float(row["95% CI low"]) <= float(row["difference"]) <= float(row["95% CI high"])
        assert (row["verdict"] == "not separated") == (float(row["95% CI low"]) <= 0 <= float(row["95% CI high"]))


def test_a_narrow_terminal_gets_one_column_per_run(report, capsys, monkeypatch):
    from llmcls.progress import results

    monkeypatch.setattr(results, "width", 100)
    capsys.readouterr()
    assert main([str(p) for p in report["runs"].values()]) == 0
    out = capsys.readouterr().out
    assert "llmcls compare: test split, 40 examples" in out  # shared split and size move into the title
    lines = out.splitlines()
    assert all(len(line) <= 100 for line in lines)
    header = next(line for line in lines if "linear_svm" in line)
    assert "zeroshot" in header and "bare" in header
    assert any(line.split()[:1] == ["micro-F1"] for line in lines)


def test_write_files_returns_the_paths_it_wrote(report, tmp_path):
    folder = next(iter(report["runs"].values())).parent
    prefix = tmp_path / "sub" / "r"
    paths = write_files(build_report(load_runs(find_runs([folder])), prefix=prefix), prefix)
    assert all(p.exists() for p in paths)
    assert {p.name for p in paths} >= {"r.md", "r.csv", "r.tex", "r.html", "r-precision-recall.png"}
    assert len(_csv(tmp_path / "sub" / "r.csv")) == 3


def test_split_option_reads_the_other_split(report, tmp_path):
    linear = report["runs"]["linear_svm"]
    assert main([str(linear), "--split", "validation", "--out", str(tmp_path / "v"), "--plots", "false"]) == 0
    (row,) = _csv(tmp_path / "v.csv")
    assert row["split"] == "validation" and float(row["micro-F1"]) == 1.0
    assert main([str(linear), "--split", "test", "--out", str(tmp_path / "t"), "--plots", "false"]) == 0
    assert _csv(tmp_path / "t.csv")[0]["split"] == "test"  # metrics.json holds test: no metrics.test.json needed


def test_a_run_given_twice_is_listed_once(report, tmp_path):
    linear = report["runs"]["linear_svm"]
    assert main([str(linear), str(linear.parent), "--out", str(tmp_path / "d"), "--plots", "false"]) == 0
    assert [row["run"] for row in _csv(tmp_path / "d.csv")].count("linear_svm") == 1


@pytest.mark.parametrize("damage", ["config", "labels", "predictions", "scores", "metrics"])
def test_bad_input_is_one_line_naming_the_file(report, tmp_path, capsys, damage):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(report["runs"]["linear_svm"], run)
    broken = {"config": ("config.yaml", "train: [aapd\n"), "labels": ("labels.json", "{not json"),
              "predictions": ("predictions.jsonl", '{"id": "1", "labels": ["cs.LG"]}\n'),
              "scores": ("predictions.jsonl", '{"labels": [], "predicted": [], "scores": {"cs.LG": "x"}}\n'),
              "metrics": ("metrics.json", json.dumps({"schema": 99}))}[damage]
    (run / broken[0]).write_text(broken[1], encoding="utf-8")
    capsys.readouterr()
    assert cli_main(["compare", str(run), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(run / broken[0]) in err, err


def test_points_at_the_same_place_share_one_stacked_label():
    from llmcls.plots import _clustered_labels

    points = [(0, "zeroshot", 0.9, 0.2769), (1, "sft-lora", 2.6, 0.2769), (2, "constrained", 2.5, 0.2769),
              (3, "linear", 2600.0, 0.5652)]
    labels = sorted(_clustered_labels(points), key=lambda item: item[0])
    assert [label for *_, label in labels] == ["zeroshot", "constrained\nsft-lora", "linear"]
    assert _clustered_labels([]) == []


@pytest.mark.parametrize("out", [".", "{tmp}/rep/", "{run}/labels.json/rep", "/proc/rep"])
def test_an_out_that_cannot_be_written_is_one_line_before_any_work(report, tmp_path, capsys, monkeypatch, out):
    from llmcls import report as report_module

    def no_work(*_):
        raise AssertionError("--out is checked before the runs are read")

    monkeypatch.setattr(report_module, "load_runs", no_work)
    run = report["runs"]["bare"]
    out = out.format(run=run, tmp=tmp_path)
    capsys.readouterr()
    assert cli_main(["compare", str(run), "--out", out]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"llmcls compare: error: --out {out}: "), err


def test_write_files_reports_a_folder_in_the_way_in_one_line(tmp_path):
    from llmcls.errors import LlmclsError
    from llmcls.report_formats import Report

    (tmp_path / "r.md").mkdir()
    with pytest.raises(LlmclsError, match=r"^--out .*/r: .*/r\.md: cannot write \("):
        write_files(Report("t"), tmp_path / "r")


def test_long_run_names_are_shortened_in_the_plots_and_stay_distinct(monkeypatch):
    from llmcls import plots

    drawn = []
    monkeypatch.setattr(plots, "_png", lambda fig: drawn.append(fig) or b"")
    middle = "x" * 90
    names = [f"runs/{middle}A{middle}/seed-1", f"runs/{middle}B{middle}/seed-1", "runs/" + "y" * 200, "linear"]
    plots.per_label_f1(["cs.LG", "cs.AI"], [3, 1], {name: [0.5, 0.2] for name in names})
    plots.f1_vs_cost(names, [0.1, 0.5, 0.3, 0.9], [10.0, 1000.0, 100.0, 5.0], [None] * 4)
    plots.precision_recall(names, [(0.2, 0.3), (0.4, 0.5), (0.6, 0.7), (0.8, 0.9)], {})
    legend = [text.get_text() for text in drawn[0].axes[0].get_legend().get_texts()]
    points = [text.get_text() for text in drawn[1].axes[0].texts]  # the annotations beside the points
    pr_legend = [text.get_text() for text in drawn[2].axes[0].get_legend().get_texts()]
    for shown in (legend, sorted(points), pr_legend):
        assert len(set(shown)) == len(names) and all(len(text) <= plots.NAME_WIDTH for text in shown), shown
        assert "linear" in shown and any(text.startswith("runs/yyy") and "…" in text for text in shown)


def test_markdown_escapes_html_and_links_a_file_name_with_spaces():
    from llmcls.report_formats import Figure, Report, markdown
    from llmcls.report_tables import Table

    table = Table("per-label", "Per-label F1", "F1 & support", ["label", "<b>run</b>"],
                  [["<script>alert(1)</script>", 0.5]], ["{}", "{:.3f}"])
    figure = Figure("per-label-f1", "Per-label F1 by system", "Lines.", "my rep-per-label-f1.png", b"")
    text = markdown(Report("t", summary=["Runs: <i>1</i>"], sections=[table, figure], notes=["a<b"]))
    assert "<script>" not in text and "<b>" not in text and "<i>" not in text and "a<b" not in text
    assert "| &lt;script&gt;alert(1)&lt;/script&gt; | 0.500 |" in text and "F1 &amp; support" in text
    assert "![Per-label F1 by system](<my rep-per-label-f1.png>)" in text


def test_scores_in_the_space_order_or_any_other_give_one_matrix():
    space = LabelSpace(["cs.IT", "math.IT", "cs.LG"])
    ordered = {"id": "a", "labels": ["cs.IT"], "predicted": [], "scores": {"cs.IT": 1.5, "math.IT": -2.0, "cs.LG": 0}}
    shuffled = ordered | {"id": "b", "scores": {"cs.LG": 0, "other": 9.0, "cs.IT": 1.5, "math.IT": -2.0}}
    partial = ordered | {"id": "c", "scores": {"math.IT": -2.0}}
    scores = predictions_from_records([ordered, shuffled, partial], space).scores
    np.testing.assert_array_equal(scores, [[1.5, -2.0, 0.0], [1.5, -2.0, 0.0], [-np.inf, -2.0, -np.inf]])


def test_predictions_read_over_a_space_hold_score_rows_and_give_the_same_matrix(tmp_path):
    space = LabelSpace(["cs.IT", "math.IT", "cs.LG"])
    ordered = {"id": "a", "labels": ["cs.IT"], "predicted": [], "scores": {"cs.IT": 1.5, "math.IT": -2.0, "cs.LG": 0}}
    records = [ordered, ordered | {"id": "b", "scores": {"cs.LG": 0, "other": 9.0, "cs.IT": 1.5, "math.IT": -2.0}},
               ordered | {"id": "c", "scores": {"math.IT": -2.0}}]
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    as_rows = read_predictions(path, space)
    assert all(isinstance(r["scores"], np.ndarray) for r in as_rows)  # no dictionary of floats kept a row
    np.testing.assert_array_equal(predictions_from_records(as_rows, space).scores,
                                  predictions_from_records(read_predictions(path), space).scores)
    np.testing.assert_array_equal(as_rows[2]["scores"], [-np.inf, -2.0, -np.inf])


def test_an_empty_out_is_one_line_not_the_terminal_table_alone(report, capsys):
    """`--out ""` (an unset shell variable) printed the table and wrote no report, with exit 0."""
    capsys.readouterr()
    assert cli_main(["compare", str(report["runs"]["bare"]), "--out", ""]) == 2
    assert capsys.readouterr().err.strip().startswith("llmcls compare: error: --out is empty; give a file name prefix")
