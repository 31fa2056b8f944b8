"""Tests for llmcls.fewshot: random, label-balanced and TF-IDF kNN example selection."""

from __future__ import annotations

import pytest

from llmcls import fewshot
from llmcls.errors import LlmclsError
from llmcls.fewshot import select_examples


@pytest.fixture(scope="module")
def aapd(aapd_rows):
    return [row["abstract"] for row in aapd_rows], [row["labels"] for row in aapd_rows]


def covered(indices, labels) -> int:
    return len({label for i in indices for label in labels[i]})


# ---------------------------------------------------------------------------------------------------------------------
# random


def test_random_is_seeded_and_differs_per_query(aapd):
    texts, labels = aapd
    first = select_examples(texts, labels, texts[:6], k=4, selection="random", seed=1)
    assert first == select_examples(texts, labels, texts[:6], k=4, selection="random", seed=1)
    assert first != select_examples(texts, labels, texts[:6], k=4, selection="random", seed=2)
    assert len({tuple(row) for row in first}) == 6  # every query sees its own draw
    for row in first:
        assert len(row) == len(set(row)) == 4 and all(0 <= i < len(texts) for i in row)


def test_random_draw_of_a_query_does_not_depend_on_the_others(aapd):
    # A resumed run passes only the pending queries: each must get the examples it got in the whole run.
    texts, labels = aapd
    whole = select_examples(texts, labels, texts[:10], k=3, selection="random")
    assert select_examples(texts, labels, [texts[7], texts[2]], k=3, selection="random") == [whole[7], whole[2]]


# ---------------------------------------------------------------------------------------------------------------------
# balanced


def test_balanced_is_one_seeded_set_for_every_query(aapd):
    texts, labels = aapd
    chosen = select_examples(texts, labels, texts[:5], k=8, selection="balanced", seed=3)
    assert all(row == chosen[0] for row in chosen) and len(set(chosen[0])) == 8
    assert chosen == select_examples(texts, labels, texts[:5], k=8, selection="balanced", seed=3)


def test_balanced_covers_more_labels_than_random(aapd):
    texts, labels = aapd
    balanced = covered(select_examples(texts, labels, texts[:1], k=8, selection="balanced")[0], labels)
    randoms = [covered(select_examples(texts, labels, texts[:1], k=8, selection="random", seed=s)[0], labels)
               for s in range(10)]  # fmt: skip
    assert balanced > max(randoms)


def test_balanced_greedy_cover_then_second_round():
    labels = [["a"], ["a", "b"], ["c"], ["a", "b", "c", "d"], ["b"], ["e"]]
    texts = [f"text {i}" for i in range(len(labels))]
    chosen = select_examples(texts, labels, ["q"], k=4, selection="balanced")[0]
    assert chosen[:2] == [3, 5]  # 4 new labels, then the only example with "e"
    # All labels covered: covering starts again, so the next pick adds most labels anew (a and b).
    assert chosen[2] == 1


def test_balanced_ties_follow_the_seed():
    labels = [["a"], ["b"], ["c"], ["d"], ["e"], ["f"]]
    texts = [f"text {i}" for i in range(len(labels))]
    picks = {tuple(select_examples(texts, labels, ["q"], k=2, selection="balanced", seed=s)[0]) for s in range(8)}
    assert len(picks) > 1


# ---------------------------------------------------------------------------------------------------------------------
# knn

TRAIN = [
    "graph neural networks for molecule property prediction",
    "polar codes achieve the capacity of binary memoryless channels",
    "a convolutional network for image segmentation of tumours",
    "channel capacity of polar codes with list decoding over fading channels",
    "reinforcement learning for robot arm grasping",
]
TRAIN_LABELS = [["cs.LG"], ["cs.IT"], ["cs.CV"], ["cs.IT", "math.IT"], ["cs.RO"]]


def test_knn_puts_the_nearest_example_last():
    query = ["list decoding of polar codes over fading channels"]
    assert select_examples(TRAIN, TRAIN_LABELS, query, k=1) == [[3]]
    assert select_examples(TRAIN, TRAIN_LABELS, query, k=2) == [[1, 3]]  # most similar closest to the query


