"""Tests for llmcls.labels: taxonomy, aliases and LabelSpace (offline, fast)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llmcls.labels import (
    ALIASES,
    GROUPS,
    CategoryInfo,
    LabelSpace,
    UnknownLabelError,
    aliases_of,
    archive_of,
    category_name,
    taxonomy,
)

SHARED_DATA = Path("/work/shared/data")
BUNDLED_DATA = Path(__file__).resolve().parents[1] / "llmcls" / "resources" / "data"

# ---------------------------------------------------------------------------------------------------------------------
# Taxonomy


@pytest.mark.parametrize(
    ("code", "name"),
    [
        ("cs.IT", "Information Theory"),
        ("math.IT", "Information Theory"),
        ("physics.soc-ph", "Physics and Society"),
        ("cs.LG", "Machine Learning"),
        ("stat.ML", "Machine Learning"),
        ("hep-th", "High Energy Physics - Theory"),
        ("astro-ph.GA", "Astrophysics of Galaxies"),
        ("cond-mat.str-el", "Strongly Correlated Electrons"),
        ("math-ph", "Mathematical Physics"),
        ("cmp-lg", "Computation and Language"),
    ],
)
def test_category_names(code, name):
    assert category_name(code) == name


def test_unknown_codes_have_no_name():
    assert category_name("cs.XX") is None
    assert category_name("") is None
    assert category_name("CS.IT") is None  # codes are case-sensitive, as on arXiv


@pytest.mark.parametrize(
    ("code", "archive"),
    [
        ("cs.IT", "cs"),
        ("cond-mat.str-el", "cond-mat"),
        ("astro-ph.GA", "astro-ph"),
        ("hep-th", "hep-th"),
        ("math-ph", "math-ph"),
        ("physics.soc-ph", "physics"),
        ("foo.bar.baz", "foo"),  # unknown codes split at the first dot
        ("cmp-lg", "cs"),  # retired archives count under the one that took them over
        ("chao-dyn", "nlin"),
        ("q-alg", "math"),
        ("supr-con", "cond-mat"),
        ("bayes-an", "physics"),
    ],
)
def test_archive_of(code, archive):
    assert archive_of(code) == archive


def test_taxonomy_rows_are_consistent():
    table = taxonomy()
    assert len(table) >= 170
    for code, info in table.items():
        assert isinstance(info, CategoryInfo)
        assert info.code == code
        assert info.name and info.name == info.name.strip()
        assert info.archive == code.split(".", 1)[0]  # the code's own archive; archive_of maps retired ones
        assert archive_of(code) in {i.archive for i in table.values() if i.status == "current"} | {"astro-ph",
                                                                                                   "cond-mat"}
        assert info.group in GROUPS
        assert info.status in ("current", "legacy")
    current = {code for code, info in table.items() if info.status == "current"}
    assert {"astro-ph.CO", "eess.IV", "econ.EM", "q-fin.MF", "nlin.SI", "cs.GL", "stat.OT"} <= current
    assert {"astro-ph", "cond-mat", "cmp-lg", "solv-int", "supr-con"} <= set(table) - current


def test_taxonomy_returns_a_copy():
    table = taxonomy()
    table.pop("cs.IT")
    assert "cs.IT" in taxonomy()


@pytest.mark.parametrize(("alias", "canonical"), ALIASES)
def test_official_aliases_resolve_both_ways(alias, canonical):
    table = taxonomy()
    assert table[alias].alias_of == canonical
    assert table[canonical].alias_of is None
    assert aliases_of(alias) == {canonical}
    assert aliases_of(canonical) == {alias}
    assert table[alias].name == table[canonical].name or {alias, canonical} == {"q-fin.EC", "econ.GN"}


def test_aliases_cover_the_requested_pairs():
    pairs = {frozenset(pair) for pair in ALIASES}
    for a, b in [("math.IT", "cs.IT"), ("math.MP", "math-ph"), ("stat.TH", "math.ST")]:
        assert frozenset((a, b)) in pairs
    for a, b in [("math.NA", "cs.NA"), ("eess.SY", "cs.SY"), ("econ.GN", "q-fin.EC")]:
        assert frozenset((a, b)) in pairs
    assert aliases_of("cs.LG") == set()
    assert aliases_of("not-a-code") == set()


def _row_codes(row: dict) -> list[str]:
    # The snapshot format stores one space-separated string; the other files store a list.
    value = row.get("categories", row.get("labels", []))
    return value.split() if isinstance(value, str) else list(value)


def _categories_in_data() -> dict[str, set[str]]:
    jsonl = [SHARED_DATA / "arxiv-snapshot-sample.jsonl", SHARED_DATA / "arxiv-abstracts-sample.jsonl"]
    jsonl += sorted(BUNDLED_DATA.glob("*.jsonl"))
    found: dict[str, set[str]] = {}
    for path in jsonl:
        if path.exists():
            with path.open(encoding="utf-8") as fh:
                found[str(path)] = {code for line in fh if line.strip() for code in _row_codes(json.loads(line))}
    aapd = SHARED_DATA / "aapd" / "labels.txt"
    if aapd.exists():
        found[str(aapd)] = {line.strip() for line in aapd.read_text(encoding="utf-8").splitlines() if line.strip()}
    return found


def test_every_category_in_the_data_is_in_the_taxonomy():
    found = _categories_in_data()
    if not found:
        pytest.skip("no data files present")
    table = taxonomy()
    missing = {path: sorted(codes - set(table)) for path, codes in found.items() if codes - set(table)}
    assert not missing


def test_import_stays_light():
    code = "import sys, llmcls.labels; bad = {'torch', 'datasets', 'sklearn'} & set(sys.modules); print(sorted(bad))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------------------------------
# LabelSpace basics


def test_basic_protocol():
    space = LabelSpace(["cs.IT", "math.IT", "cs.LG"])
    assert space.labels == ("cs.IT", "math.IT", "cs.LG")
    assert len(space) == 3
    assert list(space) == ["cs.IT", "math.IT", "cs.LG"]
    assert space[1] == "math.IT"
    assert "cs.LG" in space and "stat.ML" not in space
    assert space.index("cs.LG") == 2
    assert space == LabelSpace(("cs.IT", "math.IT", "cs.LG"))
    assert space != LabelSpace(["math.IT", "cs.IT", "cs.LG"])  # order is part of identity
    assert hash(space) == hash(LabelSpace(space.labels))
    assert "3 labels" in repr(space)


@pytest.mark.parametrize("bad", [["a", "b", "a"], ["a", ""], ["a", " b"], ["a\n"]])
def test_invalid_labels_raise_value_error(bad):
    with pytest.raises(ValueError):
        LabelSpace(bad)


def test_non_string_labels_raise_type_error():
    with pytest.raises(TypeError):
        LabelSpace(["a", 3])
    with pytest.raises(TypeError):
        LabelSpace("cs.IT")


def test_index_of_unknown_label():
    space = LabelSpace(["cs.IT"])
    with pytest.raises(UnknownLabelError) as info:
        space.index("math.IT")
    assert isinstance(info.value, KeyError)
    assert info.value.label == "math.IT"
    assert "math.IT" in str(info.value) and "alias" in str(info.value)


def test_names_and_display():
    space = LabelSpace(["cs.IT", "my-label"])
    assert space.name("cs.IT") == "Information Theory"
    assert space.name("my-label") is None
    assert space.display("cs.IT") == "cs.IT (Information Theory)"
    assert space.display("my-label") == "my-label"


# ---------------------------------------------------------------------------------------------------------------------
# Ordering rule


LISTS = [
    ["cs.LG", "stat.ML"],
    ["cs.IT", "math.IT"],
    ["cs.IT", "math.IT", "cs.LG"],
    ["cs.LG"],
    ["cs.AI", "cs.LG", "cs.LG"],  # a repeated label counts once per example
    ["quant-ph"],
]


def test_from_label_lists_orders_by_frequency_then_label():
    space = LabelSpace.from_label_lists(LISTS)
    # cs.LG 4; cs.IT and math.IT 2 (tie: string order); cs.AI, quant-ph, stat.ML 1 (string order)
    assert space.labels == ("cs.LG", "cs.IT", "math.IT", "cs.AI", "quant-ph", "stat.ML")


def test_from_label_lists_keeps_both_alias_codes():
    space = LabelSpace.from_label_lists(LISTS)
    assert "cs.IT" in space and "math.IT" in space


def test_min_count_and_top_k():
    assert LabelSpace.from_label_lists(LISTS, min_count=2).labels == ("cs.LG", "cs.IT", "math.IT")
    assert LabelSpace.from_label_lists(LISTS, top_k=2).labels == ("cs.LG", "cs.IT")
    assert LabelSpace.from_label_lists(LISTS, min_count=2, top_k=10).labels == ("cs.LG", "cs.IT", "math.IT")
    assert len(LabelSpace.from_label_lists(LISTS, min_count=5)) == 0
    with pytest.raises(ValueError):
        LabelSpace.from_label_lists(LISTS, min_count=0)
    with pytest.raises(ValueError):
        LabelSpace.from_label_lists(LISTS, top_k=-1)


def test_from_label_lists_accepts_a_generator_and_rejects_strings():
    space = LabelSpace.from_label_lists(iter(row) for row in [("a", "b"), ("b",)])
    assert space.labels == ("b", "a")
    with pytest.raises(TypeError, match="split"):
        LabelSpace.from_label_lists(["cs.IT math.IT"])


# ---------------------------------------------------------------------------------------------------------------------
# Multi-hot


def test_multi_hot_round_trip():
    space = LabelSpace.from_label_lists(LISTS)
    matrix = space.to_multi_hot(LISTS)
    assert matrix.dtype == bool and matrix.shape == (len(LISTS), len(space))
    assert matrix[0].tolist() == [True, False, False, False, False, True]
    back = space.from_multi_hot(matrix)
    assert back == [sorted(set(row), key=space.index) for row in LISTS]
    assert space.from_multi_hot(matrix.astype(np.int64)) == back
    assert space.from_multi_hot(matrix.tolist()) == back


def test_multi_hot_empty_inputs():
    space = LabelSpace(["a", "b"])
    assert space.to_multi_hot([]).shape == (0, 2)
    assert space.to_multi_hot([[], ["b"]]).tolist() == [[False, False], [False, True]]
    assert space.from_multi_hot(np.zeros((2, 2), dtype=bool)) == [[], []]
    assert space.from_multi_hot(np.zeros((0, 2), dtype=bool)) == []
    empty = LabelSpace([])
    assert empty.to_multi_hot([[], []]).shape == (2, 0)
    assert empty.from_multi_hot(np.zeros((2, 0), dtype=bool)) == [[], []]


def test_multi_hot_accepts_tuples_sets_and_arrays():
    space = LabelSpace(["a", "b", "c"])
    rows = [("a", "c"), {"b"}, np.array(["c", "a"])]
    assert space.to_multi_hot(rows).tolist() == [[True, False, True], [False, True, False], [True, False, True]]


def test_unknown_labels():
    space = LabelSpace(["cs.AI", "cs.LG"])
    with pytest.raises(UnknownLabelError) as info:
        space.to_multi_hot([["cs.LG"], ["cs.ai"]])
    assert info.value.label == "cs.ai"
    assert "cs.AI" in str(info.value)  # case hint
    ignored = space.to_multi_hot([["cs.LG", "cs.ai"], ["zz"]], unknown="ignore")
    assert ignored.tolist() == [[False, True], [False, False]]
    with pytest.raises(ValueError):
        space.to_multi_hot([["cs.LG"]], unknown="drop")


def test_to_multi_hot_rejects_a_string_row():
    with pytest.raises(TypeError, match="split"):
        LabelSpace(["a", "b"]).to_multi_hot([["a"], "a b"])


def test_from_multi_hot_rejects_scores_and_wrong_shapes():
    space = LabelSpace(["a", "b"])
    with pytest.raises(ValueError, match="threshold"):
        space.from_multi_hot(np.array([[0.2, 0.9]]))
    with pytest.raises(ValueError):
        space.from_multi_hot(np.zeros((2, 3), dtype=bool))
    with pytest.raises(ValueError):
        space.from_multi_hot(np.zeros(2, dtype=bool))


def test_multi_hot_at_scale():
    n, width = 100_000, 200
    space = LabelSpace(f"label{i:03d}" for i in range(width))
    picks = np.random.default_rng(0).integers(0, width, size=(n, 4)).tolist()
    rows = [[space[j] for j in pick] for pick in picks]  # may repeat a label within a row, which is harmless
    matrix = space.to_multi_hot(rows)
    assert matrix.shape == (n, width)
    assert matrix.sum() == sum(len(set(pick)) for pick in picks)
    for i in (0, 1, n // 2, n - 1):
        assert np.flatnonzero(matrix[i]).tolist() == sorted(set(picks[i]))
    back = space.from_multi_hot(matrix)
    assert back[n // 2] == [space[j] for j in sorted(set(picks[n // 2]))]


# ---------------------------------------------------------------------------------------------------------------------
# Files


def test_save_and_load_json_object(tmp_path):
    space = LabelSpace(["cs.IT", "math.IT", "my-label"])
    written = space.save(tmp_path / "labels.json")
    data = json.loads(written.read_text(encoding="utf-8"))
    assert data == {
        "labels": ["cs.IT", "math.IT", "my-label"],
        "names": {"cs.IT": "Information Theory", "math.IT": "Information Theory"},
    }
    assert LabelSpace.load(written) == space
    assert [p.name for p in tmp_path.iterdir()] == ["labels.json"]  # no temp file left behind


def test_save_and_load_via_directory(tmp_path):
    space = LabelSpace(["b", "a"])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    assert space.save(run_dir) == run_dir / "labels.json"
    assert LabelSpace.load(run_dir) == space
    assert LabelSpace.load(str(run_dir / "labels.json")) == space


def test_save_overwrites_and_creates_parents(tmp_path):
    target = tmp_path / "deep" / "er" / "labels.json"
    LabelSpace(["x"]).save(target)
    LabelSpace(["y", "z"]).save(target)
    assert LabelSpace.load(target).labels == ("y", "z")


def test_save_keeps_unicode_readable(tmp_path):
    path = LabelSpace(["énergie"]).save(tmp_path / "labels.json")
    assert "énergie" in path.read_text(encoding="utf-8")
    assert LabelSpace.load(path).labels == ("énergie",)


def test_load_plain_json_list(tmp_path):
    path = tmp_path / "labels.json"
    path.write_text('["cs.LG", "stat.ML"]', encoding="utf-8")
    assert LabelSpace.load(path).labels == ("cs.LG", "stat.ML")


def test_load_text_file(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("# AAPD labels\ncs.IT\n\nmath.IT\n  cs.LG  \n# end\n", encoding="utf-8")
    assert LabelSpace.load(path).labels == ("cs.IT", "math.IT", "cs.LG")


@pytest.mark.parametrize(("name", "content"), [("labels.txt", "cs.IT\ncs.LG\n"),
                                               ("labels.json", '["cs.IT", "cs.LG"]')])
def test_load_file_with_bom(tmp_path, name, content):
    path = tmp_path / name
    path.write_text("\ufeff" + content, encoding="utf-8")
    assert LabelSpace.load(path).labels == ("cs.IT", "cs.LG")


def test_save_gives_the_mode_of_other_files(tmp_path):
    old = os.umask(0o022)
    try:
        path = LabelSpace(["cs.IT"]).save(tmp_path / "labels.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_load_aapd_labels_file():
    aapd = SHARED_DATA / "aapd" / "labels.txt"
    if not aapd.exists():
        pytest.skip("shared AAPD data absent")
    space = LabelSpace.load(aapd)
    assert len(space) == 54 and "cs.IT" in space and "math.IT" in space


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.json", '{"labels": ["a",', "invalid JSON"),
        ("dup.json", '["a", "b", "a"]', "duplicate"),
        ("dup.txt", "a\nb\n\na\n", "duplicate label 'a' on lines 1 and 4"),
        ("obj.json", '{"names": {}}', "labels"),
        ("num.json", "[1, 2]", "strings"),
        ("empty.txt", "# nothing\n\n", "no labels"),
        ("blank.json", '{"labels": [""]}', "non-empty"),
    ],
)
def test_load_errors_name_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message) as info:
        LabelSpace.load(path)
    text = str(info.value)
    assert text.count(name) == 1 and "\n" not in text


def test_load_missing_file(tmp_path):
    with pytest.raises(ValueError, match="missing.json") as info:
        LabelSpace.load(tmp_path / "missing.json")
    assert "\n" not in str(info.value)
