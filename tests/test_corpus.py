"""Splits, label filters and the label space of a run (`corpus.load_corpus`)."""

from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np
import pytest
from conftest import write_jsonl

from llmcls.config import DataArguments
from llmcls.corpus import load_corpus
from llmcls.errors import LlmclsError
from llmcls.splits import iterative_stratification, parse_ratios


def test_parse_ratios():
    assert parse_ratios("0.8,0.1,0.1") == [0.8, 0.1, 0.1]
    assert parse_ratios("0.9,0.1") == [0.9, 0.1]
    for bad in ("0.8,0.3", "1", "a,b", "0.5,0.5,0,0"):
        with pytest.raises(ValueError):
            parse_ratios(bad)


def _random_label_lists(n: int, n_labels: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_labels + 1) ** 1.3  # long tail, like arXiv categories
    weights /= weights.sum()
    return [sorted(set(rng.choice(n_labels, size=rng.integers(1, 4), p=weights).tolist())) for _ in range(n)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stratification_keeps_every_label_with_three_examples_in_train(seed):
    lists = _random_label_lists(600, 80, seed)
    parts = iterative_stratification(lists, 80, [0.8, 0.1, 0.1], seed=seed)
    assert sorted(np.concatenate(parts).tolist()) == list(range(600))  # a partition
    counts = Counter(label for labels in lists for label in labels)
    in_train = {label for i in parts[0] for label in lists[i]}
    assert all(label in in_train for label, c in counts.items() if c >= 3)
    assert abs(len(parts[0]) - 480) <= 15


def test_stratification_is_deterministic_and_balanced():
    lists = _random_label_lists(1000, 30, 7)
    a = iterative_stratification(lists, 30, [0.5, 0.5], seed=3)
    b = iterative_stratification(lists, 30, [0.5, 0.5], seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    counts = [Counter(label for i in part for label in lists[i]) for part in a]
    total = Counter(label for labels in lists for label in labels)
    for label, c in total.items():  # each half holds about half of every frequent label
        if c >= 40:
            assert abs(counts[0][label] - c / 2) <= 0.1 * c + 1


def test_repair_moves_a_rare_label_into_train():
    # label 1 occurs 3 times; ratios that would put few examples in train
    lists = [[0]] * 30 + [[1]] * 3
    parts = iterative_stratification(lists, 2, [0.1, 0.45, 0.45], seed=0)
    assert any(1 in lists[i] for i in parts[0])


def test_groups_are_never_split_and_the_repair_moves_whole_groups():
    lists = _random_label_lists(600, 40, 3)
    rng = np.random.default_rng(0)
    groups = np.arange(600)
    for i in np.sort(rng.choice(np.arange(1, 600), size=150, replace=False)):  # a quarter repeat an earlier row
        groups[i] = groups[rng.integers(0, i)]
    parts = iterative_stratification(lists, 40, [0.8, 0.1, 0.1], seed=1, groups=groups)
    subset = np.empty(600, dtype=int)
    for s, part in enumerate(parts):
        subset[part] = s
    assert (subset == subset[groups]).all()  # every row in its group's split
    assert abs(len(parts[0]) - 480) <= 40
    again = iterative_stratification(lists, 40, [0.8, 0.1, 0.1], seed=1, groups=groups)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    # the rare label's 3 examples are one group (one text): the repair moves the whole group into train
    rare = [[0]] * 30 + [[1]] * 3
    parts = iterative_stratification(rare, 2, [0.1, 0.45, 0.45], seed=0, groups=list(range(31)) + [30, 30])
    assert {30, 31, 32} <= set(parts[0].tolist())


@pytest.mark.parametrize("seed", range(10))
def test_a_large_group_goes_where_most_of_it_was_given(seed):
    """Each group went where its first row was given: a quarter of the rows with one abstract (arXiv's "This paper
    has been withdrawn" rows) then landed in validation or test for some seeds (594/75/331 for seed 2)."""
    lists = _random_label_lists(1000, 40, 11)
    members = np.sort(np.random.default_rng(0).choice(1000, size=250, replace=False))
    groups = np.arange(1000)
    groups[members] = members[0]
    parts = iterative_stratification(lists, 40, [0.8, 0.1, 0.1], seed=seed, groups=groups)
    assert set(members.tolist()) <= set(parts[0].tolist())  # most of the 250 were given to train
    # the group moved whole shifts the parts by about 250 * (1 - 0.8) = 50 rows from the ratios (train gains them,
    # validation and test lose about 25 each); 10 more for the stratification's own slack
    for part, ratio in zip(parts, [0.8, 0.1, 0.1], strict=True):
        assert abs(len(part) - ratio * 1000) <= 60


def _text(row: dict) -> str:
    return " ".join(row["abstract"].split()).lower()


def test_split_ratios_keep_rows_with_the_same_abstract_in_one_split(aapd_rows, tmp_path):
    """Rows repeating another's abstract (a copy without its id, upper-cased or re-wrapped; another paper with the
    same abstract under another title) went to train and to validation/test alike: inflated scores, silently."""
    rows = [dict(r, title=f"title {i}") for i, r in enumerate(aapd_rows[:300])]
    copies = [{"title": r["title"], "abstract": "  " + r["abstract"].upper().replace(" ", " \n  "),
               "labels": r["labels"]} for r in rows[:30]]  # no id: numbered by its row
    copies += [dict(r, id=f"other-{i}", title="another title") for i, r in enumerate(rows[30:40])]
    path = write_jsonl(tmp_path / "all.jsonl", rows + copies)
    args = DataArguments(train=str(path), split_ratios="0.8,0.1,0.1", split_seed=42)
    corpus = load_corpus(args)
    texts = {name: {_text(r) for r in corpus.get(name)} for name in ("train", "validation", "test")}
    assert not texts["train"] & texts["validation"] and not texts["train"] & texts["test"]
    assert not texts["validation"] & texts["test"]
    assert ("--split_ratios kept 80 rows that share an abstract with another row (40 abstracts, compared after "
            "whitespace normalisation and lower-casing) together, each group in the split most of its rows were given"
            in corpus.notes)
    sizes = corpus.sizes()
    assert sum(sizes.values()) == 340 and abs(sizes["train"] - 272) <= 12  # the ratios still hold, roughly
    counts = Counter(lab for r in rows + copies for lab in r["labels"])
    assert {lab for lab, c in counts.items() if c >= 3} <= {lab for r in corpus.get("train") for lab in r["labels"]}
    assert load_corpus(args).get("test")["id"] == corpus.get("test")["id"]  # deterministic for a seed
    unique = write_jsonl(tmp_path / "unique.jsonl", rows)
    assert not any("share an abstract" in note for note in load_corpus(
        DataArguments(train=str(unique), split_ratios="0.8,0.1,0.1")).notes)


def test_split_ratios_through_load_corpus(aapd_rows, tmp_path):
    path = write_jsonl(tmp_path / "all.jsonl", aapd_rows)
    corpus = load_corpus(DataArguments(train=str(path), split_ratios="0.8,0.1,0.1", split_seed=5))
    sizes = corpus.sizes()
    assert sum(sizes.values()) == len(aapd_rows)
    assert set(sizes) == {"train", "validation", "test"}
    train_labels = {lab for labels in corpus.get("train")["labels"] for lab in labels}
    counts = Counter(lab for r in aapd_rows for lab in r["labels"])
    assert {lab for lab, c in counts.items() if c >= 3} <= train_labels
    again = load_corpus(DataArguments(train=str(path), split_ratios="0.8,0.1,0.1", split_seed=5))
    assert again.get("test")["id"] == corpus.get("test")["id"]
    with pytest.raises(LlmclsError, match="do not also pass"):
        load_corpus(DataArguments(train=str(path), test=str(path), split_ratios="0.8,0.1,0.1"))


def test_label_space_comes_from_train_and_restricts_other_splits(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [
        {"id": "1", "abstract": "a", "labels": ["cs.LG", "stat.ML"]},
        {"id": "2", "abstract": "b", "labels": ["cs.LG"]},
    ])
    test = write_jsonl(tmp_path / "test.jsonl", [
        {"id": "3", "abstract": "c", "labels": ["cs.LG", "cs.CV"]},
        {"id": "4", "abstract": "d", "labels": ["cs.CV"]},
    ])
    corpus = load_corpus(DataArguments(train=str(train), test=str(test)))
    assert corpus.label_space.labels == ("cs.LG", "stat.ML")
    assert corpus.get("test")["labels"] == [["cs.LG"]]
    assert any("dropped 1 rows" in note for note in corpus.notes)
    # the row that keeps cs.LG lost a gold label too: said, since the test metrics no longer see it
    assert "test: 2 gold labels of 1 label outside the label space were dropped (cs.CV (2))" in corpus.notes


def test_label_filters(snapshot_rows, tmp_path):
    path = write_jsonl(tmp_path / "snap.jsonl", snapshot_rows)
    archive = load_corpus(DataArguments(train=str(path), label_level="archive"))
    assert "cond-mat" in archive.label_space and "cond-mat.str-el" not in archive.label_space
    assert "astro-ph" in archive.label_space and "math" in archive.label_space
    top = load_corpus(DataArguments(train=str(path), top_labels=5))
    assert len(top.label_space) == 5
    assert all(set(labels) <= set(top.label_space.labels) for labels in top.get("train")["labels"])
    frequent = load_corpus(DataArguments(train=str(path), min_label_count=10))
    counts = Counter(lab for r in snapshot_rows for lab in r["categories"].split())
    assert set(frequent.label_space.labels) == {lab for lab, c in counts.items() if c >= 10}
    math = load_corpus(DataArguments(train=str(path), categories="math,hep-th"))
    assert all(lab == "hep-th" or lab.startswith("math.") for lab in math.label_space.labels)
    expected = sum(any(lab == "hep-th" or lab.startswith("math.") for lab in r["categories"].split())
                   for r in snapshot_rows)
    assert len(math.get("train")) == expected
    # the rows dropped are said, as --top_labels says its own (1,999 -> 83 rows was silent)
    dropped = len(snapshot_rows) - expected
    assert f"train: {dropped} rows with no label in --categories math,hep-th dropped" in math.notes
    folded = load_corpus(DataArguments(train=str(path), categories="MATH,Hep-Th,cs.XX"))  # any case; a typo noted
    assert folded.label_space == math.label_space and len(folded.get("train")) == expected
    assert "train: --categories cs.xx matched no label of the file" in folded.notes


def test_no_row_in_categories_after_a_date_window_names_the_window(snapshot_rows, tmp_path):
    """The date window, not --categories, left no cs row: the error said only "no row has a label in --categories"."""
    old, new = dict(snapshot_rows[0]), dict(snapshot_rows[1])
    old.update(categories="cs.LG", update_date="2019-05-01")
    new.update(categories="math.CO", update_date="2021-05-01")
    path = write_jsonl(tmp_path / "snap.jsonl", [old, new])
    with pytest.raises(LlmclsError) as info:
        load_corpus(DataArguments(train=str(path), categories="cs", since="2020-01-01"))
    assert str(info.value).endswith("no row has a label in --categories cs among the 1 rows --since/--until kept "
                                    "(1 outside)")


def test_labels_file_fixes_the_space(aapd_rows, tmp_path):
    path = write_jsonl(tmp_path / "aapd.jsonl", aapd_rows[:50])
    labels = tmp_path / "labels.txt"
    labels.write_text("cs.IT\nmath.IT\ncs.LG\n")
    corpus = load_corpus(DataArguments(train=str(path), labels=str(labels)))
    assert corpus.label_space.labels == ("cs.IT", "math.IT", "cs.LG")
    (tmp_path / "labels.json").write_text(json.dumps({"labels": ["cs.LG"]}))
    corpus = load_corpus(DataArguments(train=str(path), labels=str(tmp_path / "labels.json")))
    assert corpus.label_space.labels == ("cs.LG",)
    labels.write_text("cs.IT\nmath.IT\ncs.IT\n")
    with pytest.raises(LlmclsError) as info:
        load_corpus(DataArguments(train=str(path), labels=str(labels)))
    assert str(info.value) == f"label file {labels}: duplicate label 'cs.IT' on lines 1 and 3"  # the file named once


def test_max_train_examples_says_which_labels_the_kept_rows_lack(aapd_rows, tmp_path):
    rows = [dict(r) for r in aapd_rows[:30]]
    rows[-1]["labels"] = ["q-bio.NC"]  # only the last row has it: the space counts it, the first 10 rows lack it
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    corpus = load_corpus(DataArguments(train=str(path), max_train_examples=10))
    assert "q-bio.NC" in corpus.label_space
    kept = {label for r in rows[:10] for label in r["labels"]}
    unseen = [label for label in corpus.label_space.labels if label not in kept]  # counted here independently
    assert "q-bio.NC" in unseen
    assert f"train: {len(unseen)} labels of the space have no row among the first 10 training rows" in corpus.notes[-1]


def test_required_split_and_max_train_examples():
    with pytest.raises(LlmclsError, match="needs --train"):
        load_corpus(DataArguments(test="aapd-test"), required=("train",))
    corpus = load_corpus(DataArguments(train="aapd-train", test="aapd-test", max_train_examples=25,
                                       max_eval_examples=7))
    assert len(corpus.get("train")) == 25 and len(corpus.get("test")) == 7


def test_split_label_counts_come_from_the_train_part_only(tmp_path):
    # "rare" has 12 examples in the file; --split_ratios puts some of them outside train, so with
    # --min_label_count 12 it must not be in the space (counted over the whole file it would be)
    rows = [{"id": str(i), "abstract": f"text {i}", "labels": ["common"] + (["rare"] if i < 12 else [])}
            for i in range(60)]
    path = write_jsonl(tmp_path / "all.jsonl", rows)
    everything = load_corpus(DataArguments(train=str(path), split_ratios="0.5,0.5"))
    train_rare = sum("rare" in labels for labels in everything.get("train")["labels"])
    assert 3 <= train_rare < 12
    corpus = load_corpus(DataArguments(train=str(path), split_ratios="0.5,0.5", min_label_count=12))
    assert "rare" not in corpus.label_space
    lower = load_corpus(DataArguments(train=str(path), split_ratios="0.5,0.5", min_label_count=train_rare))
    assert "rare" in lower.label_space


def test_a_split_emptied_by_a_filter_is_a_one_line_error(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"id": "1", "abstract": "a", "labels": ["cs.LG"]}])
    test = write_jsonl(tmp_path / "test.jsonl", [{"id": "2", "abstract": "b", "labels": ["cs.CV"]}])
    with pytest.raises(LlmclsError, match="train.jsonl: no row has a label in --categories cs.DL"):
        load_corpus(DataArguments(train=str(train), categories="cs.DL"))
    with pytest.raises(LlmclsError, match="--test: no row has a label in the label space"):
        load_corpus(DataArguments(train=str(train), test=str(test)))
    # a split before the last one too (only the last was checked: an empty validation reached scikit-learn)
    with pytest.raises(LlmclsError, match="--validation: no row has a label in the label space"):
        load_corpus(DataArguments(train=str(train), validation=str(test), test=str(train)))
    for option in ("max_train_examples", "max_eval_examples"):
        with pytest.raises(LlmclsError, match=f"--{option} must be at least 1"):
            load_corpus(DataArguments(train=str(train), **{option: 0}))


