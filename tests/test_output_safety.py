"""What llmcls writes must never cost a result it did not make, nor leave a report that mixes two reports: a
benchmark refuses a finished run it did not make, `data stats --plot` writes only a .png, a rewritten report removes
its own files it no longer writes (and nothing else), `compare` of a folder that is a run includes the runs below
it, and the notes on runs scored apart say which run is which."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from report_runs import LABELS, gold_matrix, make_runs, write_run
from test_benchmark import SMALL, linear, run, write_benchmark

from llmcls import benchmark
from llmcls.cli import main as cli_main
from llmcls.errors import LlmclsError
from llmcls.labels import LabelSpace
from llmcls.report import main as compare_main
from llmcls.report_data import find_runs


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# ---------------------------------------------------------------------------------------------------------------------
# 1. A benchmark and a finished run it did not make


def test_a_benchmark_refuses_to_replace_a_finished_run_it_did_not_make(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    (foreign,) = [p for p in make_runs(tmp_path / "runs") if p.name == "linear_svm"]
    shutil.copytree(foreign, out / "lin")  # a finished train-linear run, copied in by hand: no benchmark.json
    before = {p.name: p.read_bytes() for p in (out / "lin").iterdir()}
    ran: list[str] = []
    monkeypatch.setattr(benchmark, "call_command", lambda command, argv: ran.append(command))
    config = write_benchmark(tmp_path / "bench.yaml", [linear("lin"), linear("other")], **SMALL)
    capsys.readouterr()

    code = cli_main(["benchmark", "--config", str(config), "--output_dir", str(out), "--only", "lin"])
    err = one_error_line(capsys)
    assert code == 2 and not ran  # refused before anything ran
    assert f"{out / 'lin'} holds a finished run that no benchmark made" in err
    assert "move it elsewhere, or choose another --output_dir" in err
    assert {p.name: p.read_bytes() for p in (out / "lin").iterdir()} == before
    assert not list(out.glob(".lin.previous"))
    with pytest.raises(LlmclsError, match="no benchmark made"):
        run(config, out, "--dry_run")


@pytest.mark.parametrize("argv", [
    ["train-linear", "--train", "aapd-train", "--test", "aapd-test"],
    ["zeroshot", "--model", "no/model", "--test", "aapd-test"],
    ["train-encoder", "--model", "no/model", "--train", "aapd-train", "--test", "aapd-test"],
    ["sft", "--model_name_or_path", "no/model", "--train", "aapd-train", "--test", "aapd-test"],
])
def test_a_config_yaml_no_run_wrote_is_never_replaced(tmp_path, capsys, argv):
    """--output_dir . in a folder holding a recipe (or any config.yaml of a project) wrote the run's config over it."""
    (tmp_path / "config.yaml").write_text("# my recipe\ntrain: aapd-train\n")
    assert cli_main([*argv, "--output_dir", str(tmp_path)]) == 2
    assert f"{tmp_path / 'config.yaml'} is no llmcls run's (no labels.json, predictions or metrics beside it), and " \
        f"`llmcls {argv[0]}` would write its own config.yaml there" in " ".join(capsys.readouterr().err.split())
    assert (tmp_path / "config.yaml").read_text() == "# my recipe\ntrain: aapd-train\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


@pytest.mark.parametrize("argv", [
    ["train-linear", "--train", "aapd-train", "--test", "aapd-test"],
    ["zeroshot", "--model", "no/model", "--test", "aapd-test"],
    ["train-encoder", "--model", "no/model", "--train", "aapd-train", "--test", "aapd-test"],
    ["sft", "--model_name_or_path", "no/model", "--train", "aapd-train", "--test", "aapd-test"],
    ["benchmark"],
])
def test_an_empty_output_dir_is_refused_not_the_working_directory(tmp_path, capsys, monkeypatch, argv):
    """`--output_dir ""` (an unset shell variable) wrote the run into the working directory."""
    if argv == ["benchmark"]:
        argv = ["benchmark", "--config", str(write_benchmark(tmp_path / "bench.yaml", [linear("lin")], **SMALL))]
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    assert cli_main([*argv, "--output_dir", ""]) == 2
    assert "error: --output_dir is empty; " in capsys.readouterr().err
    assert not list((tmp_path / "cwd").iterdir())


def test_a_foreign_run_left_out_of_the_report_says_what_to_do(tmp_path, capsys):
    """Not selected, it is only left out of the report; the note must not say `run the system again`, which the
    benchmark would refuse."""
    out = tmp_path / "out"
    (foreign,) = [p for p in make_runs(tmp_path / "runs") if p.name == "linear_svm"]
    shutil.copytree(foreign, out / "lin")
    config = write_benchmark(tmp_path / "bench.yaml", [linear("lin"), linear("other")], **SMALL)
    assert run(config, out, "--only", "other") == 0
    err = " ".join(capsys.readouterr().err.split())
    assert (f"lin: left out of the report: {out / 'lin'} has no benchmark.json (not run by a benchmark) (move it "
            "elsewhere, or choose another --output_dir, then run the system)") in err


