"""Readers: one data file -> `datasets.Dataset` with columns `id, title, abstract, labels` (normalised).

Formats, detected from the file name and the fields it has (override with `ReadOptions`):
- the arXiv metadata snapshot (`arxiv-metadata-oai-snapshot.json`, JSON lines; `categories` is one space-separated
  string, titles and abstracts carry line breaks and indentation);
- AAPD as JSON lines (`{"id", "abstract", "labels"}`) or as the original paired text files `text_<split>` /
  `label_<split>` (one abstract / one space-separated label list a line);
- any JSONL / JSON / CSV / Parquet (optionally `.gz`) with a text and a label column; labels as a list or a string.

Big files go through `datasets`' Arrow-backed loaders and an Arrow-format batched `map`, never a Python list of
rows. Problems in the input become one-line `DataError`s naming the file, the line (row for Parquet) and the field.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from llmcls.cells import (
    BadCell,
    cell_values,
    first_version_date,
    id_column,
    invalid_utf8,
    iso_date,
    parse_label_cell,
    text_column,
    without_rows,
)
from llmcls.config import check_date_option
from llmcls.data_fallback import CsvHeader, csv_header, load_csv_python, load_json_lines_python
from llmcls.data_lines import (
    first_bad_json_line,
    first_line,
    line_problem,
    lines_but_trailing_blank,
    open_text,
    record_position,
)
from llmcls.errors import DataError

TEXT_FIELDS = ("abstract", "text", "summary", "summaries", "body", "content")
TITLE_FIELDS = ("title", "titles")
LABEL_FIELDS = ("labels", "label", "categories", "terms", "tags")
ID_FIELDS = ("id", "paper_id", "arxiv_id")
SUFFIX_LOADERS = {".jsonl": "json", ".json": "json", ".ndjson": "json", ".csv": "csv", ".parquet": "parquet"}
SAMPLES_DIR = Path(__file__).parent / "resources" / "data"
SAMPLE_DESCRIPTIONS = {
    "aapd-train": "AAPD: 400 rows of the original validation split (its rows 0-399), lower-cased, no titles",
    "aapd-validation": "AAPD: 100 rows (rows 800-899 of the original validation split)",
    "aapd-test": "AAPD: 100 rows (rows 900-999 of the original validation split)",
    "arxiv-snapshot": "arXiv metadata snapshot: 300 raw records (ids 0704.*), the snapshot's own format",
    "arxiv-abstracts": "arXiv titles + abstracts (cs, stat, math heavy), 300 rows, labels as lists",
}
PROGRESS_MIN_BYTES = 50 << 20  # datasets' own progress bars only for files that take a while
NOT_UTF8 = "is not valid UTF-8 (save the file as UTF-8)"  # a cell's problem


@dataclass
class ReadOptions:
    """How to read one file; `None` fields are auto-detected."""

    text_field: str | None = None
    title_field: str | None = None
    label_field: str | None = None
    id_field: str | None = None
    label_sep: str | None = None
    skip_bad_rows: bool = False
    since: str | None = None
    until: str | None = None
    date_field: str = "update_date"
    labels_required: bool = True  # False: a file to predict, whose rows may have no label field or no labels
    unique_ids: bool = False  # True: a repeated id is an error naming its first two lines (what a run needs)

    def __post_init__(self):
        self.since = check_date_option("since", self.since)
        self.until = check_date_option("until", self.until)

    @property
    def date_column(self) -> str:
        """The column --date_field reads: `versions` (its first entry's date) for first_version."""
        return "versions" if self.date_field == "first_version" else self.date_field


@dataclass
class ReadResult:
    dataset: object  # datasets.Dataset with id, title, abstract, labels
    path: str
    format: str  # "arxiv-snapshot", "aapd-text", "json", "csv", "parquet"
    n_skipped: int = 0
    n_filtered_by_date: int = 0  # rows --since/--until dropped: dated outside the window, or with no readable date
    n_undated: int = 0  # those of them with no readable date (missing, or not YYYY-MM-DD)
    undated_example: str | None = None  # the first of those: "line 3: '2008/11/26'"
    id_field: str | None = None  # None: ids are row numbers (the file has no id field)
    notes: list[str] = dataclasses.field(default_factory=list)  # hints about the file, for the user
    # pyarrow booleans, one per row of `dataset`: the rows of a file with an id field whose id was missing, numbered
    # by their row instead (no id to compare with another file's); None when every row has its own id
    numbered: object = None


def numbered_row_position(result: ReadResult, number: int) -> str | None:
    """Where the row numbered `number` for want of an id (its 0-based row of the file, the id predictions.jsonl gives
    it) is in the file: `line 4` (`row 4` for Parquet, `record 4, line 7` for a JSON array); None when the file
    cannot be read again."""
    path = Path(result.path)
    try:
        loader = "aapd-text" if result.format == "aapd-text" else _loader_for(path)
        if loader == "aapd-text":  # one row a line
            return f"line {number + 1}"
        line, where = record_position(path, loader, number)
    except (OSError, ValueError, DataError):
        return None
    return f"{where} {line}"


def bundled_samples() -> dict[str, Path]:
    """Bundled sample name -> file."""
    return {name: SAMPLES_DIR / f"{name}.jsonl" for name in SAMPLE_DESCRIPTIONS}


def resolve_path(spec: str) -> Path:
    """A file path, or the name of a bundled sample (`llmcls data list`)."""
    path = Path(spec).expanduser()
    if path.exists():
        return path
    samples = bundled_samples()
    if spec in samples:
        return samples[spec]
    raise DataError(spec, f"no such file or bundled sample (bundled: {', '.join(samples)})")


def read_file(spec: str, options: ReadOptions | None = None):
    """Read one file into a normalised `ReadResult`."""
    options = options or ReadOptions()
    path = resolve_path(spec)
    if path.is_dir():
        raise DataError(path, "is a directory, not a data file")
    with quiet_datasets(show_progress=path.stat().st_size >= PROGRESS_MIN_BYTES):
        pair = _aapd_pair(path)
        if pair is not None:
            return _read_aapd_text(*pair, options)
        loader = _loader_for(path)
        header = csv_header(path) if loader == "csv" else None
        if header is not None and header.repeated:  # refused before a big file is read when llmcls reads one
            _refuse_repeated_columns(path, header, _detect_fields(path, loader, header.names, options), options)
        raw = _load_arrow(path, loader, options, header)
        if raw.num_rows == 0:
            raise DataError(path, "has no rows")
        fields = _detect_fields(path, loader, raw.column_names, options)
        return _normalise(path, loader, raw, fields, options)


# ---------------------------------------------------------------------------------------------- loading


def _loader_for(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    loader = SUFFIX_LOADERS.get(suffixes[-1] if suffixes else "")
    if loader is None:
        raise DataError(path, f"unsupported file type (use one of {', '.join(SUFFIX_LOADERS)}, optionally .gz, "
                              "or an AAPD text_<split>/label_<split> pair)")
    return loader


def _load_arrow(path: Path, loader: str, options: ReadOptions, header: CsvHeader | None = None):
    """Arrow-backed load (`header`: a CSV file's); on failure find the offending line and say so in one line."""
    import datasets

    if loader == "parquet" and path.suffix.lower() == ".gz":
        return _load_gzipped_parquet(path)
    csv_header = None if header is None else header.names
    if header is not None and header.first_fields > len(csv_header):
        # pandas would take the first column for an index and read every row shifted by one column, silently: the
        # line-keeping reader names the record (or skips it)
        return load_csv_python(path, csv_header, options, None)
    # pandas would read a CSV id `0704.0010` as the number 704.001 (and labels `1` as integers): every CSV column is
    # read as the text written; an empty cell is empty text (no "NA"/"null" strings taken for missing values)
    csv_options = {} if csv_header is None else {
        "features": datasets.Features({name: datasets.Value("string") for name in csv_header}),
        "keep_default_na": False}
    if header is not None and header.repeated:  # the features name the columns as renamed: pandas must too
        csv_options.update(column_names=csv_header, header=0)
    try:
        # datasets keys a local file's cache on its path and modification time only: the size joins the key, so a
        # file replaced by another with the same mtime (cp -p, touch -r, some syncs) is read again
        return datasets.load_dataset(loader, data_files=str(path), split="train", name=f"size-{path.stat().st_size}",
                                     **csv_options)
    except Exception as err:  # datasets wraps parser errors in several exception types
        if _has_no_rows(path, loader):
            raise DataError(path, "has no rows") from None
        if loader == "csv" and csv_header is not None:
            return load_csv_python(path, csv_header, options, err)
        if loader != "json":
            raise DataError(path, f"cannot read {loader.upper()}: {first_line(err)}") from None
        bad = first_bad_json_line(path)
        if bad is not None and not options.skip_bad_rows:
            raise DataError(path, bad[1], line=bad[0]) from None
        # Malformed lines to skip, or values whose types vary between rows (a label list here, a string
        # there): read line by line instead, still into Arrow.
        return load_json_lines_python(path)


def _load_gzipped_parquet(path: Path):
    """Parquet needs random access (its footer is at the end): decompress to a temporary file and read the table
    from there into memory (datasets' parquet loader does not decompress)."""
    import datasets
    import pyarrow.parquet as pq

    try:
        with tempfile.TemporaryFile() as plain:
            with gzip.open(path, "rb") as packed:
                shutil.copyfileobj(packed, plain, 1 << 20)
            plain.seek(0)
            table = pq.read_table(plain)
    except Exception as err:  # gzip and pyarrow errors of several types
        raise DataError(path, f"cannot read PARQUET: {first_line(err)}") from None
    return datasets.Dataset(datasets.table.InMemoryTable(table))


def _has_no_rows(path: Path, loader: str) -> bool:
    """Whether the file holds no record at all (blank lines and a CSV header aside); the loaders fail on such files
    with messages about their own internals."""
    try:
        if loader == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows == 0
        if loader == "csv":
            import csv

            with open_text(path) as handle:
                return sum(1 for row in csv.reader(handle) if row) <= 1
        with open_text(path) as handle:  # only blank lines, or an empty JSON array
            start = handle.read(1 << 16)
            return not handle.read(1) and re.fullmatch(r"\s*(\[\s*\])?\s*", start) is not None
    except Exception:  # unreadable: let the caller report the loader's own error
        return False


@contextmanager
def quiet_datasets(show_progress: bool = False):
    """Silence datasets' own logging (we report errors ourselves, in one line); show its progress bars only for
    work big enough to take a while."""
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    previous = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    (datasets.enable_progress_bars if show_progress else datasets.disable_progress_bars)()
    try:
        yield
    finally:
        datasets.logging.set_verbosity(previous)
        (datasets.disable_progress_bars if was_disabled else datasets.enable_progress_bars)()


def _refuse_repeated_columns(path: Path, header: CsvHeader, fields: _Fields, options: ReadOptions) -> None:
    """A name the header gives two columns is an error when llmcls reads that column (which one is meant is
    unclear); another column's copies are kept under pandas' names (`note`, `note.1`)."""
    dated = options.since is not None or options.until is not None
    read = {fields.text, fields.title, fields.labels, fields.id}
    if dated:
        read.add(options.date_column)
    repeated = next((name for name in header.repeated if name in read), None)
    if repeated is not None:
        raise DataError(path, f"the header names column {repeated!r} twice", line=header.line)


# ---------------------------------------------------------------------------------------------- AAPD text pairs


def _aapd_pair(path: Path) -> tuple[Path, Path] | None:
    """`text_train` with `label_train` beside it (or the other way round): AAPD's original release."""
    name = path.name
    for own, other in (("text_", "label_"), ("label_", "text_")):
        if name.startswith(own) and not path.suffix:
            partner = path.with_name(other + name[len(own):])
            if not partner.exists():
                raise DataError(path, f"AAPD text/label pair incomplete: {partner} not found")
            return (path, partner) if own == "text_" else (partner, path)
    return None


def _read_aapd_text(text_path: Path, label_path: Path, options: ReadOptions) -> ReadResult:
    import datasets

    texts = lines_but_trailing_blank(text_path)
    labels = lines_but_trailing_blank(label_path)
    if not texts and not labels:
        raise DataError(text_path, "has no rows")
    if len(texts) != len(labels):
        raise DataError(text_path, f"has {len(texts)} lines but {label_path} has {len(labels)}",
                        line=min(len(texts), len(labels)) + 1)
    raw = datasets.Dataset.from_dict({"id": [f"{text_path.name}:{i}" for i in range(1, len(texts) + 1)],
                                      "abstract": texts, "labels": labels,
                                      "_line": list(range(1, len(texts) + 1))})
    fields = _Fields(text="abstract", title=None, labels="labels", id="id", snapshot=False)
    result = _normalise(text_path, "aapd-text", raw, fields, options)
    result.format = "aapd-text"
    return result


# ---------------------------------------------------------------------------------------------- fields


@dataclass
class _Fields:
    text: str
    title: str | None
    labels: str
    id: str | None
    snapshot: bool


def _detect_fields(path: Path, loader: str, columns: list[str], options: ReadOptions) -> _Fields:
    visible = [c for c in columns if not c.startswith("_")]

    def missing(problem: str, field: str) -> DataError:  # located at the first record (found only when needed)
        first, where = record_position(path, loader, 0)
        return DataError(path, problem, line=first, field=field, fields=visible, where=where)

    def pick(explicit, candidates, role, required=True):
        if explicit is not None:
            if explicit not in columns:
                raise missing("is missing", explicit)
            return explicit
        found = next((c for c in candidates if c in columns), None)
        if found is None and required:
            raise missing(f"no {role} field (looked for {', '.join(candidates)}; set --{role}_field)", candidates[0])
        return found

    snapshot = "categories" in columns and "abstract" in columns and (
        "update_date" in columns or "versions" in columns)
    return _Fields(
        text=pick(options.text_field, TEXT_FIELDS, "text"),
        title=pick(options.title_field, TITLE_FIELDS, "title", required=False),
        labels=pick(options.label_field, ("categories",) if snapshot else LABEL_FIELDS, "label",
                    required=options.labels_required),
        id=pick(options.id_field, ID_FIELDS, "id", required=False),
        snapshot=snapshot,
    )


# ---------------------------------------------------------------------------------------------- normalisation


def _normalise(path: Path, loader: str, raw, fields: _Fields, options: ReadOptions) -> ReadResult:
    """Arrow-format batched map to the common schema, then report or skip rows with problems."""
    import numpy as np
    import pyarrow.compute as pc

    dated = options.since is not None or options.until is not None
    date_column = options.date_column
    if dated and date_column not in raw.column_names:  # a snapshot-like file too: datasets' traceback followed
        other = next((c for c in ("update_date", "versions") if c != date_column and c in raw.column_names), None)
        if other is None:
            raise DataError(path, "--since/--until need dates: this file has no update_date or versions field")
        option = "first_version" if other == "versions" else "update_date"
        raise DataError(path, f"--since/--until need dates: this file has no {date_column} field (--date_field "
                              f"{options.date_field}); --date_field {option} reads its {other} field")
    keep = [c for c in (fields.text, fields.title, fields.labels, fields.id, "_line", "_malformed")
            if c in raw.column_names]
    if dated:
        keep.append(date_column)
    raw = raw.select_columns(sorted(set(keep), key=keep.index))
    # the dates' window is applied after this map, which only reads the dates: keyed without it, the normalised file
    # in the cache serves every --since/--until (each window had re-read and re-written the whole file)
    read = dataclasses.replace(options, since="0001-01-01" if dated else None, until=None)
    normalised = raw.with_format("arrow").map(
        _normalise_batch, batched=True, batch_size=10_000, with_indices=True, remove_columns=raw.column_names,
        fn_kwargs={"fields": fields, "options": read, "code": _reader_code()}, desc=f"Reading {path.name}",
    ).with_format(None)
    problems = normalised.data.column("_problem")
    bad = np.flatnonzero(pc.is_valid(problems).to_numpy(zero_copy_only=False))
    n_skipped = 0
    if len(bad):
        if not options.skip_bad_rows:
            row = normalised[int(bad[0])]
            line, where = (row["_line"], "line") if row["_line"] is not None else record_position(
                path, loader, int(bad[0]))
            field, _, problem = row["_problem"].partition("\t")
            # the line's own problem, told in full; its bytes that are not UTF-8 only when they are the row's problem
            # (they may be in a field llmcls does not read: the row's real problem is then another)
            utf8 = not field or problem == NOT_UTF8
            whole = line_problem(path, line, utf8) if loader == "json" and where == "line" else None
            if whole is not None:  # a `null` line (read as a row without fields), bytes that are not UTF-8
                field, problem = "", whole
            raise DataError(path, problem, line=line, field=field or None, where=where)
        n_skipped = len(bad)
        normalised = normalised.select(np.setdiff1d(np.arange(len(normalised)), bad))
    n_before = len(normalised)
    n_undated, undated_example = 0, None
    if dated:
        before, (normalised, undated) = normalised, _filter_dates(normalised, options)
        n_undated = len(undated)
        if n_undated:
            undated_example = _undated_example(path, loader, raw, before, undated, options)
    if options.unique_ids:
        _check_unique_ids(path, loader, normalised)
    numbered = None  # without an id field every row is numbered: ReadResult.numbered stays None
    if fields.id:
        numbered = arrow_rows(normalised, ["_numbered"]).column("_numbered")
        numbered = numbered.combine_chunks() if pc.any(numbered).as_py() else None
    normalised = normalised.remove_columns(["_problem", "_line", "_row", "_date", "_numbered"])
    if getattr(normalised, "_indices", None) is not None:  # rows skipped or filtered: write the kept rows once
        normalised = normalised.flatten_indices()  # (without a selection this would copy the whole file again)
    fmt = "arxiv-snapshot" if fields.snapshot else loader
    joined = _joined_labels_note(normalised.data.column("labels"), options.label_sep) if fields.labels else None
    return ReadResult(normalised, str(path), fmt, n_skipped, n_before - len(normalised), n_undated, undated_example,
                      fields.id, [joined] if joined else [], numbered)


def _check_unique_ids(path: Path, loader: str, dataset) -> None:
    """Ids name examples in predictions files, resumed runs and paired comparisons, so within a file they must be
    unique (a file without an id field gets row numbers). The error names the first repeated id's first two
    lines (rows for Parquet)."""
    import numpy as np
    import pyarrow.compute as pc

    rows = arrow_rows(dataset, ["id", "_line", "_row"])
    counts = pc.value_counts(rows.column("id"))  # in order of first appearance
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))
    if len(repeated) == 0:
        return
    first = repeated.field("values")[0].as_py()
    places = []
    for i in np.flatnonzero(pc.equal(rows.column("id"), first).to_numpy(zero_copy_only=False))[:2]:
        line = rows.column("_line")[int(i)].as_py()
        places.append((line, "line") if line is not None else record_position(
            path, loader, rows.column("_row")[int(i)].as_py()))
    (a, where_a), (b, where_b) = places
    where = f"{where_a}s {a} and {b}" if where_a == where_b and where_a in ("line", "row") else (
        f"{where_a} {a} and {where_b} {b}")
    others = f"{len(repeated)} ids repeat" if len(repeated) > 1 else "no other id repeats"
    raise DataError(path, f"id {first!r} is on more than one row ({where}; {others}): ids must be unique; name a "
                          "unique field with --id_field, or drop the id field to number rows")


