"""Multi-label stratified splitting (iterative stratification, Sechidis et al., ECML PKDD 2011), with a guarantee.

The algorithm hands out the examples of the rarest remaining label first, each to the subset that still wants
most of that label (ties: the subset that wants most examples overall, then a seeded coin). It keeps label
proportions close to the requested ratios, but cannot by itself promise that a rare label lands in train; a
repair pass then moves one example into train for every label that has at least `min_train_count` examples in
all and none in train. With `groups` (rows sharing a text, say) a group is never split: its examples are handed out
as above, then the whole group goes to the subset that most of them were given (ties: the subset of its earliest
member among those tied, its first example's when that one is tied), so a large group lands where the ratios put most
of it; the repair moves whole groups. Deterministic for a seed. Pure numpy; no torch, no
datasets.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def parse_ratios(text: str) -> list[float]:
    """`"0.8,0.1,0.1"` -> [0.8, 0.1, 0.1]; two or three positive numbers summing to 1."""
    try:
        ratios = [float(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"--split_ratios: expected numbers like 0.8,0.1,0.1, got {text!r}") from None
    if len(ratios) not in (2, 3) or any(r <= 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
        raise ValueError(f"--split_ratios: need 2 or 3 positive ratios summing to 1, got {text!r}")
    return ratios


def iterative_stratification(label_lists: Sequence[Sequence[int]], n_labels: int, ratios: Sequence[float],
                             seed: int = 42, min_train_count: int = 3,
                             groups: np.ndarray | None = None) -> list[np.ndarray]:
    """Split example indices into len(ratios) subsets (the first is train); returns sorted index arrays.

    `groups`: one index per example, that of its group's first example (`groups[i] <= i`, `groups[groups] ==
    groups`): every member then goes to the subset most of its members were given (the ratios hold approximately:
    a group of g examples moves about g * (1 - ratio) of them away from the ratios)."""
    n = len(label_lists)
    if groups is not None:
        groups = np.asarray(groups, dtype=np.int64)
        if groups.shape != (n,) or (groups > np.arange(n)).any() or (groups[groups] != groups).any():
            raise ValueError("groups: expected, for each example, the index of its group's first example")
    rng = np.random.default_rng(seed)
    ratios_arr = np.asarray(ratios, dtype=float)
    counts = np.zeros(n_labels, dtype=np.int64)
    by_label: list[list[int]] = [[] for _ in range(n_labels)]
    for i, labels in enumerate(label_lists):
        for label in labels:
            by_label[label].append(i)
            counts[label] += 1
    wanted_examples = ratios_arr * n
    wanted_labels = np.outer(ratios_arr, counts).astype(float)
    assignment = np.full(n, -1, dtype=np.int64)
    remaining = counts.astype(float)
    remaining[remaining == 0] = np.inf
    while np.isfinite(remaining).any():
        label = int(np.argmin(remaining))
        candidates = np.asarray(by_label[label], dtype=np.int64)
        candidates = candidates[assignment[candidates] < 0]
        for i in rng.permutation(candidates):
            subset = _choose(wanted_labels[:, label], wanted_examples, rng)
            assignment[i] = subset
            wanted_examples[subset] -= 1
            row = list(label_lists[i])
            wanted_labels[subset, row] -= 1
            remaining[row] -= 1
        remaining[label] = np.inf
        remaining[remaining <= 0] = np.inf
    for i in rng.permutation(np.flatnonzero(assignment < 0)):  # examples without labels
        subset = int(np.argmax(wanted_examples))
        assignment[i] = subset
        wanted_examples[subset] -= 1
    if groups is not None:
        assignment = _by_majority(assignment, groups, len(ratios))
    _repair(assignment, by_label, counts, min_train_count, groups)
    return [np.flatnonzero(assignment == s) for s in range(len(ratios))]


def _by_majority(assignment: np.ndarray, groups: np.ndarray, n_subsets: int) -> np.ndarray:
    """Each example's subset as that of its group: the subset most of the group's examples were given; among tied
    subsets, the one its earliest member was given (a group's first example is its earliest: a group of two goes
    where its first example went)."""
    n = len(assignment)
    votes = np.zeros((n, n_subsets), dtype=np.int64)  # rows of groups' first examples only are used
    np.add.at(votes, (groups, assignment), 1)
    earliest = np.full((n, n_subsets), n, dtype=np.int64)
    np.minimum.at(earliest, (groups, assignment), np.arange(n))
    best = votes == votes.max(axis=1, keepdims=True)
    chosen = np.where(best, earliest, n).argmin(axis=1)
    return chosen[groups]


def _choose(wanted_for_label: np.ndarray, wanted_examples: np.ndarray, rng: np.random.Generator) -> int:
    best = np.flatnonzero(wanted_for_label == wanted_for_label.max())
    if len(best) > 1:
        overall = wanted_examples[best]
        best = best[overall == overall.max()]
    return int(best[0] if len(best) == 1 else rng.choice(best))


def _repair(assignment: np.ndarray, by_label: list[list[int]], counts: np.ndarray, min_train_count: int,
            groups: np.ndarray | None = None) -> None:
    """Move one example (with its group) into train (subset 0) for each label with enough examples but none in
    train."""
    for label in np.argsort(counts, kind="stable"):
        members = np.asarray(by_label[label], dtype=np.int64)
        if counts[label] < min_train_count or (assignment[members] == 0).any():
            continue
        if groups is None:
            assignment[members[0]] = 0  # the lowest index: deterministic
        else:
            assignment[groups == groups[members[0]]] = 0
