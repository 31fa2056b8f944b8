"""Readers: every format, field detection, normalisation, bad input (one clear line), filters."""

from __future__ import annotations

import csv
import datetime
import gzip
import json

import pytest
from conftest import write_jsonl

from llmcls.config import DataArguments
from llmcls.data import ReadOptions, bundled_samples, read_file
from llmcls.errors import DataError, LlmclsError


def test_snapshot_is_detected_and_normalised(snapshot_rows, tmp_path):
    path = write_jsonl(tmp_path / "arxiv-metadata-oai-snapshot.json", snapshot_rows[:50])
    result = read_file(str(path))
    assert result.format == "arxiv-snapshot"
    ds = result.dataset
    assert ds.column_names == ["id", "title", "abstract", "labels"]
    first = ds[0]
    raw = snapshot_rows[0]
    assert first["id"] == raw["id"]
    assert first["labels"] == raw["categories"].split()
    assert "\n" not in first["title"] and "  " not in first["title"]
    assert first["abstract"] == " ".join(raw["abstract"].split())  # line breaks and indentation collapsed
    multi = next(r for r in ds if len(r["labels"]) > 1)
    assert all(" " not in label for label in multi["labels"])


def test_aapd_jsonl(aapd_rows, tmp_path):
    ds = read_file(str(write_jsonl(tmp_path / "val.jsonl", aapd_rows[:20]))).dataset
    assert ds["labels"][:3] == [r["labels"] for r in aapd_rows[:3]]
    assert ds["title"][0] == ""  # AAPD has no title (null in the file)


def test_a_file_replaced_with_the_same_mtime_is_read_again(aapd_rows, tmp_path):
    """`cp -p`, `touch -r` or a sync can put other rows at the same path with the same modification time."""
    import os

    path = write_jsonl(tmp_path / "train.jsonl", aapd_rows[:20])
    stamp = path.stat().st_mtime_ns
    assert len(read_file(str(path)).dataset) == 20
    write_jsonl(path, aapd_rows[:3])
    os.utime(path, ns=(stamp, stamp))
    assert len(read_file(str(path)).dataset) == 3


def test_another_date_window_reuses_the_normalised_file(snapshot_rows, tmp_path):
    """The snapshot is read and normalised once; a new --since/--until writes only the rows it keeps."""
    import datasets

    path = write_jsonl(tmp_path / "snapshot.jsonl", snapshot_rows)
    cache = datasets.config.HF_DATASETS_CACHE

    def written() -> set:
        return set(cache.rglob("cache-*.arrow"))

    first = read_file(str(path), ReadOptions(since="2008-01-01")).dataset
    before = written()
    second = read_file(str(path), ReadOptions(since="2009-01-01")).dataset
    assert len(written() - before) == 1  # the kept rows of the new window, not the whole file again
    assert 0 < len(second) < len(first)


def test_aapd_paired_text_files(aapd_rows, tmp_path):
    (tmp_path / "text_train").write_text("".join(r["abstract"] + "\n" for r in aapd_rows[:10]))
    (tmp_path / "label_train").write_text("".join(" ".join(r["labels"]) + "\n" for r in aapd_rows[:10]))
    for name in ("text_train", "label_train"):
        result = read_file(str(tmp_path / name))
        assert result.format == "aapd-text"
        assert result.dataset["labels"] == [r["labels"] for r in aapd_rows[:10]]
        assert result.dataset["abstract"][3] == aapd_rows[3]["abstract"]


