"""Assemble the splits and the label space of a run from `DataArguments`.

Order of operations (documented in the README): read each file -> keep `--categories` -> map to `--label_level`
-> split `--train` by `--split_ratios` -> label space (`--labels`, else the training labels filtered by
`--min_label_count` and `--top_labels`) -> drop labels outside the space from every split and the rows left
without a label -> `--max_train_examples` / `--max_eval_examples`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llmcls.config import DataArguments, refuse_empty
from llmcls.data import ReadOptions, arrow_rows, numbered_row_position, quiet_datasets, read_file
from llmcls.errors import LlmclsError
from llmcls.labels import LabelSpace, archive_of
from llmcls.progress import console, status
from llmcls.splits import iterative_stratification, parse_ratios

SPLITS = ("train", "validation", "test")
TEXT_KEY = "compared after whitespace normalisation and lower-casing"  # how text_keys compares rows


@dataclass
class Corpus:
    """The splits of a run (`datasets.Dataset` with id, title, abstract, labels, or None) and its label space."""

    label_space: LabelSpace
    splits: dict[str, object] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what was skipped or dropped, for the user and config.yaml

    def get(self, name: str):
        return self.splits.get(name)

    def sizes(self) -> dict[str, int]:
        return {name: len(ds) for name, ds in self.splits.items() if ds is not None}

    def fingerprints(self) -> dict[str, str]:
        """A short digest of each split's ids and gold labels: a resumed run can tell a file edited in place."""
        import hashlib
        import json

        digests = {}
        for name, ds in self.splits.items():
            if ds is not None:
                rows = arrow_rows(ds, ["id", "labels"])
                text = json.dumps([rows.column("id").to_pylist(), rows.column("labels").to_pylist()])
                digests[name] = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
        return digests


def read_options(args: DataArguments, labels_required: bool = True) -> ReadOptions:
    return ReadOptions(text_field=args.text_field, title_field=args.title_field, label_field=args.label_field,
                       id_field=args.id_field, label_sep=args.label_sep, skip_bad_rows=args.skip_bad_rows,
                       since=args.since, until=args.until, date_field=args.date_field,
                       labels_required=labels_required, unique_ids=True)


def load_corpus(args: DataArguments, required: tuple[str, ...] = (), unlabelled: tuple[str, ...] = (),
                called: dict[str, str] | None = None) -> Corpus:
    """Read, filter and split the data named by `args`; `required` names splits that must exist, `unlabelled`
    splits to predict whose rows may have no labels (kept, with an empty label list, and not scored). `called`
    names a split otherwise in the notes and errors (`llmcls data stats FILE` reads FILE as --train: the notes
    name FILE)."""
    with quiet_datasets(show_progress=False):  # the readers show progress for big files themselves
        return _load_corpus(args, required, unlabelled, called or {})


