"""Problems a user walkthrough found in data files: bytes that are not UTF-8, ids of several JSON types, CSV cells
read as text, CSV rows with extra fields or an open quote, labels joined by another separator, the wording of
errors, and validation/test files that share examples with train."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import write_jsonl

from llmcls.cli import main
from llmcls.config import DataArguments
from llmcls.corpus import load_corpus
from llmcls.data import ReadOptions, read_file
from llmcls.errors import DataError, LlmclsError


@pytest.fixture
def good(aapd_rows) -> list[dict]:
    return [{"id": r["id"], "abstract": r["abstract"], "labels": r["labels"]} for r in aapd_rows[:20]]


def _write_csv(path, rows: list[dict], sep: str = " ", extra: str = ""):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "abstract", "labels"])
        for row in rows:
            writer.writerow([row["id"], row["abstract"], sep.join(row["labels"])])
        handle.write(extra)
    return path


# ------------------------------------------------------------------------------------------------ not UTF-8


@pytest.mark.parametrize(("line", "column"), [
    (b'{"id":"l","abstract":"caf\xe9 x","labels":["cs.LG"]}\n', 26),
    (b'{"id":"l","title":"caf\xe9","abstract":"a b","labels":["cs.LG"]}\n', 23),
])
def test_a_byte_that_is_not_utf8_names_its_line(good, tmp_path, line, column):
    path = write_jsonl(tmp_path / "latin1.jsonl", good)
    path.write_bytes(path.read_bytes() + line)
    with pytest.raises(DataError) as info:
        read_file(str(path))
    assert str(info.value) == f"{path}:21: not valid UTF-8 (byte 0xe9 at column {column}; save the file as UTF-8)"
    skipped = read_file(str(path), ReadOptions(skip_bad_rows=True))
    assert skipped.n_skipped == 1 and len(skipped.dataset) == 20


def test_a_byte_that_is_not_utf8_is_one_line_from_the_cli(good, tmp_path, capsys):
    path = write_jsonl(tmp_path / "latin1.jsonl", good)
    path.write_bytes(path.read_bytes() + b'{"id":"l","abstract":"caf\xe9 x","labels":["cs.LG"]}\n')
    assert main(["data", "stats", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"llmcls data stats: error: {path}:21: not valid UTF-8 (byte 0xe9 at column 26; save the file as "
                   "UTF-8)"]
    assert main(["data", "stats", str(path), "--skip_bad_rows"]) == 0
    assert f"skipped 1 bad rows in {path}" in " ".join(capsys.readouterr().err.split())  # the console wraps


def test_a_byte_that_is_not_utf8_in_a_line_read_line_by_line(tmp_path):
    # the labels' types vary, so the file is read line by line: the line is marked, not a crash
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b'{"id":"a","abstract":"x","labels":["cs.LG"]}\n{"id":"b","abstract":"y","labels":"cs.AI"}\n'
                     b'{"id":"c","abstract":"caf\xe9","labels":"cs.AI"}\n')
    with pytest.raises(DataError, match=r"mixed.jsonl:3: not valid UTF-8 \(byte 0xe9 at column 26"):
        read_file(str(path))
    skipped = read_file(str(path), ReadOptions(skip_bad_rows=True))
    assert skipped.dataset["id"] == ["a", "b"] and skipped.n_skipped == 1


def test_a_byte_that_is_not_utf8_in_a_csv(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"id,abstract,labels\na,fine,cs.LG\nb,caf\xe9,cs.LG\nc,also fine,cs.AI\n")
    with pytest.raises(DataError) as info:
        read_file(str(path))
    assert str(info.value) == f"{path}:3: not valid UTF-8 (byte 0xe9 at column 6; save the file as UTF-8)"
    skipped = read_file(str(path), ReadOptions(skip_bad_rows=True))
    assert skipped.dataset["id"] == ["a", "c"] and skipped.n_skipped == 1


# ------------------------------------------------------------------------------------------------ ids and cells


def test_ids_of_several_json_types_read_as_written(tmp_path):
    path = write_jsonl(tmp_path / "ids.jsonl", [{"id": "0704.0001", "abstract": "a b c", "labels": ["cs.LG"]},
                                                {"id": 7, "abstract": "d e f", "labels": ["cs.AI"]},
                                                {"id": "1.50", "abstract": "g", "labels": ["cs.AI"]},
                                                {"id": "true", "abstract": "h", "labels": ["cs.AI"]}])
    assert read_file(str(path)).dataset["id"] == ["0704.0001", "7", "1.50", "true"]


def test_csv_cells_are_read_as_the_text_written(tmp_path):
    path = tmp_path / "ids.csv"
    path.write_text("id,abstract,labels\n0704.0010,a b c,1\n0704.0020,NA,2 3\n007,null,cs.LG\n")
    ds = read_file(str(path)).dataset
    assert ds["id"] == ["0704.0010", "0704.0020", "007"]
    assert ds["labels"] == [["1"], ["2", "3"], ["cs.LG"]]
    assert ds["abstract"] == ["a b c", "NA", "null"]


def test_an_empty_csv_cell_is_empty_and_a_short_row_misses_its_last_fields(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("id,abstract,labels\n1,a,cs.LG\n2,,cs.LG\n")
    with pytest.raises(DataError, match=r"rows.csv:3: field 'abstract' is empty$"):
        read_file(str(path))
    path.write_text("id,abstract,labels\n1,a,cs.LG\n2,b\n")
    assert read_file(str(path), ReadOptions(labels_required=False)).dataset["labels"] == [["cs.LG"], []]


# ------------------------------------------------------------------------------------------------ CSV structure


def test_a_csv_row_with_extra_fields_names_its_line_and_can_be_skipped(good, tmp_path):
    path = _write_csv(tmp_path / "extra.csv", good, extra="21,too,many,fields,here\n")
    with pytest.raises(DataError) as info:
        read_file(str(path))
    assert str(info.value) == f"{path}:22: has 5 fields but the header has 3"
    skipped = read_file(str(path), ReadOptions(skip_bad_rows=True))
    assert skipped.n_skipped == 1 and skipped.dataset["id"] == [r["id"] for r in good]
    assert skipped.dataset["labels"] == [r["labels"] for r in good]


def test_an_open_quote_in_a_csv_names_its_line_even_when_skipping(good, tmp_path):
    path = _write_csv(tmp_path / "quote.csv", good, extra='21,"unterminated,cs.LG\n22,fine,cs.AI\n')
    for options in (ReadOptions(), ReadOptions(skip_bad_rows=True)):  # it swallowed every line after it
        with pytest.raises(DataError) as info:
            read_file(str(path), options)
        assert str(info.value) == f"{path}:22: a quoted field opened on this line is never closed (a stray '\"'?)"


def test_a_repeated_csv_header_name_is_an_error(tmp_path):
    path = tmp_path / "twice.csv"
    path.write_text("id,abstract,labels,labels\n1,a,cs.LG,cs.AI\n")
    with pytest.raises(DataError, match=r"twice.csv:1: the header names column 'labels' twice"):
        read_file(str(path))


# ------------------------------------------------------------------------------------------------ notes


def test_labels_joined_by_another_separator_get_a_note(good, tmp_path):
    path = _write_csv(tmp_path / "pipe.csv", good, sep="|")
    first = "|".join(good[0]["labels"])
    assert read_file(str(path)).notes == [f"20 of 20 rows have a label holding '|' (e.g. {first!r}): if '|' joins "
                                          "several labels, pass --label_sep '|'"]
    assert read_file(str(path), ReadOptions(label_sep="|")).notes == []
    assert read_file(str(_write_csv(tmp_path / "space.csv", good))).notes == []
    corpus = load_corpus(DataArguments(train=str(path)))
    assert any(note.startswith("train: 20 of 20 rows have a label holding '|'") for note in corpus.notes)


def test_a_label_sep_that_misses_the_files_separator_gets_a_note(good, tmp_path):
    """`--label_sep ';'` over space-joined codes read every row's codes as one label, without a word."""
    space = _write_csv(tmp_path / "space.csv", good)
    first = " ".join(good[0]["labels"])
    assert read_file(str(space), ReadOptions(label_sep=";")).notes == [
        f"20 of 20 rows have a label holding ' ' (e.g. {first!r}), which --label_sep ';' does not split: if ' ' "
        "joins several labels, pass --label_sep ' ' (or leave --label_sep out: whitespace, commas and semicolons "
        "split then)"]
    assert read_file(str(space), ReadOptions(label_sep=" ")).notes == []
    assert read_file(str(_write_csv(tmp_path / "comma.csv", good, sep=",")), ReadOptions(label_sep="|")).notes[0] \
        .startswith("20 of 20 rows have a label holding ',' (e.g.")
    named = [row | {"labels": ["Machine Learning", "Computer Vision"]} for row in good]  # words, not joined codes
    assert read_file(str(_write_csv(tmp_path / "named.csv", named, sep=";")), ReadOptions(label_sep=";")).notes == []