def test_aapd_pair_with_mismatched_lengths(tmp_path):
    (tmp_path / "text_test").write_text("a b c\nd e f\n")
    (tmp_path / "label_test").write_text("cs.IT\n")
    with pytest.raises(DataError, match="text_test.*2 lines.*label_test has 1"):
        read_file(str(tmp_path / "text_test"))


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".parquet.gz", ".jsonl.gz", ".json"])
def test_generic_formats_with_field_flags(aapd_rows, tmp_path, suffix):
    rows = [{"paper": f"p{i}", "body": r["abstract"], "cats": ";".join(r["labels"])} for i, r in
            enumerate(aapd_rows[:12])]
    path = tmp_path / f"data{suffix}"
    if suffix == ".csv":
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    elif suffix == ".parquet.gz":
        import pyarrow as pa
        import pyarrow.parquet as pq

        plain = tmp_path / "data.parquet"
        pq.write_table(pa.Table.from_pylist(rows), plain)
        path.write_bytes(gzip.compress(plain.read_bytes()))
        plain.unlink()
    elif suffix == ".json":
        path.write_text(json.dumps(rows))
    else:
        with gzip.open(path, "wt") as handle:
            handle.write("".join(json.dumps(r) + "\n" for r in rows))
    options = ReadOptions(text_field="body", label_field="cats", id_field="paper", label_sep=";")
    ds = read_file(str(path), options).dataset
    assert ds["id"][:2] == ["p0", "p1"]
    assert ds["labels"] == [r["labels"] for r in aapd_rows[:12]]


def test_label_strings_as_python_lists_and_missing_ids(tmp_path):
    rows = [{"titles": "A  title", "summaries": "some text\nhere", "terms": "['cs.LG', 'stat.ML']"},
            {"titles": "B", "summaries": "more text", "terms": "cs.CV, cs.LG"}]
    ds = read_file(str(write_jsonl(tmp_path / "kaggle.jsonl", rows))).dataset
    assert ds["labels"] == [["cs.LG", "stat.ML"], ["cs.CV", "cs.LG"]]
    assert ds["title"] == ["A title", "B"]
    assert ds["abstract"][0] == "some text here"
    assert ds["id"] == ["0", "1"]  # no id column: the row number


def test_mixed_label_types_fall_back_to_line_reader(tmp_path):
    rows = [{"id": "a", "abstract": "x y", "labels": ["cs.IT", "math.IT"]},
            {"id": "b", "abstract": "z", "labels": "cs.LG stat.ML"}]
    ds = read_file(str(write_jsonl(tmp_path / "mixed.jsonl", rows))).dataset
    assert ds["labels"] == [["cs.IT", "math.IT"], ["cs.LG", "stat.ML"]]


def test_aapd_pair_with_trailing_blank_lines(tmp_path):
    (tmp_path / "text_dev").write_text("a b c\nd e f\n\n\n")
    (tmp_path / "label_dev").write_text("cs.IT\ncs.LG math.ST\n\n")
    ds = read_file(str(tmp_path / "text_dev")).dataset
    assert ds["labels"] == [["cs.IT"], ["cs.LG", "math.ST"]]


def test_mixed_json_types_read_as_values(tmp_path):
    # one row with another JSON type makes datasets load the whole column as JSON text; it must read as values
    rows = [{"id": "p1", "abstract": "Caf\u00e9 codes", "labels": ["cs.IT", "math.IT"], "title": None},
            {"id": 2, "abstract": "nets", "labels": "cs.CV cs.LG", "title": "A title"},
            {"id": None, "abstract": "more", "labels": ["stat.ML"], "title": "not"}]
    ds = read_file(str(write_jsonl(tmp_path / "mixed.jsonl", rows))).dataset
    assert ds["id"] == ["p1", "2", "2"]  # a number id as its string; no id: the row number
    assert ds["abstract"] == ["Caf\u00e9 codes", "nets", "more"]
    assert ds["labels"] == [["cs.IT", "math.IT"], ["cs.CV", "cs.LG"], ["stat.ML"]]
    assert ds["title"] == ["", "A title", "not"]