def _load_corpus(args: DataArguments, required: tuple[str, ...], unlabelled: tuple[str, ...],
                 called: dict[str, str]) -> Corpus:
    notes: list[str] = []
    splits = {}
    read = {}
    for option in ("max_train_examples", "max_eval_examples"):
        if getattr(args, option) is not None and getattr(args, option) < 1:
            raise LlmclsError(f"--{option} must be at least 1, got {getattr(args, option)}")
    # an unset shell variable: `--labels ""` read as no option, `--label_sep ""` a ValueError in the reader
    refuse_empty(args)
    for name in SPLITS:
        spec = getattr(args, name)
        if spec is None:
            continue
        result = read[name] = read_file(spec, read_options(args, labels_required=name not in unlabelled))
        notes.extend(f"{name}: {note}" for note in result.notes)
        if result.n_skipped:
            notes.append(f"{name}: skipped {result.n_skipped} bad rows in {result.path}")
        dates = _date_counts(result, args.date_field)
        notes.extend(f"{name}: {count}" for count in dates)
        _require_rows(result.dataset, f"{result.path}: " + (
            f"no row dated within --since/--until: {'; '.join(dates)}" if result.n_filtered_by_date
            else f"all {result.n_skipped} rows skipped as bad (--skip_bad_rows)" if result.n_skipped
            else "has no rows"))
        splits[name] = _map_labels(result.dataset, args, notes, name, keep_unlabelled=name in unlabelled)
        dropped = [f"{n} {why}" for n, why in ((result.n_filtered_by_date - result.n_undated, "outside"), (
            result.n_undated, f"without a readable {args.date_field} date")) if n]
        kept = f" among the {len(result.dataset)} rows --since/--until kept ({', '.join(dropped)})" if dropped else ""
        _require_rows(splits[name], f"{result.path}: no row has a label in --categories {args.categories}{kept}")
    notes.extend(_shared_rows(read))
    if args.split_ratios:
        with _step(f"Splitting --train by {args.split_ratios}", splits):
            splits = _split(splits, args, notes)
    missing = [name for name in required if splits.get(name) is None]
    if missing:
        raise LlmclsError(f"this command needs --{' and --'.join(missing)}")
    if not splits:
        raise LlmclsError("no data given: pass --train, --validation or --test (see `llmcls data list`)")
    space = _label_space(splits, args)
    with _step(f"Keeping the {len(space)} labels of the label space", splits):
        for name, ds in list(splits.items()):
            splits[name] = _restrict(ds, space, name, notes, keep_unlabelled=name in unlabelled)
            if len(splits[name]) == 0:  # the notes are not printed yet: the case hint goes into the error
                _require_rows(splits[name], f"{called.get(name, '--' + name)}: no row has a label in the label "
                              f"space ({len(space)} labels"
                              + (f" from {args.labels})" if args.labels else " from the training rows)")
                              + _other_case(label_counts(ds), set(space.labels)))
    for names, limit in ((("train",), args.max_train_examples), (("validation", "test"), args.max_eval_examples)):
        for name in names:
            if limit is not None and splits.get(name) is not None:
                splits[name] = splits[name].select(range(min(limit, len(splits[name]))))
    if args.max_train_examples is not None and splits.get("train") is not None:
        seen = label_counts(splits["train"])
        unseen = [label for label in space.labels if label not in seen]
        if unseen:  # the space was counted before the cut: these labels cannot be learnt from the rows kept
            shown = ", ".join(unseen[:5]) + (", ..." if len(unseen) > 5 else "")
            notes.append(f"train: {len(unseen)} labels of the space have no row among the first "
                         f"{len(splits['train'])} training rows ({shown}); --max_train_examples keeps the file's "
                         "first rows, not a sample")
    notes = [_called(note, called) for note in notes]
    for note in notes:  # skipped rows, dropped rows, the split: the user sees them, config.yaml keeps them
        console.print(f"note: {note}", soft_wrap=True, markup=False)  # paths stay copyable; labels may hold [...]
    return Corpus(space, splits, notes)


def _called(note: str, called: dict[str, str]) -> str:
    """A note that begins with a split's name (`train: ...`), with the split named as `called` says."""
    head, sep, rest = note.partition(": ")
    return f"{called[head]}{sep}{rest}" if sep and head in called else note


def _date_counts(result, date_field: str) -> list[str]:
    """What --since/--until dropped, rows dated outside the window apart from rows without a date to compare (missing,
    or not YYYY-MM-DD: `2008/11/26` is no date before 2000)."""
    counts = []
    outside = result.n_filtered_by_date - result.n_undated
    if outside:
        counts.append(f"{outside} rows dated outside --since/--until")
    if result.n_undated:
        counts.append(f"{result.n_undated} rows without a readable {date_field} date (e.g. {result.undated_example})")
    return counts


def _step(message: str, splits: dict, shown_from: int = 100_000):
    """A spinner with the step's time for the steps after reading, once the data is large enough for them to take
    a while (the readers show their own progress; these are silent otherwise)."""
    import contextlib

    rows = sum(len(ds) for ds in splits.values() if ds is not None)
    return status(f"{message} ({rows:,} rows)") if rows >= shown_from else contextlib.nullcontext()


def text_field_names(ds, text_fields: str) -> list[str]:
    """The fields of `--text_fields` (joined into a model's input text), checked against the split's columns."""
    import pyarrow as pa
    import pyarrow.compute as pc

    names = list(dict.fromkeys(name.strip() for name in text_fields.split(",") if name.strip()))  # once each
    unknown = [name for name in names if name not in ds.column_names]
    if not names or unknown:
        raise LlmclsError(f"--text_fields: unknown field(s) {', '.join(unknown) or '(none given)'} "
                          f"(fields: {', '.join(c for c in ds.column_names if c not in ('id', 'labels'))})")
    rows = arrow_rows(ds, names)
    not_text = next((name for name in names if not (pa.types.is_string(rows.column(name).type)
                                                    or pa.types.is_large_string(rows.column(name).type))), None)
    if not_text is not None:
        raise LlmclsError(f"--text_fields: field {not_text!r} holds {rows.column(not_text).type}, not text")
    if len(ds) and not any((pc.max(pc.utf8_length(rows.column(name))).as_py() or 0) > 0 for name in names):
        raise LlmclsError(f"--text_fields {text_fields}: every row's text is empty (AAPD has no titles: use abstract)")
    return names


