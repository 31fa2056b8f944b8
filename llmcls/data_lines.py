"""A data file read as lines, for what the Arrow loaders do not say: the line (or row, or JSON-array record) a
problem is on, the first malformed JSON line, a CSV file's records with their lines, a file's lines as text (gzip, a
byte order mark and bytes that are not UTF-8 handled). Errors are one-line `DataError`s naming the file.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
from pathlib import Path

from llmcls.errors import DataError

# bytes that are not UTF-8, as Python's "surrogateescape" decoding keeps them (one lone surrogate per byte)
_UNDECODED = re.compile("[\udc80-\udcff]")
_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}


def open_text(path: Path, errors: str = "strict"):
    """The file as text, gunzipped when it ends in .gz; "utf-8-sig": a byte order mark (some Windows tools write
    one) is not part of the first line. `errors="surrogateescape"` keeps bytes that are not UTF-8 (see
    `utf8_problem`) instead of failing on the first."""
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", errors=errors)
    return open(path, encoding="utf-8-sig", errors=errors)


def first_line(err: BaseException) -> str:
    """The first line of the innermost cause of a library's error: what a one-line error can quote."""
    while err.__cause__ is not None or err.__context__ is not None:
        err = err.__cause__ or err.__context__
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def utf8_problem(text: str) -> tuple[int, str] | None:
    """(line within `text`, from 0; problem) for the first byte that is not UTF-8 in text read with
    `errors="surrogateescape"`; None when it has none."""
    match = _UNDECODED.search(text)
    if match is None:
        return None
    start = match.start()
    column = start - text.rfind("\n", 0, start)
    byte = ord(match.group()) - 0xDC00
    return text.count("\n", 0, start), f"not valid UTF-8 (byte {byte:#04x} at column {column}; save the file as UTF-8)"


def iter_lines(path: Path, keep_bad_utf8: bool = False):
    """(line number, line) from 1; a file that cannot be read is a one-line DataError, and so is a line that is not
    UTF-8 unless `keep_bad_utf8` (the caller checks `utf8_problem` itself: a row to skip)."""
    try:
        with open_text(path, errors="surrogateescape") as handle:
            for number, line in enumerate(handle, start=1):
                bad = None if keep_bad_utf8 else utf8_problem(line)
                if bad is not None:
                    raise DataError(path, bad[1], line=number)
                yield number, line
    except (OSError, EOFError) as err:
        raise DataError(path, f"cannot read: {first_line(err)}") from None


def _json_error(err: json.JSONDecodeError) -> str:
    # json's messages for a few errors end in "at" ("Unterminated string starting at"): no second "at" then
    return f"{err.msg}{'' if err.msg.endswith(' at') else ' at'} column {err.colno}"


def parse_json_line(line: str) -> tuple[dict | None, str | None]:
    """(the line's object, None), or (None, why it is not one): not UTF-8, malformed JSON, another JSON value."""
    bad = utf8_problem(line)
    if bad is not None:
        return None, bad[1]
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        return None, f"malformed JSON ({_json_error(err)})"
    if not isinstance(row, dict):
        return None, f"not a JSON object ({json_type(row)})"
    return row, None


def json_type(value) -> str:
    return "null" if value is None else _JSON_TYPES.get(type(value), type(value).__name__)


def first_bad_json_line(path: Path) -> tuple[int, str] | None:
    """(line, problem) of the first malformed record; a file holding one JSON array is parsed whole."""
    for number, line in iter_lines(path, keep_bad_utf8=True):
        if not line.strip():
            continue
        if number == 1 and line.lstrip().startswith("[") and utf8_problem(line) is None:
            return json_array_problem(path)
        _, problem = parse_json_line(line.rstrip("\r\n"))
        if problem is not None:
            return number, problem
    return None


def json_array_problem(path: Path) -> tuple[int, str] | None:
    with open_text(path, errors="surrogateescape") as handle:
        text = handle.read()
    bad = utf8_problem(text)
    if bad is not None:
        return bad[0] + 1, bad[1]
    try:
        json.loads(text)
    except json.JSONDecodeError as err:
        return err.lineno, f"malformed JSON ({_json_error(err)})"
    return None