def test_split_ratios_that_leave_a_part_empty_say_so(tmp_path):
    """A part left without a row failed further on as '--validation: no row has a label in the label space' (an
    option the user had not given), before the split's notes were printed."""
    same = write_jsonl(tmp_path / "same.jsonl", [{"id": str(i), "abstract": "One abstract for all.",
                                                  "labels": ["cs.LG", "cs.AI"]} for i in range(10)])
    with pytest.raises(LlmclsError) as err:
        load_corpus(DataArguments(train=str(same), split_ratios="0.8,0.1,0.1"))
    assert str(err.value) == ("--split_ratios 0.8,0.1,0.1 leaves validation and test without a row (10 training rows; "
                              "10 that share an abstract are kept together): give more rows or other ratios")
    rows = [{"id": str(i), "abstract": "Shared." if i < 6 else f"Own {i}.", "labels": ["cs.LG"]} for i in range(8)]
    with pytest.raises(LlmclsError, match=r"leaves (validation|test|validation and test) without a row \(8 training "
                                          r"rows; 6 that share an abstract are kept together\)"):
        load_corpus(DataArguments(train=str(write_jsonl(tmp_path / "six.jsonl", rows)), split_ratios="0.8,0.1,0.1"))
    tiny = write_jsonl(tmp_path / "tiny.jsonl", [{"id": "1", "abstract": "a", "labels": ["cs.LG"]},
                                                 {"id": "2", "abstract": "b", "labels": ["cs.LG"]}])
    with pytest.raises(LlmclsError, match=r"^--split_ratios 0.8,0.1,0.1 leaves validation and test without a row "
                                          r"\(2 training rows\): give more rows or other ratios$"):
        load_corpus(DataArguments(train=str(tiny), split_ratios="0.8,0.1,0.1"))


