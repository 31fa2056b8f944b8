"""Run files go through runs.py: thresholds.json read by RunDir (one-line errors), labels.json and the data-stats
plot written with runs.atomic_write."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from llmcls.cli import main
from llmcls.errors import LlmclsError
from llmcls.labels import LabelSpace
from llmcls.metrics import Thresholds
from llmcls.runs import RunDir

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------------------------------
# thresholds.json


def test_read_thresholds_round_trips_what_a_run_writes(tmp_path):
    run = RunDir(tmp_path).create()
    written = Thresholds(np.array([0.25, np.inf, -1.5]), per_label=True, min_labels=1, validation_micro_f1=0.5)
    run.write_json("thresholds.json", written.to_dict())
    read = run.read_thresholds()
    assert np.array_equal(read.values, written.values)
    assert (read.per_label, read.min_labels, read.validation_micro_f1) == (True, 1, 0.5)


BROKEN_THRESHOLDS = {
    "truncated": ('{"values": [0.5, 0.', "invalid JSON"),
    "empty": ("", "invalid JSON"),
    "no values": ('{"per_label": false}', "no 'values' list"),
    "a list": ("[0.5, 0.5]", "no 'values' list"),
    "a value that is no number": ('{"values": [0.5, "high"]}', "invalid thresholds"),
    "min_labels no number": ('{"values": [0.5], "min_labels": "one"}', "invalid thresholds"),
    "not UTF-8": (b'{"values": [0.5]} \xff', "cannot read"),
}


@pytest.mark.parametrize("content, message", BROKEN_THRESHOLDS.values(), ids=BROKEN_THRESHOLDS.keys())
def test_read_thresholds_of_a_broken_file_is_one_line_naming_it(tmp_path, content, message):
    path = tmp_path / "thresholds.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(LlmclsError) as info:
        RunDir(tmp_path).read_thresholds()
    text = str(info.value)
    assert text.startswith(f"{path}: {message}") and "\n" not in text, text


def test_read_thresholds_without_the_file_is_one_line(tmp_path):
    with pytest.raises(LlmclsError, match="thresholds.json: cannot read"):
        RunDir(tmp_path).read_thresholds()


def _trained_run(folder, thresholds: str):
    """The files predict-encoder checks before it loads anything: no model is needed to reach thresholds.json."""
    folder.mkdir()
    (folder / "config.yaml").write_text("model: tiny\ntext_fields: [title, abstract]\nmax_length: 32\nloss: bce\n")
    LabelSpace(["cs.IT", "cs.LG"]).save(folder / "labels.json")
    (folder / "model").mkdir()
    (folder / "model" / "config.json").write_text("{}")
    (folder / "thresholds.json").write_text(thresholds)
    return folder


@pytest.mark.parametrize("content", ['{"values": [0.5, 0.', '{"per_label": true}'], ids=["truncated", "no values"])
def test_predict_encoder_with_a_broken_thresholds_file_is_one_line(tmp_path, capsys, content):
    run = _trained_run(tmp_path / "trained", content)
    out = tmp_path / "out"
    assert main(["predict-encoder", "--run", str(run), "--test", "aapd-test", "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"llmcls predict-encoder: error: {run / 'thresholds.json'}: "), err
    assert not out.exists()  # refused before anything is written


# ---------------------------------------------------------------------------------------------------------------------
# labels.json


def test_write_labels_writes_what_label_space_loads(tmp_path):
    space = LabelSpace(["cs.IT", "math.IT", "énergie"])
    run = RunDir(tmp_path / "run").create()
    run.write_labels(space)
    path = run.path / "labels.json"
    assert path.read_text(encoding="utf-8") == space.to_json()
    assert json.loads(path.read_text(encoding="utf-8"))["names"]["cs.IT"] == "Information Theory"
    assert LabelSpace.load(path) == space == run.label_space()
    assert sorted(p.name for p in run.path.iterdir()) == ["labels.json"]


def test_write_labels_cut_short_leaves_the_earlier_file(tmp_path, monkeypatch):
    run = RunDir(tmp_path / "run").create()
    run.write_labels(LabelSpace(["cs.IT", "cs.LG"]))
    before = (run.path / "labels.json").read_bytes()

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)  # the new text is written, not yet renamed into place
    with pytest.raises(LlmclsError) as info:
        run.write_labels(LabelSpace(["stat.ML"]))
    monkeypatch.undo()
    assert str(info.value) == f"{run.path / 'labels.json'}: cannot write (No space left on device)"
    assert (run.path / "labels.json").read_bytes() == before
    assert sorted(p.name for p in run.path.iterdir()) == ["labels.json"]  # no temporary file left behind


# ---------------------------------------------------------------------------------------------------------------------
# the data-stats plot


def test_data_stats_plot_is_a_png_of_the_figure(tmp_path, capsys):
    from PIL import Image

    plot = tmp_path / "new" / "stats.png"  # its folder is created
    assert main(["data", "stats", "aapd-train", "--plot", str(plot)]) == 0
    assert f"Wrote {plot}" in capsys.readouterr().err.replace("\n", "")
    assert plot.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(plot) as image:
        image.verify()
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.size == (1320, 495)  # 12 x 4.5 inches at 110 dpi
    assert sorted(p.name for p in plot.parent.iterdir()) == ["stats.png"]


def test_data_stats_plot_ranks_labels_from_one_in_whole_numbers(monkeypatch):
    """Five labels had ticks at 0.5, 1.5, ... and the most frequent label at rank 0."""
    from llmcls import plots

    figures = []
    monkeypatch.setattr(plots, "_png", lambda fig: figures.append(fig) or b"")
    plots.data_stats([9, 5, 3, 2, 1], [0, 100, 200], [3, 4], 120.0)
    axis = figures[0].axes[0]
    axis.figure.canvas.draw()
    ticks = [t for t in axis.get_xticks() if axis.get_xlim()[0] <= t <= axis.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    assert [round(bar.get_x() + bar.get_width() / 2) for bar in axis.patches] == [1, 2, 3, 4, 5]


def test_data_stats_plot_that_cannot_be_written_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    plot = blocker / "stats.png"
    assert main(["data", "stats", "aapd-train", "--json", "--plot", str(plot)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines()[-1].startswith(f"llmcls data stats: error: {plot}: cannot write"), err


def test_data_commands_import_neither_pyplot_nor_the_compare_command(tmp_path):
    """The stats plot is drawn without pyplot (no global backend switch) and the terminal tables come from
    report_formats, not from the `compare` command module."""
    plot = tmp_path / "stats.png"
    code = ("import sys; from llmcls.cli import main; "
            "assert main(['data', 'list']) == 0; "
            f"assert main(['data', 'stats', 'aapd-test', '--plot', {str(plot)!r}]) == 0; "
            "loaded = [m for m in ('matplotlib.pyplot', 'llmcls.report') if m in sys.modules]; "
            "assert not loaded, loaded")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=os.environ | {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    assert plot.read_bytes()[:8] == PNG_SIGNATURE


def test_the_source_digest_covers_the_prompt_templates(tmp_path, monkeypatch):
    """llmcls_source tells runs of one version of llmcls from another's: the prompt templates are part of it (in a
    checkout resources/prompts is a symbolic link, which a plain recursive glob does not follow)."""
    from llmcls import environment

    names = dict(environment.source_files())
    assert {"runs.py", "environment.py", "resources/prompts/zeroshot.jinja",
            "resources/prompts/fewshot.jinja"} <= set(names)
    before = environment.source_digest.__wrapped__()
    template = tmp_path / "zeroshot.jinja"
    template.write_text(names["resources/prompts/zeroshot.jinja"].read_text() + "\nedited")
    files = [(name, template if name == "resources/prompts/zeroshot.jinja" else path) for name, path in names.items()]
    monkeypatch.setattr(environment, "source_files", lambda: sorted(files))
    assert environment.source_digest.__wrapped__() != before


# ---------------------------------------------------------------------------------------------------------------------
# Broken run files read by evaluate and compare: one line naming the file (and the line)


def test_evaluate_of_a_predictions_file_with_a_bad_byte_names_its_line(tmp_path, capsys):
    """The reader decoded the whole file as UTF-8 text and caught only OSError: a UnicodeDecodeError traceback."""
    path = tmp_path / "predictions.jsonl"
    good = json.dumps({"id": "1", "labels": ["cs.IT"], "predicted": ["cs.IT"]}).encode()
    path.write_bytes(good + b"\n" + good.replace(b'"1"', b'"2\xff"') + b"\n")
    assert main(["evaluate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"llmcls evaluate: error: {path}:2: not UTF-8 text (invalid start byte)", err


@pytest.mark.parametrize("content", ["[]", '"done"'])
def test_compare_of_a_metrics_file_that_is_no_record_is_one_line(tmp_path, capsys, content):
    """A metrics.json holding a list made compare fail with AttributeError ('list' object has no attribute 'get')."""
    run = RunDir(tmp_path / "run").create()
    (run.path / "metrics.json").write_text(content)
    assert main(["compare", str(run.path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"{run.path / 'metrics.json'}: not a metrics record" in err, err