# ---------------------------------------------------------------------------------------------------------------------
# 2. data stats --plot


@pytest.mark.parametrize("name", ["metrics.json", "out.txt", "stats"])
def test_data_stats_plot_must_be_a_png(tmp_path, capsys, name):
    target = tmp_path / name
    if name == "metrics.json":
        target.write_text('{"schema": 1}\n')
    assert cli_main(["data", "stats", "aapd-train", "--plot", str(target)]) == 2
    err = one_error_line(capsys)
    assert f"--plot {target}: the plot is a PNG image; give a file name ending in .png" in err
    if name == "metrics.json":
        assert target.read_text() == '{"schema": 1}\n'
    else:
        assert not target.exists()


# ---------------------------------------------------------------------------------------------------------------------
# 3. A report written again under the same prefix


def test_a_report_written_again_names_the_files_it_no_longer_writes(tmp_path, capsys):
    """compare --out keeps a file named like a report's that it does not write (it may be the user's own) and says
    so; the benchmark, whose report* names are reserved, removes them (next test)."""
    from llmcls.report import REPORT_SUFFIXES

    linear_svm, zeroshot, _ = make_runs(tmp_path / "runs")
    prefix = tmp_path / "rep" / "c"
    assert compare_main([str(linear_svm), str(zeroshot), "--out", str(prefix)]) == 0
    # every file of a full report is one a later report names when it no longer writes it
    assert {p.name for p in prefix.parent.iterdir()} == {f"c{suffix}" for suffix in REPORT_SUFFIXES}
    capsys.readouterr()
    assert compare_main([str(linear_svm), "--out", str(prefix), "--plots", "false"]) == 0  # no pairs, no plots
    assert {p.name for p in prefix.parent.iterdir()} == {f"c{suffix}" for suffix in REPORT_SUFFIXES}  # all kept
    said = " ".join(capsys.readouterr().err.split())
    assert (f"note: this report does not write c-paired.csv, c-per-label-f1.png, c-f1-vs-cost.png, "
            f"c-precision-recall.png, which {prefix.parent} holds (an earlier report's?)") in said


def test_a_benchmark_report_loses_its_paired_table_when_a_system_leaves_it(tmp_path):
    config = write_benchmark(tmp_path / "bench.yaml", [linear("a"), linear("b")], **SMALL)
    out = tmp_path / "out"
    assert run(config, out) == 0
    assert "b," in (out / "report-paired.csv").read_text()
    write_benchmark(config, [linear("a")], **SMALL)  # b leaves the YAML: a alone, nothing to pair
    assert run(config, out) == 0
    assert not (out / "report-paired.csv").exists()
    assert (out / "b" / "metrics.json").exists()  # its run is not the report's to remove


# ---------------------------------------------------------------------------------------------------------------------
# 4. compare of a folder that is itself a run


def test_a_folder_that_holds_a_run_names_the_runs_below_it(tmp_path, capsys):
    """A run folder stands for its own run (the runs below it, such as predict-encoder's RUN/predict-*, are scored
    on other files), but the runs below are no longer hidden without a word: a note names them."""
    root = tmp_path / "runs"
    make_runs(root)  # root/linear_svm, root/zeroshot, root/bare
    shutil.copytree(root / "linear_svm", root, dirs_exist_ok=True)  # and a run in root itself
    left_out: list[str] = []
    assert find_runs([root], None, left_out) == [root]
    assert left_out == [f"3 finished runs below the run {root} (e.g. {root / 'bare'}): name them to compare"]
    assert find_runs([root / "bare", root]) == [root / "bare", root]
    capsys.readouterr()
    assert compare_main([str(root)]) == 0
    assert f"3 finished runs below the run {root}" in " ".join(capsys.readouterr().err.split())


# ---------------------------------------------------------------------------------------------------------------------
# 5. notes that say which run is which


def test_the_notes_on_runs_scored_apart_name_the_runs(tmp_path, capsys):
    space, gold = LabelSpace(LABELS), gold_matrix(np.random.default_rng(0))
    paths = [write_run(tmp_path / name, space, gold[:n], gold[:n], system="s", model="m", timing={})
             for name, n in (("big", 40), ("small", 10), ("big2", 40))]
    capsys.readouterr()
    assert compare_main([str(p) for p in paths]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert ("note: the runs were scored on different numbers of examples: big, big2: 40; small: 10 (test split of "
            "each)") in err