def test_repeated_ids_are_refused(tmp_path):
    path = write_jsonl(tmp_path / "dup.jsonl", [{"id": "same", "abstract": f"t{i}", "labels": ["cs.LG"]}
                                                for i in range(3)])
    with pytest.raises(LlmclsError, match=r"dup.jsonl: id 'same' is on more than one row"):
        load_corpus(DataArguments(test=str(path)))


def test_long_steps_after_reading_show_progress(capsys):
    """Splitting and label-space passes over a snapshot-sized file take a while: they say so; small files do not."""
    from llmcls.corpus import _step

    with _step("Splitting --train", {"train": list(range(5)), "test": None}, shown_from=3):
        pass
    with _step("Splitting --train", {"train": list(range(2))}, shown_from=3):
        pass
    assert capsys.readouterr().err.count("Splitting --train (5 rows): done in") == 1


def test_labels_dropped_for_their_case_get_a_hint(tmp_path):
    """AAPD's own files write cs.it; a labels file cs.IT: 19 of 20 rows went, said only as labels outside the space."""
    rows = write_jsonl(tmp_path / "rows.jsonl", [{"id": "1", "abstract": "a", "labels": ["cs.it", "math.it"]},
                                                 {"id": "2", "abstract": "b", "labels": ["cs.LG"]}])
    labels = tmp_path / "labels.txt"
    labels.write_text("cs.IT\nmath.IT\n")
    hint = ("2 dropped labels are the label space's in another case (e.g. the data's cs.it, the space's cs.IT): "
            "labels are compared as spelt")
    with pytest.raises(LlmclsError, match=re.escape(f"no row has a label in the label space (2 labels from {labels})"
                                                    f"; {hint}")):
        load_corpus(DataArguments(train=str(rows), labels=str(labels)))
    labels.write_text("cs.IT\nmath.IT\ncs.LG\n")
    corpus = load_corpus(DataArguments(train=str(rows), labels=str(labels)))
    assert any(hint in note for note in corpus.notes), corpus.notes