def _require_rows(ds, why: str) -> None:
    """A split left empty by a filter is an error that says which filter emptied it (not a failure further on)."""
    if len(ds) == 0:
        raise LlmclsError(why)


def _shared_rows(read: dict) -> list[str]:
    """Notes for a validation or test file that shares examples with train (or test with validation): its scores
    are then no held-out estimates. Compared by ids; files without an id field (row numbers) only when they are the
    same file. Rows whose id was missing are numbered by their row: those numbers are left out (the first rows of two
    files without ids would share "0"). And by their abstracts (`text_keys`: a hash a row), which also finds a
    training paper repeated without its id or under another."""
    import pyarrow.compute as pc

    def given_ids(result):
        ids = arrow_rows(result.dataset, ["id"]).column("id")
        return ids if result.numbered is None else ids.filter(pc.invert(result.numbered))

    notes: list[str] = []
    keys: dict[str, np.ndarray] = {}
    for name, other in (("validation", "train"), ("test", "train"), ("test", "validation")):
        if name not in read or other not in read:
            continue
        mine, theirs = read[name], read[other]
        shared_rows = np.zeros(len(mine.dataset), dtype=bool)  # rows of `mine` whose given id `theirs` has
        if mine.id_field is not None and theirs.id_field is not None:
            found = pc.is_in(arrow_rows(mine.dataset, ["id"]).column("id"), value_set=given_ids(theirs))
            if mine.numbered is not None:
                found = pc.and_(found, pc.invert(mine.numbered))
            shared_rows = found.to_numpy(zero_copy_only=False)
            if shared_rows.any():
                notes.append(f"{name} shares {int(shared_rows.sum())} of its {len(given_ids(mine))} ids with {other}: "
                             "its scores are not held-out estimates")
        elif Path(mine.path).resolve() == Path(theirs.path).resolve():
            notes.append(f"{name} is the same file as {other}: its scores are not held-out estimates")
        if Path(mine.path).resolve() != Path(theirs.path).resolve():  # the same file: said above
            notes.extend(_shared_texts(name, mine, other, theirs, keys, shared_rows))
    return notes


def _shared_texts(name: str, mine, other: str, theirs, keys: dict, shared_rows: np.ndarray) -> list[str]:
    """A note for rows of `mine` whose abstract (`text_keys`) a row of `theirs` has: another copy of a training
    paper (without its id, or under another id or title) is no held-out example either. `keys` caches the hashes
    by split. Rows in `shared_rows` (their id is one of `theirs`: the note on shared ids counts them) are left out:
    a copy of the training file under another path had both notes for the same rows."""
    for split, result in ((name, mine), (other, theirs)):
        if split not in keys:
            keys[split] = text_keys(result.dataset)
    own, known = keys[name], keys[other]
    repeats = np.flatnonzero(np.isin(own, known) & ~shared_rows)
    if not len(repeats):
        return []
    first = int(repeats[0])
    match = int(np.flatnonzero(known == own[first])[0])
    besides = f" besides the {int(shared_rows.sum())} with a shared id" if shared_rows.any() else ""
    return [f"{name} repeats the abstract of a {other} row in {len(repeats)} of its {len(own)} rows{besides} (e.g. "
            f"{name} {_row_name(mine, first)} = {other} {_row_name(theirs, match)}; {TEXT_KEY}): its scores are not "
            "held-out estimates"]


def _row_name(result, i: int) -> str:
    """`id X`, or `row numbered N (no id; line L)` for a row numbered for want of an id: N is its 0-based row of
    the file (its id in predictions.jsonl), L the 1-based line it is on, as other messages name lines."""
    row_id = result.dataset.select_columns(["id"])[i]["id"]
    numbered = result.id_field is None or (result.numbered is not None and result.numbered[i].as_py())
    if not numbered:
        return f"id {row_id}"
    where = numbered_row_position(result, int(row_id))
    return f"row numbered {row_id} (no id; {where})" if where else f"row numbered {row_id} (no id)"


