"""The exact readers, for what datasets' Arrow loaders fail on or would misread: JSON lines read one at a time
(malformed lines marked to skip, values of varying types kept as written) and CSV read with Python's csv reader
(rows with extra fields, bytes that are not UTF-8), still written into Arrow through datasets; and a CSV file's
header as pandas names its columns. Slow by design: the Arrow loaders read every well-formed file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from llmcls.data_lines import csv_records, first_line, iter_lines, parse_json_line
from llmcls.errors import DataError

if TYPE_CHECKING:
    from llmcls.data import ReadOptions


def load_json_lines_python(path: Path):
    """Line-by-line JSON reader (still into Arrow) that keeps line numbers and marks malformed lines.

    Used when the Arrow loader fails: malformed lines to skip. Every field has datasets' `Json` type (as when a
    field's JSON type varies between rows), so the normaliser sees each value as it was written. Values are given
    JSON-encoded: datasets stores a string that itself parses as JSON unencoded (a title "1984" became the number
    1984, an abstract "null" a missing one), JSON text it stores as it is. `_malformed` says why a line is no row
    (not UTF-8, malformed JSON, not an object).
    """
    import json

    import datasets

    keys: dict[str, None] = {}
    for _, line in iter_lines(path, keep_bad_utf8=True):
        row, _ = parse_json_line(line)
        if row:
            keys.update(dict.fromkeys(row))
    features = datasets.Features({**{key: datasets.Json() for key in keys},
                                  "_line": datasets.Value("int64"), "_malformed": datasets.Value("string")})

    def rows(path: str, stamp: str):  # `stamp` (mtime, size) keys datasets' cache to this version of the file
        for number, line in iter_lines(Path(path), keep_bad_utf8=True):
            if not line.strip():
                continue
            row, problem = parse_json_line(line)
            row = row if row is not None else {}
            cells = {key: None if row.get(key) is None else json.dumps(row[key]) for key in keys}
            yield {**cells, "_line": number, "_malformed": problem}

    return from_generator(path, rows, features)


def from_generator(path: Path, rows, features):
    """`rows(path, stamp)` written to Arrow by datasets; `stamp` (mtime, size) keys its cache to this version of the
    file. A DataError the rows raise comes out as itself (datasets wraps it)."""
    import datasets

    stat = path.stat()
    stamp = f"{stat.st_mtime_ns}:{stat.st_size}"
    try:
        return datasets.Dataset.from_generator(rows, features=features, gen_kwargs={"path": str(path), "stamp": stamp})
    except Exception as err:
        cause = err
        while cause is not None and not isinstance(cause, DataError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        raise cause from None


class CsvHeader(NamedTuple):
    names: list[str]  # the columns' names as pandas gives them
    line: int
    repeated: list[str]  # names the header gives more than one column (the later ones renamed `name.1`, ...)
    first_fields: int  # fields of the first record after the header (0 when there is none)


def csv_header(path: Path) -> CsvHeader | None:
    """A CSV file's header; None for a file without records (the loader's failure is then reported as "has no
    rows"). Names as pandas gives them: an empty one `Unnamed: <i>`, a repeated one `name.<k>` (the first k that no
    other column has)."""
    records = csv_records(path)
    line, names, problem = next(records, (None, None, None))
    first = next(records, (None, [], None))[1] if names is not None else []
    records.close()
    if problem is not None:
        raise DataError(path, problem, line=line)
    if names is None:
        return None
    names = [name or f"Unnamed: {i}" for i, name in enumerate(names)]
    repeated = list(dict.fromkeys(name for i, name in enumerate(names) if name in names[:i]))
    taken = set(names)
    for i, name in enumerate(names):
        if name in names[:i]:
            k = 1
            while f"{name}.{k}" in taken:
                k += 1
            names[i] = f"{name}.{k}"
            taken.add(names[i])
    return CsvHeader(names, line, repeated, len(first))


def load_csv_python(path: Path, names: list[str], options: ReadOptions, err: Exception | None):
    """What pandas' loader failed on (`err`; None: a file it would misread), read with Python's csv reader (still
    into Arrow, every cell as text): rows with more fields than the header, or bytes that are not UTF-8, stop the
    read naming their line or, with --skip_bad_rows, are marked (`_malformed`) to skip. Rows with fewer fields miss
    the last ones, as in pandas."""
    import datasets

    def records(path: Path):
        rows = csv_records(path)
        next(rows)  # the header
        for line, cells, problem in rows:
            if problem is None and len(cells) > len(names):
                problem = f"has {len(cells)} fields but the header has {len(names)}"
            yield line, cells, problem

    if not options.skip_bad_rows:
        bad = next(((line, problem) for line, _, problem in records(path) if problem), None)
        if bad is not None:
            raise DataError(path, bad[1], line=bad[0]) from None
        if err is not None:  # nothing Python's reader finds wrong: say what pandas said
            raise DataError(path, f"cannot read CSV: {first_line(err)}") from None
    features = datasets.Features({**{name: datasets.Value("string") for name in names},
                                  "_line": datasets.Value("int64"), "_malformed": datasets.Value("string")})

    def rows(path: str, stamp: str):
        for line, cells, problem in records(Path(path)):
            cells = [None] * len(names) if problem else cells + [None] * (len(names) - len(cells))
            yield {**dict(zip(names, cells, strict=True)), "_line": line, "_malformed": problem}

    return from_generator(path, rows, features)