@pytest.mark.parametrize(("row", "expected"), [
    ({"id": "x", "abstract": 42, "labels": ["cs.LG"]}, "field 'abstract': expected a string, got int"),
    ({"id": "x", "abstract": ["a", "b"], "labels": ["cs.LG"]}, "field 'abstract': expected a string, got list"),
    ({"id": "x", "abstract": "t", "labels": ["cs.LG", 3.5]},
     "field 'labels': expected a list of strings, got a list holding float"),
    ({"id": "x", "abstract": "t", "labels": ["cs.LG", None]},
     "field 'labels': expected a list of strings, got a list holding null"),
    ({"id": "x", "abstract": "t", "labels": [["cs.LG", "cs.AI"]]},
     "field 'labels': expected a list of strings, got a list holding list"),
    ({"id": "x", "abstract": "t", "labels": 5.0}, "field 'labels': expected a list or a string, got float"),
    ({"id": "x", "abstract": "t", "labels": True}, "field 'labels': expected a list or a string, got bool"),
    ({"id": "x", "abstract": "t", "labels": {"cs.LG": 1}}, "field 'labels': expected a list or a string, got dict"),
    ({"id": ["x"], "abstract": "t", "labels": ["cs.LG"]}, "field 'id': expected a string or a number, got list"),
])
def test_cells_of_the_wrong_type_name_line_and_field(tmp_path, row, expected):
    path = write_jsonl(tmp_path / "rows.jsonl", [_good(0), _good(1), row, _good(3)])
    with pytest.raises(DataError) as info:
        read_file(str(path))
    assert str(info.value) == f"{path}:3: {expected}"
    skipped = read_file(str(path), ReadOptions(skip_bad_rows=True))
    assert skipped.dataset["id"] == ["0", "1", "3"] and skipped.n_skipped == 1


def test_integer_class_ids_are_labels(tmp_path):
    path = write_jsonl(tmp_path / "ids.jsonl", [{"id": "a", "abstract": "t", "labels": [3, 17]},
                                                {"id": "b", "abstract": "u", "labels": 5},
                                                {"id": "c", "abstract": "v", "labels": ["cs.LG", 2]}])
    assert read_file(str(path)).dataset["labels"] == [["3", "17"], ["5"], ["cs.LG", "2"]]


@pytest.mark.parametrize("labels", [5.5, True, {"cs.LG": 1}, [1.0, 2.0]])
def test_labels_of_the_wrong_type_in_every_row(tmp_path, labels):
    path = write_jsonl(tmp_path / "rows.jsonl", [{"id": "a", "abstract": "t", "labels": labels}] * 2)
    with pytest.raises(DataError, match=r"rows.jsonl:1: field 'labels': expected a list"):
        read_file(str(path))


def test_bundled_samples_resolve_by_name():
    for name in bundled_samples():
        ds = read_file(name).dataset
        assert len(ds) >= 100 and all(ds["labels"])


# ------------------------------------------------------------------------------------------------ bad input


def _good(i: int) -> dict:
    return {"id": str(i), "abstract": f"abstract number {i}", "labels": ["cs.LG"]}


def test_malformed_json_line_is_located(tmp_path):
    path = tmp_path / "bad.jsonl"
    lines = [json.dumps(_good(0)), json.dumps(_good(1)), '{"id": "2", "abstract": "oops", "labels": [}',
             json.dumps(_good(3))]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as info:
        read_file(str(path))
    message = str(info.value)
    assert message.startswith(f"{path}:3: malformed JSON")
    assert "\n" not in message


def test_skip_bad_rows_counts_instead_of_failing(tmp_path):
    path = tmp_path / "bad.jsonl"
    lines = [json.dumps(_good(0)), "not json", json.dumps({"id": "2", "abstract": "  ", "labels": ["x"]}),
             json.dumps({"id": "3", "labels": ["x"]}), json.dumps(_good(4))]
    path.write_text("\n".join(lines) + "\n")
    result = read_file(str(path), ReadOptions(skip_bad_rows=True))
    assert result.dataset["id"] == ["0", "4"]
    assert result.n_skipped == 3


@pytest.mark.parametrize(("row", "expected"), [
    ({"id": "x", "labels": ["cs.LG"]}, ":2: field 'abstract' is missing"),
    ({"id": "x", "abstract": " \n ", "labels": ["cs.LG"]}, ":2: field 'abstract' is empty"),
    ({"id": "x", "abstract": "text", "labels": []}, ":2: field 'labels' has no labels"),
    ({"id": "x", "abstract": "text"}, ":2: field 'labels' is missing"),
])
def test_bad_rows_name_line_and_field(tmp_path, row, expected):
    path = write_jsonl(tmp_path / "rows.jsonl", [_good(0), row, _good(2)])
    with pytest.raises(DataError) as info:
        read_file(str(path))
    assert str(info.value) == f"{path}{expected}"