def _map_labels(ds, args: DataArguments, notes: list[str], name: str, keep_unlabelled: bool = False):
    """Apply --categories (any case: AAPD's own files write cs.it) and --label_level to the label lists (rows left
    without a label go, unless they are rows to predict)."""
    if not args.categories and args.label_level == "category":
        return ds
    wanted = {c.strip().lower() for c in (args.categories or "").split(",") if c.strip()}

    def keep(label: str) -> bool:
        return not wanted or label.lower() in wanted or archive_of(label).lower() in wanted

    if wanted:  # an entry that matches nothing (a typo, a code the file does not use): said, the run goes on
        present = label_counts(ds)
        unmatched = sorted(wanted - {lab.lower() for lab in present} - {archive_of(lab).lower() for lab in present})
        if unmatched:
            notes.append(f"{name}: --categories {', '.join(unmatched)} matched no label of the file")

    def convert(labels: list[str]) -> list[str]:
        kept = [lab for lab in labels if keep(lab)]
        if args.label_level == "archive":
            kept = list(dict.fromkeys(archive_of(lab) for lab in kept))
        return kept

    # the new labels as a column in memory beside the file's other columns (a map would write every column,
    # abstracts included, to a new cache file: a copy of the whole file for a change to its labels)
    feature = ds.features["labels"]
    labels = [convert(labels) for labels in arrow_rows(ds, ["labels"]).column("labels").to_pylist()]
    ds = ds.remove_columns("labels").add_column("labels", labels, feature=feature)
    if keep_unlabelled:
        return ds
    kept = ds.filter(lambda batch: [bool(labels) for labels in batch], input_columns="labels", batched=True,
                     desc="Keeping --categories")
    if len(kept) < len(ds):  # said as --top_labels says its dropped rows
        notes.append(f"{name}: {len(ds) - len(kept)} rows with no label in --categories {args.categories} dropped")
    return kept


def _split(splits: dict, args: DataArguments, notes: list[str]) -> dict:
    if set(splits) != {"train"}:
        raise LlmclsError("--split_ratios splits the --train file: do not also pass --validation or --test")
    try:
        ratios = parse_ratios(args.split_ratios)
    except ValueError as err:
        raise LlmclsError(str(err)) from None
    train = splits["train"]
    label_lists = arrow_rows(train, ["labels"]).column("labels").to_pylist()  # one conversion, not row by row
    index = {label: i for i, label in enumerate(sorted({lab for labels in label_lists for lab in labels}))}
    encoded = [[index[lab] for lab in labels] for labels in label_lists]
    groups = same_text_groups(text_keys(train))
    repeats = groups != np.arange(len(groups))  # rows whose abstract an earlier row has
    parts = iterative_stratification(encoded, len(index), ratios, seed=args.split_seed,
                                     groups=groups if repeats.any() else None)
    names = SPLITS if len(ratios) == 3 else ("train", "validation")
    n_texts = len(np.unique(groups[repeats]))  # abstracts that more than one row has, and those rows
    n_grouped = int(repeats.sum()) + n_texts
    empty = [name for name, part in zip(names, parts, strict=True) if not len(part)]
    if empty:  # said here: the error further on ("--validation: no row has a label ...") named an option not given
        kept = f"; {n_grouped} that share an abstract are kept together" if n_grouped else ""
        raise LlmclsError(f"--split_ratios {args.split_ratios} leaves {' and '.join(empty)} without a row "
                          f"({len(train)} training rows{kept}): give more rows or other ratios")
    notes.append("split --train by " + ", ".join(f"{n}={len(p)}" for n, p in zip(names, parts, strict=True))
                 + f" (iterative stratification, seed {args.split_seed})")
    if n_grouped:
        notes.append(f"--split_ratios kept {n_grouped} rows that share an abstract with another "
                     f"row ({n_texts} abstracts, {TEXT_KEY}) together, each group in the split most of its rows were "
                     "given")
    return {name: train.select(part) for name, part in zip(names, parts, strict=True)}