def line_problem(path: Path, number: int, utf8: bool = True) -> str | None:
    """Why line `number` of a JSON-lines file is not a JSON object (the Arrow loader reads a `null` line as a row
    whose every field is missing); None when it is one. `utf8=False`: bytes that are not UTF-8 are no problem here
    (they may be in a field the caller does not read, and the row has a problem of its own)."""
    for current, line in iter_lines(path, keep_bad_utf8=True):
        if current == number:
            return parse_json_line(line if utf8 else _UNDECODED.sub("?", line))[1]
    return None


def lines_but_trailing_blank(path: Path) -> list[str]:
    lines = [line.rstrip("\n") for _, line in iter_lines(path)]
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def csv_records(path: Path):
    """(line the record starts on, cells, problem or None) of each record of a CSV file, the header first, blank
    lines skipped (as the loaders do). A record with bytes that are not UTF-8 has a problem; a quoted field still
    open at the end of the file is a DataError (it has swallowed every line after its start: nothing to skip)."""
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))  # a long abstract is no error (default: 128 KiB)
    raw: list[str] = []  # the physical lines of the record being read (csv.reader reads no further than a record)

    def lines(handle):
        for line in handle:
            raw.append(line)
            yield line

    try:
        with open_text(path, errors="surrogateescape") as handle:
            reader = csv.reader(lines(handle))
            start, held, held_start, held_text = 1, None, 0, ""  # a record is given out when the next one is read:
            for cells in reader:  # the last one, which may be a quoted field left open, is checked first
                text = "".join(raw)
                raw.clear()
                if cells:
                    if held is not None:
                        yield held
                    bad = utf8_problem(text)  # named by the line holding the byte, which its column counts in
                    held = (start + bad[0] if bad else start, cells, bad and bad[1])
                    held_start, held_text = start, text
                start = reader.line_num + 1
    except (OSError, EOFError, csv.Error) as err:
        raise DataError(path, f"cannot read: {first_line(err)}") from None
    if held is not None:
        try:
            list(csv.reader(held_text.splitlines(keepends=True), strict=True))
        except csv.Error as err:
            if "end of data" in str(err):
                raise DataError(path, "a quoted field opened on this line is never closed (a stray '\"'?)",
                                line=held_start) from None
        yield held


def record_position(path: Path, loader: str, index: int) -> tuple[int, str]:
    """(number, what it counts) of the index-th record, found by scanning the file: (line, "line"), the line a
    record starts on; for Parquet (row, "row"); for a file holding one JSON array, the record's number and the line
    it starts on."""
    if loader == "parquet":
        return index + 1, "row"
    if loader == "csv":
        records = csv_records(path)
        next(records, None)  # header
        for i, (line, _, _) in enumerate(records):
            if i == index:
                return line, "line"
        return index + 2, "line"
    line = array_record_line(path, index)
    if line is not None:
        return line, f"record {index + 1}, line"
    seen = -1
    for number, line in iter_lines(path, keep_bad_utf8=True):
        if line.strip():
            seen += 1
            if seen == index:
                return number, "line"
    return index + 1, "line"


def array_record_line(path: Path, index: int) -> int | None:
    """Line on which the index-th record of a file holding one JSON array starts; None for other files."""
    with open_text(path, errors="surrogateescape") as handle:
        start = handle.read(1 << 16)
        if not start.lstrip().startswith("["):  # JSON lines (a big snapshot, say): not read whole
            return None
        text = start + handle.read()
    space = re.compile(r"[ \t\r\n]*")
    pos = space.match(text).end()
    decoder = json.JSONDecoder()
    pos += 1
    for _ in range(index):
        try:
            _, pos = decoder.raw_decode(text, space.match(text, pos).end())
        except ValueError:
            return None
        pos = space.match(text, pos).end()
        if not text.startswith(",", pos):
            return None
        pos += 1
    return text.count("\n", 0, space.match(text, pos).end()) + 1
