"""arXiv category taxonomy and the label space that fixes the column order of every label matrix.

Aliases. arXiv files a few categories under two codes. The row of the secondary code names its canonical twin in
``alias_of``; the direction is arXiv's own (the code arXiv lists a paper under is the canonical one):

    math.IT -> cs.IT      math.MP -> math-ph     stat.TH -> math.ST
    cs.NA -> math.NA      cs.SY -> eess.SY       q-fin.EC -> econ.GN

Both codes keep their own row and name. Aliases are only ever reported (``aliases_of``), never merged implicitly:
datasets such as AAPD use cs.IT and math.IT as two labels, and merging them silently would change label counts and
scores.

This module is a leaf: numpy and the standard library only, so importing it stays cheap.
"""

from __future__ import annotations

import functools
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from itertools import chain, repeat
from pathlib import Path
from typing import Literal

import numpy as np

__all__ = [
    "ALIASES",
    "CategoryInfo",
    "GROUPS",
    "LabelSpace",
    "UnknownLabelError",
    "aliases_of",
    "archive_of",
    "category_name",
    "taxonomy",
]

# (alias, canonical) pairs; the TSV's alias_of column is checked against this on load so the two cannot drift.
ALIASES: tuple[tuple[str, str], ...] = (
    ("math.IT", "cs.IT"),
    ("math.MP", "math-ph"),
    ("stat.TH", "math.ST"),
    ("cs.NA", "math.NA"),
    ("cs.SY", "eess.SY"),
    ("q-fin.EC", "econ.GN"),
)

GROUPS = (
    "Computer Science",
    "Economics",
    "Electrical Engineering and Systems Science",
    "Mathematics",
    "Physics",
    "Quantitative Biology",
    "Quantitative Finance",
    "Statistics",
)

_TSV_HEADER = ("code", "name", "archive", "group", "status", "alias_of")
_LABELS_FILE = "labels.json"


@dataclass(frozen=True)
class CategoryInfo:
    """One row of the bundled taxonomy. ``alias_of`` is the canonical code for an alias row, else None."""

    code: str
    name: str
    archive: str
    group: str
    status: str  # "current" or "legacy"
    alias_of: str | None = None


# ---------------------------------------------------------------------------------------------------------------------
# Taxonomy


@functools.cache
def _table() -> dict[str, CategoryInfo]:
    text = (resources.files("llmcls") / "resources" / "arxiv_taxonomy.tsv").read_text(encoding="utf-8")
    table = _parse_taxonomy(text)
    _check_aliases(table)
    return table


def _parse_taxonomy(text: str) -> dict[str, CategoryInfo]:
    lines = text.splitlines()
    if not lines or tuple(lines[0].split("\t")) != _TSV_HEADER:
        raise ValueError("arxiv_taxonomy.tsv: unexpected header")
    table: dict[str, CategoryInfo] = {}
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(_TSV_HEADER):
            raise ValueError(f"arxiv_taxonomy.tsv line {lineno}: expected {len(_TSV_HEADER)} fields")
        code, name, archive, group, status, alias_of = fields
        if code in table:
            raise ValueError(f"arxiv_taxonomy.tsv line {lineno}: duplicate code {code!r}")
        table[code] = CategoryInfo(code, name, archive, group, status, alias_of or None)
    return table


def _check_aliases(table: dict[str, CategoryInfo]) -> None:
    # A packaging mistake here would silently change aliases_of(), so fail loudly instead.
    found = {(info.code, info.alias_of) for info in table.values() if info.alias_of}
    if found != set(ALIASES):
        raise ValueError(f"arxiv_taxonomy.tsv: alias_of column {sorted(found)} disagrees with ALIASES")


def taxonomy() -> dict[str, CategoryInfo]:
    """All known arXiv categories (current and legacy) by code. The file is read once; this returns a fresh copy."""
    return dict(_table())


# Names of the archives that are not categories themselves (astro-ph, cond-mat, hep-th, ... are, with their own
# names): the labels of `--label_level archive`. arXiv names them after their groups; nlin is "Nonlinear Sciences".
ARCHIVE_NAMES = {"cs": "Computer Science", "econ": "Economics", "eess": "Electrical Engineering and Systems Science",
                 "math": "Mathematics", "nlin": "Nonlinear Sciences", "physics": "Physics",
                 "q-bio": "Quantitative Biology", "q-fin": "Quantitative Finance", "stat": "Statistics"}