def text_keys(ds, batch_size: int = 100_000) -> np.ndarray:
    """A 64-bit hash per row of what identifies a repeated paper (`TEXT_KEY`): its abstract as the readers normalised
    it (whitespace), lower-cased. The abstract alone: rows with the same title and abstract share it, and so do
    distinct papers with the same abstract (the snapshot has such pairs) and a paper with and without its title.
    Hashed batch by batch from Arrow (no copy of the texts, one hash call a row: seconds for millions of rows)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import xxhash

    keys = np.empty(len(ds), dtype=np.uint64)
    start = 0
    for batch in ds.select_columns(["abstract"]).with_format("arrow").iter(batch_size=batch_size):
        texts = pc.cast(pc.utf8_lower(batch.column("abstract")), pa.binary()).to_pylist()
        keys[start:start + len(texts)] = np.fromiter(map(xxhash.xxh3_64_intdigest, texts), np.uint64, len(texts))
        start += len(texts)
    return keys


def same_text_groups(keys: np.ndarray) -> np.ndarray:
    """For each row the index of the first row with its key (itself for a text seen once)."""
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return first[inverse.reshape(-1)]


def _label_space(splits: dict, args: DataArguments) -> LabelSpace:
    if args.labels:
        try:
            return LabelSpace.load(args.labels)
        except ValueError as err:  # its message names the file
            raise LlmclsError(str(err)) from None
    source = [splits["train"]] if splits.get("train") is not None else list(splits.values())
    counts: dict[str, int] = {}
    for ds in source:
        for label, count in label_counts(ds).items():
            counts[label] = counts.get(label, 0) + count
    if args.min_label_count < 1:
        raise LlmclsError(f"--min_label_count must be at least 1, got {args.min_label_count}")
    if args.top_labels is not None and args.top_labels < 1:
        raise LlmclsError(f"--top_labels must be at least 1, got {args.top_labels}")
    space = LabelSpace.from_counts(counts, min_count=args.min_label_count, top_k=args.top_labels)
    if len(space) == 0:
        raise LlmclsError("the label space is empty after --min_label_count/--top_labels/--categories")
    return space


def label_counts(ds) -> dict[str, int]:
    """Examples per label, counted in Arrow (labels are de-duplicated within a row by the readers)."""
    import pyarrow.compute as pc

    counts = pc.value_counts(pc.list_flatten(arrow_rows(ds, ["labels"]).column("labels")))
    return {item["values"].as_py(): item["counts"].as_py() for item in counts}


def _other_case(outside: Iterable[str], known: set[str]) -> str:
    """A hint when dropped labels are the space's labels in another case (AAPD's own files write cs.it, a labels
    file cs.IT): labels are compared as spelt, so nearly every row can go."""
    by_case = {label.casefold(): label for label in known}
    pairs = [(label, by_case[label.casefold()]) for label in outside if label.casefold() in by_case]
    if not pairs:
        return ""
    return (f"; {len(pairs)} dropped label{'s' * (len(pairs) != 1)} {'is' if len(pairs) == 1 else 'are'} the label "
            f"space's in another case (e.g. the data's {pairs[0][0]}, the space's {pairs[0][1]}): labels are compared "
            "as spelt, so spell them alike in the data and the labels file (--categories alone ignores case)")


def _restrict(ds, space: LabelSpace, name: str, notes: list[str], keep_unlabelled: bool = False):
    """Drop labels outside the space, then rows left with none (counted in the notes; rows to predict stay)."""
    known = set(space.labels)
    counts = label_counts(ds)
    if set(counts) <= known:  # nothing to drop: skip a pass over a possibly large file
        return ds
    outside = {label: n for label, n in counts.items() if label not in known}
    shown = ", ".join(f"{label} ({n})" for label, n in sorted(outside.items(), key=lambda kv: -kv[1])[:5])
    # gold labels the space lacks are not scored: the metrics of this split are over the space's labels only
    total, kinds = sum(outside.values()), len(outside)
    notes.append(f"{name}: {total} gold label{'s' * (total != 1)} of {kinds} label{'s' * (kinds != 1)} outside the "
                 f"label space {'were' if total != 1 else 'was'} dropped ({shown}{', ...' if kinds > 5 else ''})"
                 + _other_case(outside, known))
    ds = ds.map(lambda batch: {"labels": [[lab for lab in labels if lab in known] for labels in batch]},
                input_columns="labels", batched=True, desc=f"Label space ({name})")
    if keep_unlabelled:
        return ds
    before = len(ds)
    ds = ds.filter(lambda batch: [bool(labels) for labels in batch], input_columns="labels", batched=True)
    if len(ds) < before:
        notes.append(f"{name}: dropped {before - len(ds)} rows with no label in the label space")
    return ds
