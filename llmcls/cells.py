"""Cell values of a data file, as the readers need them: datasets' `Json` cells decoded, text and id columns with
the rows whose cell has the wrong type, label cells (a list, a list literal, a separated string, integer class
ids) and dates. Pure functions of pyarrow columns and Python values; the problems they find become one-line
errors in `llmcls.data`.
"""

from __future__ import annotations

import ast
import datetime
import json
import re
from email.utils import parsedate_to_datetime

_WHITESPACE = r"[\s\p{Z}]+"  # RE2's \s is ASCII only: \p{Z} adds no-break and other Unicode spaces, as str.split()
_ISO_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})(?:[T ]|$)")  # a date, maybe followed by a time


def _is_json(kind) -> bool:
    """datasets' `Json` type: what a field whose JSON type varies between rows is loaded as (each cell JSON text)."""
    return getattr(kind, "extension_name", None) == "arrow.json"


def _json_cell(cell: str | None):
    """A `Json` cell's value. datasets stores a string that already parses as JSON as it is, not JSON-encoded
    (`0704.0001`, which its parser reads as a number): a cell that is not JSON is that string itself. (The
    line-by-line reader gives datasets every value JSON-encoded: its cells decode exactly.)"""
    if cell is None:
        return None
    try:
        return json.loads(cell)
    except ValueError:
        return cell


def cell_values(column) -> list:
    """The column's Python values, `Json` cells (and `Json` elements of lists) decoded."""
    import pyarrow as pa

    kind = column.type
    if _is_json(kind):
        return [_json_cell(cell) for cell in column.to_pylist()]
    if (pa.types.is_list(kind) or pa.types.is_large_list(kind)) and _is_json(kind.value_type):
        return [None if cell is None else [_json_cell(v) for v in cell] for cell in column.to_pylist()]
    return column.to_pylist()


def invalid_utf8(column) -> list[int]:
    """Rows of a column (strings, lists of strings or of objects, `Json` text) whose text is not valid UTF-8: the
    JSON loader does not check, and such a cell fails wherever it is read. Looked for only in a batch that has one."""
    import pyarrow as pa

    try:
        column.validate(full=True)
        return []
    except pa.ArrowInvalid:
        pass
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    bad, start = [], 0
    for chunk in chunks:
        bad.extend(start + row for row in _invalid_rows(chunk))
        start += len(chunk)
    return bad


def _invalid_rows(array) -> list[int]:
    """Rows of one array with text that is not UTF-8, in order. A slice of strings validates its own text only, so
    strings are halved towards the bad ones; a slice of lists validates the whole child array (every row would look
    bad), so a list's bad values are found in its flattened child and mapped to their rows."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        array.validate(full=True)
        return []
    except pa.ArrowInvalid:
        pass
    kind = array.type
    if isinstance(array, pa.ExtensionArray):  # `Json`: text in its storage
        return _invalid_rows(array.storage)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        values = _invalid_rows(array.flatten())  # flatten and list_parent_indices both follow the slice's offset
        parents = pc.list_parent_indices(array).to_numpy(zero_copy_only=False)
        return sorted({int(parents[i]) for i in values})
    if pa.types.is_struct(kind):
        return sorted({row for field in array.flatten() for row in _invalid_rows(field)})
    if len(array) == 1:
        return [0]
    half = len(array) // 2
    return _invalid_rows(array.slice(0, half)) + [half + row for row in _invalid_rows(array.slice(half))]


def without_rows(column, rows: list[int]):
    """The column with the cells of `rows` null (`take` keeps any type, `Json` and lists included)."""
    import numpy as np
    import pyarrow as pa

    mask = np.zeros(len(column), dtype=bool)
    mask[rows] = True
    return column.take(pa.array(np.arange(len(column)), mask=mask))


def _type_name(value) -> str:
    return "null" if value is None else type(value).__name__


def text_column(column, field: str):
    """(Cleaned strings, per-row problems): a cell holding a number or a list instead of a string is a problem."""
    import pyarrow as pa

    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind):
        return clean_text(column), [None] * len(column)
    values = cell_values(column)
    problems = [None if v is None or isinstance(v, str) else f"{field}\texpected a string, got {_type_name(v)}"
                for v in values]
    return clean_text(pa.array([v if isinstance(v, str) else None for v in values], pa.string())), problems


def id_column(column, field: str):
    """(Ids as strings, per-row problems): a number is its string; a list or an object is a problem."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not _is_json(column.type) and not pa.types.is_nested(column.type):
        return pc.cast(column, pa.string()), [None] * len(column)
    # `Json` cells (ids of several JSON types): a number as written (`7`), a string decoded; datasets keeps a string
    # that parses as JSON (`0704.0001`, `1.50`, `true`) unencoded, so such text is the id as written too
    values = column.to_pylist() if _is_json(column.type) else cell_values(column)
    ids, problems = [], []
    for value in values:
        if isinstance(value, str) and _is_json(column.type):
            value = _json_cell(value) if value.startswith(("\"", "[", "{")) else value
        usable = value is None or isinstance(value, str) or type(value) in (int, float)
        ids.append(None if value is None or not usable else str(value))
        problems.append(None if usable else f"{field}\texpected a string or a number, got {_type_name(value)}")
    return pa.array(ids, pa.string()), problems


