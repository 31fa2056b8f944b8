"""A data file read as lines, for what the Arrow loaders do not say: the line (or row, or JSON-array record) a
problem is on, the first malformed JSON line, a file's lines as text (gzip and a byte order mark handled). Errors
are one-line `DataError`s naming the file.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

from llmcls.errors import DataError


def open_text(path: Path):
    """The file as text, gunzipped when it ends in .gz; "utf-8-sig": a byte order mark (some Windows tools write
    one) is not part of the first line."""
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig")
    return open(path, encoding="utf-8-sig")


def first_line(err: BaseException) -> str:
    """The first line of the innermost cause of a library's error: what a one-line error can quote."""
    while err.__cause__ is not None or err.__context__ is not None:
        err = err.__cause__ or err.__context__
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def iter_lines(path: Path):
    """(line number, line) from 1; a file that cannot be read or decoded is a one-line DataError."""
    try:
        with open_text(path) as handle:
            yield from enumerate(handle, start=1)
    except (OSError, UnicodeDecodeError, EOFError) as err:
        raise DataError(path, f"cannot read: {first_line(err)}") from None


def first_bad_json_line(path: Path) -> tuple[int, str] | None:
    """(line, problem) of the first malformed record; a file holding one JSON array is parsed whole."""
    for number, line in iter_lines(path):
        if not line.strip():
            continue
        if number == 1 and line.lstrip().startswith("["):
            return json_array_problem(path)
        try:
            row = json.loads(line.rstrip("\r\n"))
        except json.JSONDecodeError as err:
            return number, f"{err.msg} at column {err.colno}"
        if not isinstance(row, dict):
            return number, f"expected an object, got {type(row).__name__}"
    return None


def json_array_problem(path: Path) -> tuple[int, str] | None:
    with open_text(path) as handle:
        try:
            json.load(handle)
        except json.JSONDecodeError as err:
            return err.lineno, f"{err.msg} at column {err.colno}"
    return None


def json_object(line: str) -> dict | None:
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return None
    return row if isinstance(row, dict) else None


def lines_but_trailing_blank(path: Path) -> list[str]:
    lines = [line.rstrip("\n") for _, line in iter_lines(path)]
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def record_position(path: Path, loader: str, index: int) -> tuple[int, str]:
    """(number, what it counts) of the index-th record, found by scanning the file: (line, "line"); for Parquet
    (row, "row"); for a file holding one JSON array, the record's number and the line it starts on."""
    if loader == "parquet":
        return index + 1, "row"
    if loader == "csv":
        import csv

        with open_text(path) as handle:
            reader = csv.reader(handle)
            records = (row for row in reader if row)  # the loaders skip blank lines; csv.reader yields []
            next(records, None)  # header
            for i, _ in enumerate(records):
                if i == index:
                    return reader.line_num, "line"
        return index + 2, "line"
    line = array_record_line(path, index)
    if line is not None:
        return line, f"record {index + 1}, line"
    seen = -1
    for number, line in iter_lines(path):
        if line.strip():
            seen += 1
            if seen == index:
                return number, "line"
    return index + 1, "line"


def array_record_line(path: Path, index: int) -> int | None:
    """Line on which the index-th record of a file holding one JSON array starts; None for other files."""
    with open_text(path) as handle:
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