def test_splits_sharing_ids_with_train_are_noted(good, tmp_path, aapd_rows):
    same = load_corpus(DataArguments(train="aapd-train", validation="aapd-train"))
    assert "validation shares 400 of its 400 ids with train: its scores are not held-out estimates" in same.notes
    part = write_jsonl(tmp_path / "part.jsonl", aapd_rows[390:] + [dict(aapd_rows[0], id="new")])
    some = load_corpus(DataArguments(train="aapd-train", validation="aapd-validation", test=str(part)))
    assert [note for note in some.notes if "shares" in note] == [
        "test shares 10 of its 11 ids with train: its scores are not held-out estimates"]
    unnamed = write_jsonl(tmp_path / "unnamed.jsonl", [{"abstract": r["abstract"], "labels": r["labels"]}
                                                       for r in good])
    other = write_jsonl(tmp_path / "other.jsonl", [{"abstract": r["abstract"], "labels": r["labels"]}
                                                   for r in good[:5]])
    row_numbers = load_corpus(DataArguments(train=str(unnamed), validation=str(other), test=str(unnamed)))
    assert [note for note in row_numbers.notes if "held-out" in note and "abstract" not in note] == [
        "test is the same file as train: its scores are not held-out estimates"]  # row numbers are no ids to compare


def test_splits_repeating_a_training_abstract_are_noted(good, tmp_path):
    """Ids were all that was compared: a training paper repeated in the test file without its id, under another id
    or lower-cased and re-wrapped (the abstracts sample has such rows) went unsaid, its score inflated."""
    train = write_jsonl(tmp_path / "train.jsonl", good[:15])
    test = write_jsonl(tmp_path / "test.jsonl", [
        {"abstract": good[3]["abstract"].lower().replace(" ", "\n  "), "labels": good[3]["labels"]},  # no id
        dict(good[5], id="copy"), *good[15:]])
    corpus = load_corpus(DataArguments(train=str(train), test=str(test)))
    assert [note for note in corpus.notes if "abstract" in note] == [
        f"test repeats the abstract of a train row in 2 of its {len(good) - 13} rows (e.g. test row numbered 0 (no "
        f"id; line 1) = train id {good[3]['id']}; compared after whitespace normalisation and lower-casing): its "
        "scores are not held-out estimates"]
    assert not any("held-out" in note for note in load_corpus(
        DataArguments(train=str(train), test=str(write_jsonl(tmp_path / "new.jsonl", good[15:])))).notes)