def _joined_labels_note(labels, label_sep: str | None = None) -> str | None:
    """A hint when at least half the labelled rows have a label holding '|', ';' or ',' (or, with a --label_sep,
    also a space between code-like pieces: `--label_sep ';'` over `cs.IT math.IT`): likely several labels joined
    by a separator the reader does not split on (a string splits on whitespace, commas and semicolons unless
    --label_sep says otherwise; a list's items not at all). Rows with a single label hold no separator, hence half,
    not all."""
    import pyarrow.compute as pc

    labels = labels.combine_chunks()  # parent indices count from each chunk's start
    n_rows = pc.sum(pc.greater(pc.list_value_length(labels), 0)).as_py() or 0
    flat, parents = pc.list_flatten(labels), pc.list_parent_indices(labels)
    for sep in "|;," + (" " if label_sep else ""):
        if label_sep and sep in label_sep:
            continue
        # a space only between code-like pieces ("cs.IT math.IT"): labels such as "Machine Learning" hold one as well
        holds = pc.match_substring_regex(flat, r"^\S+\.\S+(?:\s+\S+\.\S+)+$") if sep == " " else (
            pc.match_substring(flat, sep))
        n_holding = pc.count_distinct(pc.filter(parents, holds)).as_py()
        if n_holding and 2 * n_holding >= n_rows:
            example = pc.filter(flat, holds)[0].as_py()
            told = (f", which --label_sep {label_sep!r} does not split" if label_sep else "")
            return (f"{n_holding} of {n_rows} rows have a label holding {sep!r} (e.g. {example!r}){told}: if {sep!r} "
                    f"joins several labels, pass --label_sep {sep!r}"
                    + (" (or leave --label_sep out: whitespace, commas and semicolons split then)"
                       if label_sep and sep in " ,;" else ""))
    return None