def category_name(code: str) -> str | None:
    """arXiv's human-readable name for ``code`` (a category, or an archive of `--label_level archive`), or None
    when it is neither."""
    info = _table().get(code)
    return info.name if info else ARCHIVE_NAMES.get(code)


# Archives arXiv retired into categories of others (the category that took each over in parentheses): their old
# papers count under today's archive, so `--label_level archive` does not keep `cmp-lg` apart from `cs`.
SUBSUMED_ARCHIVES = {
    "cmp-lg": "cs",  # cs.CL
    "adap-org": "nlin", "chao-dyn": "nlin", "comp-gas": "nlin", "patt-sol": "nlin", "solv-int": "nlin",
    "alg-geom": "math", "dg-ga": "math", "funct-an": "math", "q-alg": "math",  # math.AG, .DG, .FA, .QA
    "mtrl-th": "cond-mat", "supr-con": "cond-mat",  # cond-mat.mtrl-sci, cond-mat.supr-con
    "acc-phys": "physics", "ao-sci": "physics", "atom-ph": "physics", "bayes-an": "physics",  # physics.acc-ph,
    "chem-ph": "physics", "plasm-ph": "physics",  # .ao-ph, .atom-ph, .data-an, .chem-ph, .plasm-ph
}


def archive_of(code: str) -> str:
    """The archive a code belongs to today: the part before the first dot (``cond-mat.str-el`` -> ``cond-mat``),
    or for a retired archive the one that took it over (``chao-dyn`` -> ``nlin``, see SUBSUMED_ARCHIVES).

    Works for codes outside the taxonomy too, because arXiv's naming rule is purely syntactic.
    """
    archive = code.split(".", 1)[0]
    return SUBSUMED_ARCHIVES.get(archive, archive)


@functools.cache
def _alias_groups() -> dict[str, frozenset[str]]:
    groups: dict[str, frozenset[str]] = {}
    for alias, canonical in ALIASES:
        members = groups.get(alias, frozenset({alias})) | groups.get(canonical, frozenset({canonical}))
        for code in members:
            groups[code] = members
    return groups


def aliases_of(code: str) -> set[str]:
    """The other codes arXiv uses for the same category (empty when there are none), in either direction."""
    return set(_alias_groups().get(code, frozenset({code}))) - {code}


# ---------------------------------------------------------------------------------------------------------------------
# Label space


class UnknownLabelError(KeyError):
    """A label that is not in the label space. A KeyError so that mapping-style callers can catch it."""

    def __init__(self, label: str, message: str | None = None):
        super().__init__(label)
        self.label = label
        self.message = message or f"unknown label {label!r}"

    def __str__(self) -> str:
        # KeyError's default str() is the repr of its argument; a sentence reads better in tracebacks.
        return self.message