def test_rows_sharing_an_id_are_not_counted_again_as_repeated_abstracts(good, tmp_path):
    """A copy of the training file under another path had two notes for the same rows: 'shares 20 of its 20 ids'
    and 'repeats the abstract ... in 20 of its 20 rows'."""
    train = write_jsonl(tmp_path / "train.jsonl", good)
    copy = load_corpus(DataArguments(train=str(train), validation=str(write_jsonl(tmp_path / "copy.jsonl", good))))
    assert [note for note in copy.notes if "held-out" in note] == [
        f"validation shares {len(good)} of its {len(good)} ids with train: its scores are not held-out estimates"]
    # rows with a shared id and another copy of a training paper under a new id: the abstract note counts the copy
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [*good[:3], dict(good[5], id="copy")])
    corpus = load_corpus(DataArguments(train=str(write_jsonl(tmp_path / "t.jsonl", good[:10])), test=str(mixed)))
    assert [note for note in corpus.notes if "held-out" in note] == [
        "test shares 3 of its 4 ids with train: its scores are not held-out estimates",
        f"test repeats the abstract of a train row in 1 of its 4 rows besides the 3 with a shared id (e.g. test id "
        f"copy = train id {good[5]['id']}; compared after whitespace normalisation and lower-casing): its scores are "
        "not held-out estimates"]


