"""Few-shot example selection: for each query abstract, which training examples its prompt shows.

Three ways (``--selection``), all deterministic for a seed:

- ``random``: k examples drawn per query from a generator seeded by (seed, a hash of the query's text), so a query
  gets the same examples whatever else is classified and in whatever order (a resumed run, which passes only the
  pending queries, agrees with a whole one), while different queries see different examples and no single unlucky
  draw decides the whole run.
- ``balanced``: one set for every query, chosen greedily to cover as many labels as possible: each step takes the
  example that adds the most labels not yet covered (ties broken by a seeded order); once no example adds a new
  label, covering starts again so labels get a second example. The same prefix for every query also caches well.
- ``knn``: the k training abstracts nearest to the query by TF-IDF cosine (word unigrams and bigrams, sublinear tf,
  fitted on the training texts), so no extra model is needed. Similarities are computed a
  block of queries at a time, so 100k training x 10k query abstracts never hold more than ~16M similarities at once.
  The most similar example comes LAST, next to the query: small models lean on what they read most recently.
  Ties are broken by the seeded order.

In all three, training papers identical to the query (same text, or same abstract when the caller passes
abstracts as keys; ignoring case and spacing) are left out: showing a query its own answer would inflate the scores
(random draws from the rest; balanced covers labels again without them, for that query only).

numpy and scikit-learn (imported inside the functions that need it); no torch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from llmcls.errors import LlmclsError

__all__ = ["SELECTIONS", "select_examples"]

SELECTIONS = ("random", "balanced", "knn")
_CHUNK_CELLS = 1 << 24  # similarities held at once in knn (float32: 64 MiB)


def select_examples(
    train_texts: Sequence[str],
    train_labels: Sequence[Sequence[str]],
    query_texts: Sequence[str],
    *,
    k: int,
    selection: str = "knn",
    seed: int = 42,
    train_keys: Sequence[str] | None = None,
    query_keys: Sequence[str] | None = None,
) -> list[list[int]]:
    """For each query, ``k`` indices into the training set (see the module docstring for the three selections).

    ``train_keys`` / ``query_keys`` say which texts are the same paper (by default the texts themselves): pass the
    abstracts when the texts add a title, which one copy of a paper may lack (AAPD rows have none).
    A query gets fewer than ``k`` indices only when fewer than ``k`` training papers differ from it.
    Raises `LlmclsError` for an unknown selection, a negative ``k`` or one larger than the training set.
    """
    _check_arguments(train_texts, train_labels, k, selection)
    if k == 0:
        return [[] for _ in query_texts]
    excluded = _identical_texts(train_texts if train_keys is None else train_keys,
                                query_texts if query_keys is None else query_keys)
    if selection == "random":
        everyone = np.arange(len(train_texts))
        picks = []
        for q, text in enumerate(query_texts):
            pool = np.setdiff1d(everyone, excluded[q]) if q in excluded else everyone
            picks.append(_rng(seed, _text_key(text)).choice(pool, size=min(k, pool.size), replace=False).tolist())
        return picks
    if selection == "balanced":
        chosen = _balanced(train_labels, k, seed)
        return [_balanced(train_labels, k, seed, excluded[q]) if set(excluded.get(q, ())) & set(chosen)
                else list(chosen) for q in range(len(query_texts))]
    return _knn(train_texts, query_texts, k, seed, excluded)


def _check_arguments(train_texts: Sequence[str], train_labels: Sequence[Sequence[str]], k: int, selection: str):
    if selection not in SELECTIONS:
        raise LlmclsError(f"unknown few-shot selection {selection!r} (choose from: {', '.join(SELECTIONS)})")
    if len(train_texts) != len(train_labels):
        raise LlmclsError(f"{len(train_texts)} training texts but {len(train_labels)} label lists")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise LlmclsError(f"the number of few-shot examples k must be an integer >= 0, got {k!r}")
    if k > len(train_texts):
        raise LlmclsError(f"k={k} few-shot examples asked for, but the training set has only {len(train_texts)}")


def _rng(seed: int, *keys: int) -> np.random.Generator:
    # SeedSequence takes non-negative entropy only; folding keeps any int seed usable and deterministic.
    return np.random.default_rng([int(seed) % 2**64, *keys])


def _text_key(text: str) -> int:
    # A stable hash (Python's hash() changes between processes), of the text as duplicates are compared.
    digest = hashlib.blake2b(_normalise(text).encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _tie_rank(n: int, seed: int) -> np.ndarray:
    """A seeded rank per training example; the lower rank wins a tie."""
    return _rng(seed).permutation(n)


# ---------------------------------------------------------------------------------------------------------------------
# balanced


def _balanced(train_labels: Sequence[Sequence[str]], k: int, seed: int, exclude: Sequence[int] = ()) -> list[int]:
    matrix = _label_matrix(train_labels)
    rank = _tie_rank(matrix.shape[0], seed)
    uncovered = np.ones(matrix.shape[1], dtype=np.float32)
    available = np.ones(matrix.shape[0], dtype=bool)
    available[list(exclude)] = False
    chosen: list[int] = []
    for _ in range(min(k, int(available.sum()))):
        gains = _gains(matrix, uncovered, available)
        if gains.max() <= 0 and not uncovered.all():
            uncovered[:] = 1  # every label still reachable is covered: a second round
            gains = _gains(matrix, uncovered, available)
        best = np.flatnonzero(gains == gains.max())
        pick = int(best[np.argmin(rank[best])])
        chosen.append(pick)
        available[pick] = False
        uncovered[matrix.indices[matrix.indptr[pick] : matrix.indptr[pick + 1]]] = 0
    return chosen


def _label_matrix(train_labels: Sequence[Sequence[str]]):
    """Sparse 0/1 matrix (examples x labels); a label repeated within one example counts once."""
    from scipy import sparse  # a dependency of scikit-learn

    columns: dict[str, int] = {}
    rows = [sorted({columns.setdefault(label, len(columns)) for label in labels}) for labels in train_labels]
    indptr = np.cumsum([0, *map(len, rows)])
    indices = np.fromiter((c for row in rows for c in row), dtype=np.int64, count=int(indptr[-1]))
    data = np.ones(len(indices), dtype=np.float32)
    return sparse.csr_matrix((data, indices, indptr), shape=(len(rows), max(len(columns), 1)))


def _gains(matrix, uncovered: np.ndarray, available: np.ndarray) -> np.ndarray:
    gains = np.asarray(matrix @ uncovered, dtype=np.float64)
    gains[~available] = -1.0  # an example is shown once
    return gains


# ---------------------------------------------------------------------------------------------------------------------
# knn


def _knn(train_texts: Sequence[str], query_texts: Sequence[str], k: int, seed: int,
         excluded: dict[int, list[int]]) -> list[list[int]]:
    train, queries = _tfidf(train_texts, query_texts)
    train_t = train.T.tocsr()
    rank = _tie_rank(train.shape[0], seed)
    chunk = max(1, _CHUNK_CELLS // max(train.shape[0], 1))
    selected: list[list[int]] = []
    for start in range(0, queries.shape[0], chunk):
        # Rows are L2-normalised, so dot products are cosine similarities.
        sims = (queries[start : start + chunk] @ train_t).toarray()
        for offset, row in enumerate(sims):
            row[excluded.get(start + offset, [])] = -np.inf
            selected.append(_nearest(row, k, rank))
    return selected


def _tfidf(train_texts: Sequence[str], query_texts: Sequence[str]):
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, dtype=np.float32)
    try:
        train = vectorizer.fit_transform(train_texts)
    except ValueError as exc:  # scikit-learn's "empty vocabulary": no training text has a word in it
        raise LlmclsError(f"knn few-shot selection: no TF-IDF vectors for the training texts ({exc})") from None
    return train, vectorizer.transform(query_texts)


def _identical_texts(train_texts: Sequence[str], query_texts: Sequence[str]) -> dict[int, list[int]]:
    """Query index -> training indices with the same text, ignoring case and spacing."""
    by_text: dict[str, list[int]] = {}
    for i, text in enumerate(train_texts):
        by_text.setdefault(_normalise(text), []).append(i)
    found = {q: by_text.get(_normalise(text)) for q, text in enumerate(query_texts)}
    return {q: indices for q, indices in found.items() if indices}


def _normalise(text: str) -> str:
    return " ".join(str(text).split()).casefold()


def _nearest(row: np.ndarray, k: int, rank: np.ndarray) -> list[int]:
    """The k most similar training indices, least similar first; the lower rank wins ties."""
    kth = np.partition(row, row.size - k)[row.size - k]
    above = np.flatnonzero(row > kth)
    tied = np.flatnonzero(row == kth)
    tied = tied[np.argsort(rank[tied], kind="stable")][: k - above.size]
    picked = np.concatenate([above, tied])
    picked = picked[np.isfinite(row[picked])]  # only excluded duplicates are -inf
    # lexsort's last key is the primary one: ascending similarity, then descending rank, so the best comes last.
    return picked[np.lexsort((-rank[picked], row[picked]))].tolist()