class LabelSpace:
    """An ordered, duplicate-free set of label strings; its order is the column order of every label matrix.

    Two spaces are equal only when they hold the same labels in the same order, because a different order means
    different matrix columns. Alias codes (cs.IT and math.IT) are distinct labels here.
    """

    __slots__ = ("_labels", "_index")

    def __init__(self, labels: Iterable[str]):
        if isinstance(labels, str):
            raise TypeError("LabelSpace expects an iterable of label strings, not one string")
        self._labels: tuple[str, ...] = tuple(labels)
        self._index: dict[str, int] = {}
        for i, label in enumerate(self._labels):
            _check_label(label)
            if label in self._index:
                raise ValueError(f"duplicate label {label!r} at positions {self._index[label]} and {i}")
            self._index[label] = i

    # -- construction ------------------------------------------------------------------------------------------------

    @classmethod
    def from_label_lists(
        cls, label_lists: Iterable[Iterable[str]], *, min_count: int = 1, top_k: int | None = None
    ) -> LabelSpace:
        """Build the space from the labels of a dataset.

        The canonical order is descending frequency (number of examples that carry the label; a label repeated
        within one example counts once), ties broken by the label string. Labels seen fewer than ``min_count``
        times are dropped, then only the ``top_k`` most frequent are kept.
        """
        counts: Counter[str] = Counter()
        for labels in label_lists:
            _check_row(labels)
            counts.update(set(labels))
        return cls.from_counts(counts, min_count=min_count, top_k=top_k)

    @classmethod
    def from_counts(cls, counts: dict[str, int], *, min_count: int = 1, top_k: int | None = None) -> LabelSpace:
        """The space of `from_label_lists`, from per-label example counts (counted elsewhere, e.g. in Arrow)."""
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        if top_k is not None and top_k < 0:
            raise ValueError(f"top_k must be >= 0 or None, got {top_k}")
        ranked = sorted((item for item in counts.items() if item[1] >= min_count), key=lambda kv: (-kv[1], kv[0]))
        if top_k is not None:
            ranked = ranked[:top_k]
        return cls(label for label, _ in ranked)

    # -- sequence protocol -------------------------------------------------------------------------------------------

    @property
    def labels(self) -> tuple[str, ...]:
        return self._labels

    def __len__(self) -> int:
        return len(self._labels)

    def __iter__(self) -> Iterator[str]:
        return iter(self._labels)

    def __getitem__(self, i: int) -> str:
        return self._labels[i]

    def __contains__(self, label: object) -> bool:
        return label in self._index

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LabelSpace):
            return NotImplemented
        return self._labels == other._labels

    def __hash__(self) -> int:
        return hash(self._labels)

    def __repr__(self) -> str:
        shown = ", ".join(self._labels[:5]) + (", ..." if len(self) > 5 else "")
        return f"LabelSpace({len(self)} labels: {shown})"

    def index(self, label: str) -> int:
        """Column of ``label``; raises UnknownLabelError when it is not in the space."""
        try:
            return self._index[label]
        except KeyError:
            raise self._unknown(label) from None

    # -- matrices ----------------------------------------------------------------------------------------------------

    def to_multi_hot(
        self, label_lists: Iterable[Iterable[str]], *, unknown: Literal["error", "ignore"] = "error"
    ) -> np.ndarray:
        """Boolean matrix of shape (n, len(self)); row i marks the labels of example i (a list, tuple or set).

        ``unknown="error"`` raises UnknownLabelError for the first label not in the space; ``"ignore"`` drops it.
        """
        if unknown not in ("error", "ignore"):
            raise ValueError(f"unknown must be 'error' or 'ignore', got {unknown!r}")
        rows_in = list(label_lists)
        # A bare string would be iterated character by character; catch it once, at C speed, via the set of types.
        if str in set(map(type, rows_in)):
            _check_row(next(r for r in rows_in if type(r) is str))
        lengths = np.fromiter(map(len, rows_in), dtype=np.intp, count=len(rows_in))
        flat = list(chain.from_iterable(rows_in))
        # dict.get mapped over the flat labels keeps the per-label work in C; -1 marks labels outside the space.
        cols = np.fromiter(map(self._index.get, flat, repeat(-1)), dtype=np.intp, count=len(flat))
        rows = np.repeat(np.arange(len(rows_in), dtype=np.intp), lengths)
        missing = cols < 0
        if missing.any():
            if unknown == "error":
                raise self._unknown(flat[int(np.argmax(missing))])
            rows, cols = rows[~missing], cols[~missing]
        out = np.zeros((len(rows_in), len(self)), dtype=bool)
        out[rows, cols] = True
        return out

    def from_multi_hot(self, matrix: np.ndarray | Sequence[Sequence[int]]) -> list[list[str]]:
        """Label lists from a 0/1 or boolean matrix of shape (n, len(self)); labels come in space order."""
        m = np.asarray(matrix)
        if m.ndim != 2 or m.shape[1] != len(self):
            raise ValueError(f"expected a matrix of shape (n, {len(self)}), got shape {m.shape}")
        if m.dtype != bool:
            # Scores or probabilities would pass as "nonzero"; demand an explicit threshold instead.
            if not np.isin(m, (0, 1)).all():
                raise ValueError("from_multi_hot expects 0/1 or boolean values; threshold scores first")
            m = m != 0
        n, width = m.shape
        # Flat indices come in row-major order, so columns (hence labels) ascend within each row.
        rows, cols = np.divmod(np.flatnonzero(m), max(width, 1))
        names = np.asarray(self._labels, dtype=object)[cols].tolist()
        ends = np.cumsum(np.bincount(rows, minlength=n)).tolist()
        # Slicing one flat list is several times faster than building each row label by label.
        starts = [0, *ends][:-1]
        return [names[start:end] for start, end in zip(starts, ends, strict=True)]

    # -- names -------------------------------------------------------------------------------------------------------

    def name(self, label: str) -> str | None:
        """arXiv name of ``label`` (None when it is not an arXiv code)."""
        return category_name(label)

    def display(self, label: str) -> str:
        """``"cs.IT (Information Theory)"``, or the bare label when no name is known."""
        name = category_name(label)
        return f"{label} ({name})" if name else label

    # -- files -------------------------------------------------------------------------------------------------------

    def to_json(self) -> str:
        """The text of ``labels.json``: ``{"labels": [...], "names": {...}}`` (UTF-8 JSON, names of arXiv codes)."""
        names = {label: n for label in self._labels if (n := category_name(label))}
        return json.dumps({"labels": list(self._labels), "names": names}, ensure_ascii=False, indent=2) + "\n"

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``to_json()`` to ``path``; a directory gets ``labels.json`` inside it. Returns the file written.

        A plain write: run directories write their labels.json through ``RunDir.write_labels``, which goes through
        ``runs.atomic_write`` (this leaf module does not import runs.py, which imports it).
        """
        target = _resolve(Path(path))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(self.to_json(), encoding="utf-8")
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LabelSpace:
        """Read a space saved by ``save``, a plain JSON list, or a text file with one label a line.

        In text files blank lines and lines starting with ``#`` are skipped. A directory means its ``labels.json``.
        Any problem raises ValueError with a one-line message that names the file.
        """
        source = _resolve(Path(path))
        try:
            text = source.read_text(encoding="utf-8-sig")  # a byte order mark is not part of the first label
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read label file {source}: {_one_line(exc)}") from None
        labels = _parse_label_file(text, source)
        if not labels:
            raise ValueError(f"label file {source} holds no labels")
        try:
            return cls(labels)
        except (TypeError, ValueError) as exc:
            twice = next((label for i, label in enumerate(labels) if label in labels[:i]), None)
            if twice is not None and not _is_json(text, source):  # a text file: say the lines, not positions
                lines = [n for n, line in enumerate(text.splitlines(), start=1) if line.strip() == twice]
                raise ValueError(f"label file {source}: duplicate label {twice!r} on lines {lines[0]} and "
                                 f"{lines[1]}") from None
            raise ValueError(f"label file {source}: {exc}") from None

    # -- helpers -----------------------------------------------------------------------------------------------------

    def _unknown(self, label: str) -> UnknownLabelError:
        message = f"unknown label {label!r}: not among the {len(self)} labels of this space"
        hint = _suggestion(label, self)
        return UnknownLabelError(label, f"{message} ({hint})" if hint else message)


def _check_label(label: object) -> None:
    if not isinstance(label, str):
        raise TypeError(f"labels must be strings, got {type(label).__name__}: {label!r}")
    if not label or label != label.strip():
        # Stray whitespace usually means a parsing bug upstream ("cs.IT\n"); reject it rather than keep two spellings.
        raise ValueError(f"labels must be non-empty without surrounding whitespace, got {label!r}")


def _check_row(labels: object) -> None:
    if isinstance(labels, str):
        raise TypeError(f"each example's labels must be a list of strings, got the string {labels!r} (split it first)")


def _suggestion(label: str, space: LabelSpace) -> str:
    # Explain the two commonest misses: the alias twin is in the space, or only the case differs.
    twins = sorted(aliases_of(label) & set(space.labels))
    if twins:
        return f"its alias {twins[0]} is; aliases are not merged"
    folded = [known for known in space.labels if known.lower() == label.lower()]
    return f"did you mean {folded[0]!r}?" if folded else ""


def _resolve(path: Path) -> Path:
    return path / _LABELS_FILE if path.is_dir() else path


def _one_line(exc: BaseException) -> str:
    return " ".join(str(getattr(exc, "strerror", None) or exc).split())


def _is_json(text: str, source: Path) -> bool:
    return source.suffix.lower() == ".json" or text.lstrip().startswith(("[", "{"))


def _parse_label_file(text: str, source: Path) -> list:
    if _is_json(text, source):
        return _parse_label_json(text, source)
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _parse_label_json(text: str, source: Path) -> list:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"label file {source}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    if isinstance(data, dict):
        data = data.get("labels")
    if not isinstance(data, list):
        raise ValueError(f'label file {source}: expected a JSON list or an object with a "labels" list')
    return data