def test_a_row_without_an_id_is_named_by_its_number_and_line(good, tmp_path):
    """A file's 4th row without an id was 'row 3 (no id)': its number (its id in predictions.jsonl) read as a
    1-based row, and no line to find it by, while other messages name 1-based lines."""
    train = write_jsonl(tmp_path / "train.jsonl", good[:10])
    rows = [*good[10:13], dict(good[4], id="")]
    for path, line in ((write_jsonl(tmp_path / "test.jsonl", rows), 4), (_write_csv(tmp_path / "test.csv", rows), 5)):
        corpus = load_corpus(DataArguments(train=str(train), test=str(path)))
        assert [note for note in corpus.notes if "abstract" in note] == [
            f"test repeats the abstract of a train row in 1 of its 4 rows (e.g. test row numbered 3 (no id; line "
            f"{line}) = train id {good[4]['id']}; compared after whitespace normalisation and lower-casing): its "
            "scores are not held-out estimates"]


# ------------------------------------------------------------------------------------------------ wording


def test_repeated_ids_name_their_first_two_lines(good, tmp_path):
    path = write_jsonl(tmp_path / "dup.jsonl", good + good[:3])
    with pytest.raises(LlmclsError) as info:
        load_corpus(DataArguments(train=str(path)))
    assert str(info.value) == (f"{path}: id {good[0]['id']!r} is on more than one row (lines 1 and 21; 3 ids repeat): "
                               "ids must be unique; name a unique field with --id_field, or drop the id field to "
                               "number rows")
    skipped = tmp_path / "skipped.jsonl"  # a skipped row before them: still the file's lines
    skipped.write_text("not json\n" + "".join(json.dumps(r) + "\n" for r in good[:2] + good[:1]))
    with pytest.raises(LlmclsError, match=r"is on more than one row \(lines 2 and 4; no other id repeats\)"):
        load_corpus(DataArguments(train=str(skipped), skip_bad_rows=True))


def test_repeated_ids_in_parquet_name_rows(good, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "dup.parquet"
    pq.write_table(pa.Table.from_pylist(good[:3] + good[1:2]), path)
    with pytest.raises(LlmclsError, match=r"dup.parquet: id .* is on more than one row \(rows 2 and 4;"):
        load_corpus(DataArguments(train=str(path)))


@pytest.mark.parametrize(("line", "expected"), [
    ('{"id": "2", "abstract": "open', "malformed JSON (Unterminated string starting at column 25)"),
    ("null", "not a JSON object (null)"),
    ("[1, 2]", "not a JSON object (array)"),
    ('"text"', "not a JSON object (string)"),
])
def test_lines_that_are_no_json_object_say_why(good, tmp_path, line, expected):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in good[:2]) + line + "\n" + json.dumps(good[2]) + "\n")
    with pytest.raises(DataError) as info:
        read_file(str(path))
    assert str(info.value) == f"{path}:3: {expected}"
    skipped = read_file(str(path), ReadOptions(skip_bad_rows=True))
    assert skipped.n_skipped == 1 and len(skipped.dataset) == 3