def test_knn_finds_a_perturbed_training_abstract(aapd):
    texts, labels = aapd
    queries = [" ".join(texts[i].split()[5:]) for i in (7, 123, 399)]
    nearest = select_examples(texts, labels, queries, k=3)
    assert [row[-1] for row in nearest] == [7, 123, 399]


def test_knn_never_shows_a_query_its_own_text():
    query = ["Polar codes achieve the  capacity of binary memoryless channels"]  # case and spacing differ
    picked = select_examples(TRAIN, TRAIN_LABELS, query, k=2)[0]
    assert 1 not in picked and picked[-1] == 3
    assert len(select_examples(TRAIN, TRAIN_LABELS, query, k=5)[0]) == 4  # only four other texts exist


def test_knn_in_chunks_equals_knn_at_once(aapd, monkeypatch):
    texts, labels = aapd
    queries = [" ".join(text.split()[::2]) for text in texts[:40]]
    whole = select_examples(texts, labels, queries, k=4)
    monkeypatch.setattr(fewshot, "_CHUNK_CELLS", 3 * len(texts))  # three queries at a time
    assert select_examples(texts, labels, queries, k=4) == whole


def test_knn_ties_follow_the_seed():
    # No word in common with any training text: every similarity is zero, so the seeded order decides.
    query = ["zzz qqq"]
    picks = {tuple(select_examples(TRAIN, TRAIN_LABELS, query, k=2, seed=s)[0]) for s in range(8)}
    assert len(picks) > 1
    assert select_examples(TRAIN, TRAIN_LABELS, query, k=2, seed=5) == select_examples(
        TRAIN, TRAIN_LABELS, query, k=2, seed=5
    )


def test_knn_without_any_words_is_an_error():
    with pytest.raises(LlmclsError, match="TF-IDF"):
        select_examples(["", "!"], [[], []], ["q"], k=1)


# ---------------------------------------------------------------------------------------------------------------------
# arguments


@pytest.mark.parametrize("selection", fewshot.SELECTIONS)
def test_k_bounds(selection):
    assert select_examples(TRAIN, TRAIN_LABELS, ["a", "b"], k=0, selection=selection) == [[], []]
    assert len(select_examples(TRAIN, TRAIN_LABELS, ["robot"], k=5, selection=selection)[0]) == 5
    with pytest.raises(LlmclsError, match="only 5"):
        select_examples(TRAIN, TRAIN_LABELS, ["a"], k=6, selection=selection)
    with pytest.raises(LlmclsError, match=">= 0"):
        select_examples(TRAIN, TRAIN_LABELS, ["a"], k=-1, selection=selection)


def test_unknown_selection_and_mismatched_lengths():
    with pytest.raises(LlmclsError, match="random, balanced, knn"):
        select_examples(TRAIN, TRAIN_LABELS, ["a"], k=1, selection="nearest")
    with pytest.raises(LlmclsError, match="label lists"):
        select_examples(TRAIN, TRAIN_LABELS[:2], ["a"], k=1)


@pytest.mark.parametrize("selection", ["random", "balanced", "knn"])
def test_no_selection_shows_a_query_its_own_text(aapd, selection):
    texts, labels = aapd
    balanced = select_examples(texts, labels, ["a query from elsewhere"], k=8, selection="balanced", seed=1)[0]
    queries = [texts[i] for i in balanced] + texts  # balanced's own picks as queries, then every training text
    owners = list(balanced) + list(range(len(texts)))
    picks = select_examples(texts, labels, queries, k=8, selection=selection, seed=1)
    normal = [" ".join(t.split()).casefold() for t in texts]
    same = {i: {j for j, t in enumerate(normal) if t == normal[i]} for i in set(owners)}
    assert all(not (set(pick) & same[owner]) and len(pick) == 8 for owner, pick in zip(owners, picks, strict=True))