def test_missing_column_lists_the_fields_present(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", [{"id": "1", "blurb": "t", "labels": ["a"]}])
    with pytest.raises(DataError) as info:
        read_file(str(path))
    assert str(info.value) == (f"{path}:1: field 'abstract': no text field (looked for abstract, text, summary, "
                               "summaries, body, content; set --text_field) (fields present: id, blurb, labels)")


def test_explicit_field_that_does_not_exist(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", [_good(0)])
    with pytest.raises(DataError) as info:
        read_file(str(path), ReadOptions(label_field="categories"))
    assert str(info.value) == f"{path}:1: field 'categories' is missing (fields present: id, abstract, labels)"


def test_bom_does_not_hide_the_bad_line(tmp_path):
    path = tmp_path / "bom.jsonl"
    lines = [json.dumps(_good(0)), json.dumps(_good(1)), "not json", json.dumps(_good(3))]
    path.write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_file(str(path))
    assert str(info.value).startswith(f"{path}:3: malformed JSON")
    skipped = read_file(str(path), ReadOptions(skip_bad_rows=True))
    assert skipped.dataset["id"] == ["0", "1", "3"] and skipped.n_skipped == 1


def _write_empty(path):
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"id": pa.array([], pa.string()), "abstract": pa.array([], pa.string()),
                                 "labels": pa.array([], pa.list_(pa.string()))}), path)
    else:
        path.write_text({"empty.jsonl": "", "blank.jsonl": "\n \n\n", "header.csv": "id,abstract,labels\n",
                         "blank_header.csv": "id,abstract,labels\n\n\n", "empty.csv": "",
                         "array.json": " [ ]\n"}[path.name])


@pytest.mark.parametrize("name", ["empty.jsonl", "blank.jsonl", "header.csv", "blank_header.csv", "empty.csv",
                                  "array.json", "empty.parquet"])
def test_empty_files_have_no_rows(tmp_path, name):
    path = tmp_path / name
    _write_empty(path)
    with pytest.raises(DataError) as info:
        read_file(str(path))
    assert str(info.value) == f"{path}: has no rows"


def test_unreadable_and_unsupported_files(tmp_path):
    with pytest.raises(DataError, match="no such file or bundled sample"):
        read_file(str(tmp_path / "nope.jsonl"))
    with pytest.raises(DataError, match="unsupported file type"):
        read_file(str(write_jsonl(tmp_path / "rows.txt", [_good(0)])))
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(DataError, match="broken.jsonl.gz"):
        read_file(str(broken))
    with pytest.raises(DataError, match="is a directory"):
        read_file(str(tmp_path))


@pytest.mark.parametrize(("text", "line"), [
    ('id,abstract,labels\n1,"two\nlines",cs.LG\n2,,cs.LG\n', 4),  # a quoted line break: the physical line
    ("\nid,abstract,labels\n1,a,cs.LG\n\n2,b,cs.LG\n\n\n3,,cs.LG\n4,d,cs.LG\n\n", 8),  # blank lines count too
])
def test_csv_error_names_the_physical_line(tmp_path, text, line):
    path = tmp_path / "rows.csv"
    path.write_text(text)
    with pytest.raises(DataError) as info:
        read_file(str(path))
    assert str(info.value) == f"{path}:{line}: field 'abstract' is empty"


def test_json_array_errors_name_the_record_and_its_line(tmp_path):
    rows = [_good(i) for i in range(40)]
    rows[29] = {"id": "29", "abstract": "", "labels": ["cs.LG"]}
    one_line = tmp_path / "one.json"
    one_line.write_text(json.dumps(rows))
    with pytest.raises(DataError) as info:
        read_file(str(one_line))
    assert str(info.value) == f"{one_line}: record 30, line 1: field 'abstract' is empty"
    pretty = tmp_path / "pretty.json"
    pretty.write_text(json.dumps(rows[27:], indent=2))  # records of 7 lines each, from line 2
    with pytest.raises(DataError) as info:
        read_file(str(pretty))
    assert str(info.value) == f"{pretty}: record 3, line 16: field 'abstract' is empty"