# ------------------------------------------------------------------------------------------------ review fixes


def _rows_with_one_bad_byte(row, n: int = 1000, bad_line: int = 501, marker: str = "CAFE") -> bytes:
    """`n` JSON lines from `row(i)`; on line `bad_line` the text `marker` becomes b"caf\\xe9" (Latin-1 é)."""
    lines = [json.dumps(row(i)).encode() for i in range(n)]
    lines[bad_line - 1] = json.dumps(row(bad_line - 1, marker)).encode().replace(marker.encode(), b"caf\xe9")
    return b"\n".join(lines) + b"\n"


def test_a_bad_byte_in_one_label_of_a_list_is_its_row_only(tmp_path):
    # a slice of a list column validates the whole child array: every row of the batch had looked bad (line 1
    # named, all 1,000 rows skipped)
    path = tmp_path / "labels.jsonl"
    path.write_bytes(_rows_with_one_bad_byte(
        lambda i, label="cs.LG": {"id": str(i), "abstract": f"text {i}", "labels": ["cs.AI", label]}))
    with pytest.raises(DataError, match=r"labels.jsonl:501: not valid UTF-8 \(byte 0xe9"):
        read_file(str(path))
    skipped = read_file(str(path), ReadOptions(skip_bad_rows=True))
    assert skipped.n_skipped == 1 and len(skipped.dataset) == 999 and "500" not in skipped.dataset["id"]


def test_a_bad_byte_in_a_list_of_objects_is_its_row_only(tmp_path):
    # the snapshot's versions (a list of objects), read for --date_field first_version
    def row(i, created="Mon, 2 Apr 2007 19:18:42 GMT"):
        return {"id": str(i), "title": "t", "abstract": f"text {i}", "categories": "cs.LG",
                "versions": [{"version": "v1", "created": created}]}

    path = tmp_path / "versions.jsonl"
    path.write_bytes(_rows_with_one_bad_byte(row))
    dated = {"date_field": "first_version", "since": "2000-01-01"}
    with pytest.raises(DataError, match=r"versions.jsonl:501: not valid UTF-8 \(byte 0xe9"):
        read_file(str(path), ReadOptions(**dated))
    skipped = read_file(str(path), ReadOptions(skip_bad_rows=True, **dated))
    assert skipped.n_skipped == 1 and len(skipped.dataset) == 999


def test_dates_are_filtered_on_the_rows_kept_after_skipped_ones(tmp_path):
    # the dates were read from the whole table, not from the rows left after skipping one in the middle: the filter
    # kept the wrong rows (here a and d), or ran past the end
    path = write_jsonl(tmp_path / "dated.jsonl", [
        {"id": id_, "abstract": "text", "labels": [] if id_ == "skipped" else ["cs.LG"], "update_date": date}
        for id_, date in (("a", "2020-01-01"), ("skipped", "2010-01-01"), ("b", "2010-01-01"), ("c", "2020-01-01"),
                          ("d", "2010-01-01"))])
    result = read_file(str(path), ReadOptions(skip_bad_rows=True, since="2015-01-01"))
    assert result.dataset["id"] == ["a", "c"] and result.n_skipped == 1 and result.n_filtered_by_date == 2


def test_a_first_csv_row_with_extra_fields_is_not_read_shifted(tmp_path):
    # pandas takes the first column of such a file for an index: every row was read one column to the left
    path = tmp_path / "first.csv"
    path.write_text("id,abstract,labels\n1,a,cs.AI,zz\n2,x,cs.LG\n")
    with pytest.raises(DataError) as info:
        read_file(str(path))
    assert str(info.value) == f"{path}:2: has 4 fields but the header has 3"
    skipped = read_file(str(path), ReadOptions(skip_bad_rows=True))
    assert skipped.n_skipped == 1
    assert skipped.dataset.to_list() == [{"id": "2", "title": "", "abstract": "x", "labels": ["cs.LG"]}]