def clean_text(column):
    """Collapse line breaks and runs of spaces (the snapshot wraps and indents its text) and trim."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
        column = pc.cast(column, pa.string())
    return pc.utf8_trim_whitespace(pc.replace_substring_regex(column, _WHITESPACE, " "))


class BadCell(ValueError):
    """A cell of the wrong type; the message follows "field 'labels': "."""


def parse_label_cell(cell, sep: str | None) -> list[str] | None:
    """A label list from a list, a JSON / Python list literal, or a separated string; None when missing.

    Integer class ids (`3`, `[3, 17]`, as many datasets store labels) are read as their decimal strings. Raises
    `BadCell` for anything else (a boolean, a float, an object) and for a list holding one.
    """
    if cell is None:
        return None
    if _is_class_id(cell):
        cell = [cell]
    if isinstance(cell, str):
        stripped = cell.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            cell = _literal_list(stripped)
        elif sep is not None:
            cell = stripped.split(sep)
        else:
            cell = re.split(r"[\s,;]+", stripped)
    elif not isinstance(cell, list):
        raise BadCell(f"expected a list or a string, got {_type_name(cell)}")
    out: list[str] = []
    for value in cell:
        if not isinstance(value, str) and not _is_class_id(value):
            raise BadCell(f"expected a list of strings, got a list holding {_type_name(value)}")
        label = str(value).strip()
        if label and label not in out:
            out.append(label)
    return out


def _is_class_id(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _literal_list(text: str) -> list:
    for parse in (json.loads, ast.literal_eval):
        try:
            value = parse(text)
        except (ValueError, SyntaxError):
            continue
        if isinstance(value, list):
            return value
    return re.split(r"[\s,;]+", text.strip("[]"))


def iso_date(value) -> str | None:
    """`YYYY-MM-DD` of a date (a string that starts with one, or a date object); None for anything else."""
    if isinstance(value, datetime.date):
        return value.isoformat()[:10]
    match = _ISO_DATE.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        return None
    try:
        return datetime.date.fromisoformat(match.group(1)).isoformat()
    except ValueError:  # 2008-13-01
        return None


def first_version_date(versions) -> str | None:
    """ISO date of the snapshot's first version (`"Mon, 2 Apr 2007 19:18:42 GMT"`); None when there is none."""
    if isinstance(versions, str):  # a CSV or Parquet file may carry the list as JSON text
        try:
            versions = json.loads(versions)
        except ValueError:
            return None
    if not isinstance(versions, list) or not versions:
        return None
    created = versions[0].get("created") if isinstance(versions[0], dict) else None
    try:
        return parsedate_to_datetime(created).date().isoformat() if created else None
    except (TypeError, ValueError):
        return None