def arrow_rows(ds, columns: list[str] | None = None):
    """The rows of `ds` as a pyarrow Table, of `columns` only when given (a selection copies what it reads: labels
    alone, not every abstract). Not `ds.data`: after `select` or `filter` (a split, a filter) that is still the
    whole underlying table, and the dataset's rows are those of its indices mapping."""
    if columns is not None:
        ds = ds.select_columns(columns)
    return ds.with_format("arrow")[0:len(ds)]


@functools.cache
def _reader_code() -> str:
    """A digest of the modules that normalise rows, part of the map's cache key: datasets hashes a module-level
    function by its name, not its code, so without it an llmcls whose reading changed would reuse the rows an
    earlier version normalised and cached for the same file and options."""
    from llmcls.environment import files_digest

    here = Path(__file__).parent
    return files_digest([(name, here / name) for name in ("data.py", "cells.py", "data_lines.py")], size=8)


def _normalise_batch(batch, indices, fields: _Fields, options: ReadOptions, code: str = ""):
    """One batch of raw rows as llmcls's columns (`code`: `_reader_code()`, read by the cache key only)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = batch.num_rows
    none = [None] * n
    # cells that are not UTF-8 (the JSON loader keeps their bytes) are problems of their row, and read as missing
    utf8_problems = list(none)
    for name in batch.column_names:
        bad = invalid_utf8(batch.column(name)) if not name.startswith("_") else []
        if bad:
            batch = batch.set_column(batch.column_names.index(name), name, without_rows(batch.column(name), bad))
            for i in bad:
                utf8_problems[i] = utf8_problems[i] or f"{name}\t{NOT_UTF8}"
    text, text_problems = text_column(batch.column(fields.text), fields.text)
    title, title_problems = text_column(batch.column(fields.title), fields.title) if fields.title else (
        pa.nulls(n, pa.string()), none)
    row_numbers = pa.array([str(i) for i in indices], pa.string())
    ids, id_problems, numbered = row_numbers, none, pa.array([True] * n, pa.bool_())
    if fields.id:  # rows without an id (some public samples have none) are named by their row number
        given, id_problems = id_column(batch.column(fields.id), fields.id)
        given = pc.utf8_trim_whitespace(given)
        numbered = pc.invert(pc.fill_null(pc.greater(pc.utf8_length(given), 0), False))
        ids = pc.if_else(numbered, row_numbers, given)
    labels, label_problems = [], []
    for cell in cell_values(batch.column(fields.labels)) if fields.labels else [[]] * n:
        try:
            labels.append(parse_label_cell(cell, options.label_sep))
            label_problems.append(None)
        except BadCell as err:
            labels.append(None)
            label_problems.append(f"{fields.labels}\t{err}")
    malformed = batch.column("_malformed").to_pylist() if "_malformed" in batch.column_names else none
    cell_problems = [u or a or b or c or d for u, a, b, c, d in zip(utf8_problems, text_problems, title_problems,
                                                                    id_problems, label_problems, strict=True)]
    problems = [_row_problem(t, lab, bad, cell, fields, options.labels_required) for t, lab, bad, cell in zip(
        text.to_pylist(), labels, malformed, cell_problems, strict=True)]
    lines = batch.column("_line") if "_line" in batch.column_names else pa.nulls(n, pa.int64())
    dates = _dates(batch, options) if (options.since or options.until) else pa.nulls(n, pa.string())
    return pa.table({
        "id": ids,
        "title": pc.fill_null(title, ""),
        "abstract": pc.fill_null(text, ""),
        "labels": pa.array([lab or [] for lab in labels], pa.list_(pa.string())),
        "_problem": pa.array(problems, pa.string()),
        "_line": pc.cast(lines, pa.int64()),
        "_row": pa.array(indices, pa.int64()),  # the row of the file, to find a row's line after a selection
        "_date": dates,
        "_numbered": numbered,  # the id is the row number: no id to compare with another file's
    })


def _row_problem(text: str | None, labels: list[str] | None, malformed: str | None, cell_problem: str | None,
                 fields: _Fields, labels_required: bool = True) -> str | None:
    """`field<TAB>problem` for a bad row, else None; `malformed` says why a line read line by line is no row,
    `cell_problem` is a cell of the wrong type, found earlier."""
    if malformed:
        return f"\t{malformed}"
    if cell_problem:
        return cell_problem
    if text is None:
        return f"{fields.text}\tis missing"
    if not text:
        return f"{fields.text}\tis empty"
    if labels_required and labels is None:
        return f"{fields.labels}\tis missing"
    if labels_required and not labels:
        return f"{fields.labels}\thas no labels"
    return None


def _dates(batch, options: ReadOptions):
    import pyarrow as pa

    if options.date_field == "first_version":
        values = [first_version_date(v) for v in cell_values(batch.column("versions"))]
    else:
        values = [iso_date(v) for v in cell_values(batch.column(options.date_field))]
    return pa.array(values, pa.string())


def _filter_dates(dataset, options: ReadOptions):
    """(The rows whose date lies in [since, until] (ISO strings compare in date order), the positions of the undated
    rows among `dataset`'s: no date, or one that is not YYYY-MM-DD; they go too, and are counted apart)."""
    import numpy as np
    import pyarrow.compute as pc

    # the dates of the dataset's rows: after skipped rows `dataset.data` is still the whole table, whose positions
    # are not the selection's (the wrong rows were kept, or an index ran past the end)
    dates = arrow_rows(dataset, ["_date"]).column("_date")
    mask = pc.is_valid(dates)
    if options.since:
        mask = pc.and_(mask, pc.greater_equal(dates, options.since))
    if options.until:
        mask = pc.and_(mask, pc.less_equal(dates, options.until))
    keep = np.flatnonzero(pc.fill_null(mask, False).to_numpy(zero_copy_only=False))
    undated = np.flatnonzero(pc.is_null(dates).to_numpy(zero_copy_only=False))
    return dataset.select(keep), undated


def _undated_example(path: Path, loader: str, raw, dataset, undated, options: ReadOptions) -> str:
    """`line 8: '2008/11/26'`: where the first undated row (`undated`: positions among `dataset`, the rows before the
    date filter) with a date cell written is in the file, and that cell; the first undated row's `no value` when no
    such row has one."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    column = options.date_column
    file_rows = arrow_rows(dataset, ["_row"]).column("_row").take(undated)  # rows of `raw`
    cells = arrow_rows(raw, [column]).column(column).take(file_rows)
    present = pc.is_valid(cells)
    if pa.types.is_string(cells.type) or pa.types.is_large_string(cells.type):  # an empty cell is no date written
        present = pc.and_(present, pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(cells)), 0))
    written = np.flatnonzero(pc.fill_null(present, False).to_numpy(zero_copy_only=False))
    index = int(undated[written[0]] if len(written) else undated[0])
    row = dataset.select_columns(["_line", "_row"])[index]
    line, where = (row["_line"], "line") if row["_line"] is not None else record_position(path, loader, row["_row"])
    value = cell_values(raw.with_format("arrow")[row["_row"]:row["_row"] + 1].column(column))[0]
    if options.date_field == "first_version" and isinstance(value, list) and value and isinstance(value[0], dict):
        value = value[0].get("created")
    shown = "no value" if value is None or (isinstance(value, str) and not value.strip()) else repr(value)
    return f"{where} {line}: {shown if len(shown) <= 60 else shown[:57] + '...'}"