def test_parquet_error_names_the_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist([_good(0), {"id": "1", "abstract": "", "labels": ["a"]}]), path)
    with pytest.raises(DataError) as info:
        read_file(str(path))
    assert str(info.value) == f"{path}: row 2: field 'abstract' is empty"


# ------------------------------------------------------------------------------------------------ dates


def test_date_filters_on_update_date_and_first_version(snapshot_rows, tmp_path):
    path = write_jsonl(tmp_path / "snap.jsonl", snapshot_rows)
    dates = sorted(r["update_date"] for r in snapshot_rows)
    middle = dates[len(dates) // 2]
    kept = read_file(str(path), ReadOptions(since=middle))
    assert len(kept.dataset) == sum(d >= middle for d in dates)
    assert kept.n_filtered_by_date == len(snapshot_rows) - len(kept.dataset)
    until = read_file(str(path), ReadOptions(until=middle)).dataset
    assert len(until) == sum(d <= middle for d in dates)
    first = read_file(str(path), ReadOptions(since="2007-04-03", until="2007-04-03", date_field="first_version"))
    expected = sum(" 3 Apr 2007" in r["versions"][0]["created"] for r in snapshot_rows)
    assert len(first.dataset) == expected > 0


def test_date_filter_needs_dates(aapd_rows, tmp_path):
    path = write_jsonl(tmp_path / "aapd.jsonl", aapd_rows[:5])
    with pytest.raises(DataError, match="need dates"):
        read_file(str(path), ReadOptions(since="2020-01-01"))


def test_date_filter_on_a_snapshot_without_the_date_field(snapshot_rows, tmp_path):
    """A snapshot-like file (categories, abstract, versions) without update_date crashed under --since with
    datasets' traceback: "ValueError: Column name ['update_date'] not in the dataset"."""
    path = write_jsonl(tmp_path / "snap.jsonl", [{k: v for k, v in r.items() if k != "update_date"}
                                                 for r in snapshot_rows[:5]])
    with pytest.raises(DataError) as info:
        read_file(str(path), ReadOptions(since="2008-01-01"))
    assert str(info.value) == (f"{path}: --since/--until need dates: this file has no update_date field "
                               "(--date_field update_date); --date_field first_version reads its versions field")
    assert len(read_file(str(path), ReadOptions(since="2000-01-01", date_field="first_version")).dataset) == 5
    path = write_jsonl(tmp_path / "dated.jsonl", [{k: v for k, v in r.items() if k != "versions"}
                                                  for r in snapshot_rows[:5]])
    with pytest.raises(DataError, match=r"no versions field \(--date_field first_version\); --date_field "
                                        "update_date reads its update_date field"):
        read_file(str(path), ReadOptions(since="2008-01-01", date_field="first_version"))


def test_date_options_are_validated():
    for bad in ("2008-6-1", "garbage", "2008-02-30", "2008-06-01T00:00"):
        with pytest.raises(LlmclsError) as info:
            ReadOptions(since=bad)
        assert str(info.value) == f"--since: expected a date YYYY-MM-DD, got {bad!r}"
        with pytest.raises(LlmclsError, match="--until: expected a date YYYY-MM-DD"):
            DataArguments(until=bad)
    assert DataArguments(since=datetime.date(2008, 6, 1)).since == "2008-06-01"  # a YAML config gives a date


def test_rows_whose_date_does_not_parse_are_undated(tmp_path):
    dates = ["2009-01-05", "not a date", "2008/07/05", "2008-7-5", None, "2008-13-01", 7, "2009-02-01T10:00:00"]
    rows = [{"id": str(i), "abstract": "t", "labels": ["cs.LG"], "update_date": d} for i, d in enumerate(dates)]
    result = read_file(str(write_jsonl(tmp_path / "dated.jsonl", rows)), ReadOptions(since="2008-06-01"))
    assert result.dataset["id"] == ["0", "7"]
    assert result.n_filtered_by_date == result.n_undated == 6
    assert result.undated_example == "line 2: 'not a date'"


def test_undated_rows_are_counted_apart_from_rows_dated_outside_the_window(snapshot_rows, tmp_path):
    """Rows without a readable date were "rows outside --since/--until" (none is dated before 2000), and a file
    whose every date is YYYY/MM/DD had "no row dated within --since/--until", as if its dates were all too old."""
    from llmcls.corpus import load_corpus

    rows = [dict(r) for r in snapshot_rows[:10]]
    rows[1]["update_date"] = None
    del rows[2]["update_date"]
    rows[3]["update_date"], rows[4]["update_date"] = "2008/11/26", "26-11-2008"
    path = write_jsonl(tmp_path / "snap.jsonl", rows)
    result = read_file(str(path), ReadOptions(since="2000-01-01"))
    assert (len(result.dataset), result.n_filtered_by_date, result.n_undated) == (6, 4, 4)
    assert result.undated_example == "line 4: '2008/11/26'"  # the first with a date written, not a missing one
    corpus = load_corpus(DataArguments(train=str(path), since="2000-01-01"))
    assert [note for note in corpus.notes if "readable" in note or "outside" in note] == [
        "train: 4 rows without a readable update_date date (e.g. line 4: '2008/11/26')"]
    # a malformed line to skip: read line by line (other cell types), the lines counted as in the file
    skipped = tmp_path / "skipped.jsonl"
    skipped.write_text("{oops\n" + path.read_text())
    late = load_corpus(DataArguments(train=str(skipped), since="2008-01-01", skip_bad_rows=True))
    outside = sum(r.get("update_date") is not None and "-" in r["update_date"][4:5] and r["update_date"] < "2008"
                  for r in rows)
    assert outside and [note for note in late.notes if "readable" in note or "outside" in note] == [
        f"train: {outside} rows dated outside --since/--until",
        "train: 4 rows without a readable update_date date (e.g. line 5: '2008/11/26')"]
    for row in rows:
        row["update_date"] = "2008/11/26"
    slashes = write_jsonl(tmp_path / "slashes.jsonl", rows)
    with pytest.raises(LlmclsError) as info:
        load_corpus(DataArguments(train=str(slashes), since="2000-01-01"))
    assert str(info.value) == (f"{slashes}: no row dated within --since/--until: 10 rows without a readable "
                               "update_date date (e.g. line 1: '2008/11/26')")


def test_an_empty_date_cell_is_no_date_written(snapshot_rows, tmp_path):
    """A CSV's empty update_date cell before a 2008/11/26 one was the note's example: "(e.g. line 3: '')"."""
    path = tmp_path / "dated.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "abstract", "categories", "update_date"])
        for i, date in enumerate(["2009-01-05", "", "  ", "2008/11/26", "2010-02-03"]):
            row = snapshot_rows[i]
            writer.writerow([f"p{i}", " ".join(row["abstract"].split()), row["categories"], date])  # one line each
    result = read_file(str(path), ReadOptions(since="2000-01-01"))
    assert (result.n_undated, result.undated_example) == (3, "line 5: '2008/11/26'")
    from llmcls.corpus import load_corpus

    rows = [{"id": str(i), "abstract": "t", "labels": ["cs.LG"], "update_date": d} for i, d in enumerate(["", " "])]
    with pytest.raises(LlmclsError, match=r"\(e.g. line 1: no value\)"):
        load_corpus(DataArguments(train=str(write_jsonl(tmp_path / "blank.jsonl", rows)), since="2000-01-01"))


def test_first_version_that_is_not_a_list_is_undated(snapshot_rows, tmp_path):
    rows = [{**row, "versions": "v1"} for row in snapshot_rows[:5]]
    result = read_file(str(write_jsonl(tmp_path / "snap.jsonl", rows)),
                       ReadOptions(since="2000-01-01", date_field="first_version"))
    assert len(result.dataset) == 0 and result.n_filtered_by_date == 5