def test_strings_that_parse_as_json_stay_strings_when_read_line_by_line(tmp_path):
    # a malformed line to skip sends the file through the line-by-line reader, whose cells are datasets' `Json`:
    # a title "1984" became the number 1984 (the row dropped as bad), a label "1.5" a float
    path = tmp_path / "strings.jsonl"
    path.write_text(json.dumps({"id": "0704.0001", "title": "1984", "abstract": "null", "labels": "1.5"}) + "\n"
                    + json.dumps({"id": 7, "title": "t", "abstract": "b", "labels": ["true", "cs.LG"]}) + "\n{bad\n")
    result = read_file(str(path), ReadOptions(skip_bad_rows=True))
    assert result.n_skipped == 1
    assert result.dataset.to_list() == [
        {"id": "0704.0001", "title": "1984", "abstract": "null", "labels": ["1.5"]},
        {"id": "7", "title": "t", "abstract": "b", "labels": ["true", "cs.LG"]}]


def test_rows_numbered_for_a_missing_id_are_not_shared_ids(tmp_path):
    # a row without an id is named by its row number: the first rows of two such files both had id "0"
    def rows(name, ids):
        return write_jsonl(tmp_path / name, [{"id": i, "abstract": f"{name} {k}", "labels": ["cs.LG"]}
                                             for k, i in enumerate(ids)])

    corpus = load_corpus(DataArguments(train=str(rows("train.jsonl", [None, "a", "b"])),
                                       test=str(rows("test.jsonl", [None, "x", "a"]))))
    assert [note for note in corpus.notes if "shares" in note] == [
        "test shares 1 of its 2 ids with train: its scores are not held-out estimates"]


def test_a_bad_byte_in_a_field_not_read_does_not_hide_the_rows_problem(tmp_path):
    # the line's bytes that are not UTF-8 were reported in place of the row's own problem
    path = tmp_path / "authors.jsonl"
    path.write_bytes(b'{"id":"a","abstract":"x","labels":["cs.LG"],"authors":"Ann"}\n'
                     b'{"id":"b","abstract":"y","labels":[],"authors":"Jos\xe9"}\n')
    with pytest.raises(DataError) as info:
        read_file(str(path))
    assert str(info.value) == f"{path}:2: field 'labels' has no labels"


def test_a_repeated_csv_header_name_llmcls_does_not_read_is_renamed(tmp_path):
    # only a column llmcls reads is ambiguous when named twice; the others keep pandas' names (note, note.1)
    path = tmp_path / "notes.csv"
    path.write_text("id,abstract,labels,note,note\n1,a,cs.LG,first,second\n")
    assert read_file(str(path)).dataset["abstract"] == ["a"]
    assert read_file(str(path), ReadOptions(text_field="note.1")).dataset["abstract"] == ["second"]


def test_the_reading_code_is_part_of_the_cache_key(tmp_path, monkeypatch):
    """datasets keys a map's cache on a module-level function's name, not its code: an llmcls whose reading changed
    must not reuse the rows an earlier version normalised for the same file and options."""
    from llmcls import data

    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"id": str(i), "abstract": f"text {i}", "labels": ["cs.LG"]}) + "\n"
                            for i in range(5)))

    def cache_files(result):
        return sorted(f["filename"] for f in result.dataset.cache_files)

    first = cache_files(data.read_file(str(path)))
    assert first and cache_files(data.read_file(str(path))) == first  # same code: the cache serves
    monkeypatch.setattr(data, "_reader_code", lambda: "another version")
    assert cache_files(data.read_file(str(path))) != first
