"""Multi-label metrics: the one scorer shared by every llmcls path (LLM prompting, LoRA, encoders).

Inputs live in one label space: ``y_true`` and ``y_pred`` are (n_examples, n_labels) arrays of bool or 0/1, and the
optional ``scores`` is a float array of the same shape where higher means more likely. This module imports only numpy
and the standard library, so scoring never pulls in torch or scikit-learn; the tests pin the definitions below to
scikit-learn 1.9 (``zero_division=0``) to 1e-9 where it has them, and P@k and nDCG@k (whose rows without true labels
scikit-learn scores 0) to brute-force references of the conventions stated here.

Convention: every ratio whose denominator is 0 is 0 (scikit-learn's ``zero_division=0``).

Keys of :func:`compute_metrics`:

- ``micro_precision`` / ``micro_recall`` / ``micro_f1``: counts pooled over all (example, label) cells;
  micro F1 = 2 TP / (n_true + n_pred).
- ``macro_precision`` / ``macro_recall`` / ``macro_f1``: unweighted mean of the per-label values over the run's whole
  label space. A label absent from ``y_true`` and never predicted counts as 0, so macro scores depend on the label
  space, not only on the labels that happen to occur.
- ``weighted_f1``: per-label F1 weighted by support (0 when ``y_true`` has no label at all).
- ``samples_f1``: per-example F1 averaged over examples; an example with no true and no predicted label scores 0.
- ``hamming_loss``: fraction of wrong cells; ``label_accuracy`` = 1 - hamming_loss.
- ``subset_accuracy``: fraction of examples whose predicted label set equals the true set exactly.
- ``n_examples``, ``n_labels`` (ints), ``avg_labels_true``, ``avg_labels_pred`` (labels per example).

Only when ``scores`` are given (ranking metrics):

- ``p_at_k`` (k = 1, 3, 5): mean over all examples of (true labels among the k highest-scored) / k. k stays fixed even
  when a row has fewer than k true labels (or the label space has fewer than k labels), as in extreme classification;
  a row with no true label scores 0.
- ``ndcg_at_k`` (k = 3, 5): DCG@k / IDCG@k with DCG@k = sum_{r<=k} rel_r / log2(r + 1) over the top-k ranking and
  IDCG@k the same sum for min(k, n_true) relevant labels. Rows with no true label are skipped (0.0 if all are).
- Ties in P@k and nDCG@k count at their expected value over the orders of the tied labels: a rank held by a group of
  equal scores has relevance (true labels in the group) / (group size), as scikit-learn's ``ndcg_score`` (its
  default ``ignore_ties=False``) averages them. Ties broken by column order would hand a collapsed scorer (constant
  or coarse scores, bf16 logits) the most frequent labels' hits, since columns follow training frequency.
- ``map``: macro average precision, the mean over labels of AP = (1/P) sum over positives of the precision at that
  positive's score (tied scores form one threshold, as in scikit-learn's precision-recall curve). A label with no
  positive in ``y_true`` scores AP 0 and stays in the mean, as ``average_precision_score(average="macro")`` does in
  scikit-learn 1.9 (it warns "No positive class found in y_true" and yields 0 for that column).
- ``lrap``: label ranking average precision exactly as scikit-learn: for each relevant label, (relevant labels scored
  >= it) / (labels scored >= it), averaged per row, then over rows; a row with no or all labels relevant scores 1.

Thresholds: :func:`tune_thresholds` picks the threshold(s) on validation scores that maximise micro F1 and
:func:`apply_thresholds` turns scores into predictions with them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Thresholds", "apply_thresholds", "compute_metrics", "per_label_metrics", "tune_best_thresholds",
           "tune_thresholds"]

TOP_K = (1, 3, 5)
NDCG_K = (3, 5)
_ROW_CHUNK_CELLS = 1 << 21  # row chunks of 16 MB (float64): small enough for malloc to reuse, no page faults
_COUNT_CHUNK_CELLS = 1 << 21  # bool chunks for counting stay in cache
_COL_BLOCK_CELLS = 1 << 25  # column blocks (AP, per-label tuning) hold ~256 MB of float64
_SLAB_ROWS = 256  # transposing 256-row slabs is ~3x faster than one strided .T copy
_PASSES = 2
_PRF = ("precision", "recall", "f1")


# ---------------------------------------------------------------- input checks and helpers
def _as_bool(y, name: str) -> np.ndarray:
    """Return y as a 2-D bool array, refusing values other than 0/1."""
    arr = np.asarray(y)
    if arr.ndim != 2 or 0 in arr.shape:
        raise ValueError(f"{name} must be a non-empty 2-D (n_examples, n_labels) array, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr
    out = arr != 0
    if not np.array_equal(out, arr):
        raise ValueError(f"{name} must hold only 0/1 or bool values")
    return out


def _as_scores(scores, shape: tuple[int, int] | None, finite: bool = False) -> np.ndarray:
    """Return scores as a float array (ints become float64), checking shape and NaN (or non-finite) values."""
    arr = np.asarray(scores)
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    if arr.ndim != 2 or (shape is not None and arr.shape != shape):
        raise ValueError(f"scores must have shape {shape or '(n_examples, n_labels)'}, got {arr.shape}")
    check = (lambda part: not np.isfinite(part).all()) if finite else (lambda part: np.isnan(part).any())
    if any(check(arr[rows]) for rows in _row_chunks(*arr.shape)):  # chunks: no full-size bool temporary
        raise ValueError("scores must be finite" if finite else "scores must not contain NaN")
    return arr


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    yt, yp = _as_bool(y_true, "y_true"), _as_bool(y_pred, "y_pred")
    if yt.shape != yp.shape:
        raise ValueError(f"y_true {yt.shape} and y_pred {yp.shape} must have the same shape")
    return yt, yp


def _ratio(num, den) -> np.ndarray:
    """num / den elementwise, 0 where den == 0 (the zero_division=0 convention)."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast_shapes(num.shape, den.shape)), where=den != 0)


def _prf(tp, n_true, n_pred) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 from counts (F1 = 2 TP / (n_true + n_pred), equal to the harmonic mean)."""
    return _ratio(tp, n_pred), _ratio(tp, n_true), _ratio(2 * np.asarray(tp), np.asarray(n_true) + n_pred)


def _row_chunks(n: int, n_labels: int, cells: int | None = None) -> Iterator[slice]:
    step = max(1, (cells or _ROW_CHUNK_CELLS) // n_labels)
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


def _column_blocks(a: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (first column, contiguous (width, n_examples) copy of a block of a's columns).

    One buffer is reused for every block (fresh 100 MB+ allocations cost more in page faults than the copy), so a
    block is only valid until the next one is requested.
    """
    n, n_labels = a.shape
    width = min(n_labels, max(1, _COL_BLOCK_CELLS // n))
    buffer = np.empty((width, n), dtype=a.dtype)
    for j0 in range(0, n_labels, width):
        block = buffer[: min(width, n_labels - j0)]
        for i in range(0, n, _SLAB_ROWS):
            block[:, i : i + _SLAB_ROWS] = a[i : i + _SLAB_ROWS, j0 : j0 + width].T
        yield j0, block


def _top_k(scores: np.ndarray, k: int, part: np.ndarray | None = None) -> np.ndarray:
    """Column indices of each row's k highest scores, best first; equal scores go to the lower column index first.

    ``part`` may be the rows already sorted (or partitioned at positions L-k-1 and L-k) to save the partition.
    """
    n_labels = scores.shape[1]
    if k == 1 and part is None:
        return np.argmax(scores, axis=1)[:, None]  # argmax already returns the first (lowest-index) maximum
    if part is None:
        part = np.partition(scores, [n_labels - k - 1, n_labels - k] if k < n_labels else 0, axis=1)
    kth = part[:, n_labels - k]
    chosen = scores >= kth[:, None]
    # A row has more than k candidates only if its (k+1)-th score ties the k-th: keep the lowest-index ties there.
    tied = np.flatnonzero(part[:, n_labels - k - 1] == kth) if k < n_labels else np.empty(0, dtype=np.intp)
    if tied.size:
        sub, cut = scores[tied], kth[tied, None]
        ties = sub == cut
        ties &= np.cumsum(ties, axis=1) <= k - (sub > cut).sum(axis=1, keepdims=True)
        chosen[tied] = (sub > cut) | ties
    cols = (np.flatnonzero(chosen) % n_labels).reshape(-1, k)
    order = np.argsort(-np.take_along_axis(scores, cols, axis=1), axis=1, kind="stable")
    return np.take_along_axis(cols, order, axis=1)


def _top_k_rows(scores: np.ndarray, k: int) -> np.ndarray:
    return np.concatenate([_top_k(scores[rows], k) for rows in _row_chunks(*scores.shape)])


# ---------------------------------------------------------------- classification metrics
def _counts(yt: np.ndarray, yp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-label (3, n_labels) and per-example (3, n) counts of true, predicted and correct labels.

    Row chunks keep the temporary ``yt & yp`` small and cache-resident: one full-size temporary costs more in page
    faults than all the sums together.
    """
    n, n_labels = yt.shape
    per_label, per_row = np.zeros((3, n_labels), dtype=np.int64), np.empty((3, n), dtype=np.int64)
    row_dtype = np.uint8 if n_labels < 256 else np.int64  # uint8 row sums are ~2x faster and cannot overflow here
    for rows in _row_chunks(n, n_labels, _COUNT_CHUNK_CELLS):
        for i, part in enumerate((yt[rows], yp[rows], yt[rows] & yp[rows])):
            as_int = part.view(np.uint8)
            per_label[i] += as_int.sum(axis=0, dtype=np.int64)
            per_row[i, rows] = as_int.sum(axis=1, dtype=row_dtype)
    return per_label, per_row


def _classification(yt: np.ndarray, yp: np.ndarray) -> dict[str, float]:
    """All set-based metrics from per-label and per-example counts (no loop over examples)."""
    n, n_labels = yt.shape
    (col_t, col_p, col_tp), (row_t, row_p, row_tp) = _counts(yt, yp)
    n_true, n_pred, tp = int(col_t.sum()), int(col_p.sum()), int(col_tp.sum())
    micro, per_label = _prf(tp, n_true, n_pred), _prf(col_tp, col_t, col_p)
    hamming = (n_true + n_pred - 2 * tp) / (n * n_labels)
    out = {f"micro_{name}": float(value) for name, value in zip(_PRF, micro, strict=True)}
    out.update({f"macro_{name}": float(value.mean()) for name, value in zip(_PRF, per_label, strict=True)})
    out["samples_f1"] = float(_ratio(2 * row_tp, row_t + row_p).mean())
    out["weighted_f1"] = float(_ratio((per_label[2] * col_t).sum(), n_true))
    out.update(hamming_loss=float(hamming), label_accuracy=float(1.0 - hamming))
    out["subset_accuracy"] = float(np.mean(row_t + row_p - 2 * row_tp == 0))
    out.update(n_examples=int(n), n_labels=int(n_labels), avg_labels_true=n_true / n, avg_labels_pred=n_pred / n)
    return out


# ---------------------------------------------------------------- ranking metrics
def _count_below(srt: np.ndarray, rows: np.ndarray, v: np.ndarray) -> np.ndarray:
    """For each score v[i] taken from row rows[i], how many scores of that (ascending) sorted row are < v[i].

    Vectorised bisection by binary lifting; v[i] is in its own row, so the row's last score is >= v[i] and clamping
    the probe to the row end can never take a wrong step.
    """
    n_labels = srt.shape[1]
    flat, base = srt.ravel(), rows * n_labels - 1
    below = np.zeros(v.shape, dtype=np.int64)
    step = 1 << (n_labels.bit_length() - 1)
    while step:
        below += step * (flat[base + np.minimum(below + step, n_labels)] < v)
        step >>= 1
    return below


def _lrap_sum(srt: np.ndarray, rows: np.ndarray, v: np.ndarray, n_rel: np.ndarray) -> float:
    """Sum of LRAP over a chunk's rows; (rows, v) are its relevant labels' rows and scores, srt its sorted rows."""
    n_labels = srt.shape[1]
    rank = n_labels - _count_below(srt, rows, v)  # labels scored >= v: scikit-learn's "max" rank
    # Relevant labels scored >= v are those of the same row with rank <= this one; integer keys (row, rank) turn
    # that into one global searchsorted instead of a per-row loop.
    key = rows * (n_labels + 1) + rank
    above = np.searchsorted(np.sort(key), key, "right") - (np.cumsum(n_rel) - n_rel)[rows]
    per_row = np.bincount(rows, weights=above / rank, minlength=n_rel.size) / np.maximum(n_rel, 1)
    return float(np.where((n_rel == 0) | (n_rel == n_labels), 1.0, per_row).sum())


def _ranking_chunk(sc: np.ndarray, yc: np.ndarray, rows: np.ndarray, v: np.ndarray, acc: dict[str, float]) -> None:
    """Add one row chunk's P@k, nDCG@k and LRAP sums to ``acc``."""
    n_labels = sc.shape[1]
    srt = np.sort(sc, axis=1)
    k = min(max(TOP_K), n_labels)
    top = _top_k(sc, k, srt)
    rel = np.take_along_axis(yc, top, axis=1).astype(np.float64)
    # A score tied with another among a row's k+1 best: each of the k positions its group spans holds a true label
    # with the group's share of them (the expected relevance over the orders of the tied labels).
    best = srt[:, max(n_labels - k - 1, 0):]
    tied = np.flatnonzero((best[:, 1:] == best[:, :-1]).any(axis=1))
    if tied.size:
        tied_scores = sc[tied]
        group = tied_scores[:, None, :] == np.take_along_axis(tied_scores, top[tied], axis=1)[:, :, None]
        rel[tied] = (group & yc[tied][:, None, :]).sum(axis=2) / group.sum(axis=2)
    hits = np.cumsum(rel, axis=1)
    for kk in TOP_K:
        acc[f"p_at_{kk}"] += hits[:, min(kk, k) - 1].sum() / kk
    n_true = np.bincount(rows, minlength=sc.shape[0])
    has = n_true > 0
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    dcg, ideal = np.cumsum(rel[has] * discount, axis=1), np.cumsum(discount)
    for kk in NDCG_K:
        cut = min(kk, k)
        acc[f"ndcg_at_{kk}"] += float((dcg[:, cut - 1] / ideal[np.minimum(n_true[has], cut) - 1]).sum())
    acc["ndcg_rows"] += int(has.sum())
    acc["lrap"] += _lrap_sum(srt, rows, v, n_true)


def _average_precision(col_sorted: np.ndarray, pos: np.ndarray) -> float:
    """AP of one label: mean over its positives of the precision at each positive's score, ties grouped."""
    pos = np.sort(pos)  # sorted needles: searchsorted reuses each answer as the next one's starting point
    n_at_or_above = col_sorted.size - np.searchsorted(col_sorted, pos, "left")
    tp_at_or_above = pos.size - np.searchsorted(pos, pos, "left")
    return float(np.mean(tp_at_or_above / n_at_or_above))


def _by_column(values: np.ndarray, cols: np.ndarray, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """Group values of positives by column: returns (values reordered, bounds); column j is bounds[j]:bounds[j+1]."""
    bounds = np.concatenate([[0], np.cumsum(np.bincount(cols, minlength=n_labels))])
    return values[np.argsort(cols, kind="stable")], bounds


def _macro_ap(scores: np.ndarray, cols: np.ndarray, v: np.ndarray) -> float:
    """Mean AP over all labels (positives given as their columns and scores); a label without positives adds 0."""
    n_labels = scores.shape[1]
    pos, bounds = _by_column(v, cols, n_labels)
    total = 0.0
    for j0, block in _column_blocks(scores):
        block.sort(axis=1)
        for j, col_sorted in enumerate(block, start=j0):
            if bounds[j + 1] > bounds[j]:
                total += _average_precision(col_sorted, pos[bounds[j] : bounds[j + 1]])
    return total / n_labels


def _ranking(scores: np.ndarray, yt: np.ndarray) -> dict[str, float]:
    n, n_labels = yt.shape
    rows, cols = np.nonzero(yt)  # every relevant cell once, row-major: shared by LRAP and AP
    v = scores[rows, cols]
    acc = dict.fromkeys([*(f"p_at_{k}" for k in TOP_K), *(f"ndcg_at_{k}" for k in NDCG_K), "ndcg_rows", "lrap"], 0.0)
    for chunk in _row_chunks(n, n_labels):
        lo, hi = np.searchsorted(rows, [chunk.start, chunk.stop])
        _ranking_chunk(scores[chunk], yt[chunk], rows[lo:hi] - chunk.start, v[lo:hi], acc)
    out = {f"p_at_{k}": acc[f"p_at_{k}"] / n for k in TOP_K}
    out.update({f"ndcg_at_{k}": float(_ratio(acc[f"ndcg_at_{k}"], acc["ndcg_rows"])) for k in NDCG_K})
    out["map"] = _macro_ap(scores, cols, v)
    out["lrap"] = acc["lrap"] / n
    return {key: float(value) for key, value in out.items()}


# ---------------------------------------------------------------- public metrics API
def compute_metrics(y_true, y_pred, scores=None) -> dict[str, float]:
    """Score predictions (and, if given, ranking scores) with the metrics listed in the module docstring.

    Classification metrics need only counts, so 1M x 200 takes about a second; ranking metrics add a few seconds.
    Keys ``p_at_1 .. lrap`` appear only when ``scores`` is given.
    """
    yt, yp = _pair(y_true, y_pred)
    out = _classification(yt, yp)
    if scores is not None:
        out.update(_ranking(_as_scores(scores, yt.shape), yt))
    return out


def per_label_metrics(y_true, y_pred, labels: Sequence[str]) -> list[dict]:
    """One dict per label: ``label, precision, recall, f1, support, predicted`` (zero_division=0)."""
    yt, yp = _pair(y_true, y_pred)
    if len(labels) != yt.shape[1]:
        raise ValueError(f"got {len(labels)} labels for {yt.shape[1]} columns")
    support, predicted = yt.sum(axis=0), yp.sum(axis=0)
    columns = zip(labels, *_prf((yt & yp).sum(axis=0), support, predicted), support, predicted, strict=True)
    keys = ("label", "precision", "recall", "f1", "support", "predicted")
    return [
        dict(zip(keys, (str(lab), float(p), float(r), float(f), int(s), int(c)), strict=True))
        for lab, p, r, f, s, c in columns
    ]


def bootstrap_interval(y_true, y_pred, key: str = "micro_f1", *, n: int = 1000, level: float = 0.95,
                       seed: int = 0) -> tuple[float, float, float]:
    """How far one classification metric moves with the draw of the examples alone: ``(standard error, low, high)``
    of a percentile bootstrap (examples drawn with replacement `n` times, seeded, so reruns give the same interval).
    On a few hundred examples this is the first thing to know before comparing two systems' scores."""
    yt, yp = _pair(y_true, y_pred)
    values = _bootstrap_values(yt, yp, key, n, seed)
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(values.std(ddof=1)), float(low), float(high)


def bootstrap_difference(y_true, pred_a, pred_b, key: str = "micro_f1", *, n: int = 1000, level: float = 0.95,
                         seed: int = 0) -> tuple[float, float, float]:
    """Paired bootstrap of ``metric(b) - metric(a)`` on the same examples: ``(difference, low, high)``. Every draw
    scores both systems on the same resampled examples, so what the two get right together cancels: the interval
    of a difference is far narrower than the two systems' own intervals suggest when they agree on most examples.
    An interval that excludes 0 says that b beats (or trails) a on this kind of data, not only on these rows."""
    yt, ya = _pair(y_true, pred_a)
    yb = _pair(y_true, pred_b)[1]
    if ya.shape != yb.shape:
        raise ValueError(f"pred_a has shape {ya.shape}, pred_b has {yb.shape}")
    difference = _bootstrap_values(yt, yb, key, n, seed) - _bootstrap_values(yt, ya, key, n, seed)  # same draws
    observed = _classification(yt, yb)[key] - _classification(yt, ya)[key]
    low, high = np.quantile(difference, [(1 - level) / 2, (1 + level) / 2])
    return float(observed), float(low), float(high)


def _bootstrap_values(yt: np.ndarray, yp: np.ndarray, key: str, n: int, seed: int) -> np.ndarray:
    """The metric on `n` seeded resamples of the examples (the same resamples for the same seed and size)."""
    if len(yt) == 0:
        raise ValueError("a bootstrap needs at least one example")
    if key not in _classification(yt[:1], yp[:1]):
        raise ValueError(f"unknown classification metric {key!r}")
    rng = np.random.default_rng(seed)
    draws = (rng.integers(0, len(yt), len(yt)) for _ in range(n))
    if key.startswith("micro_"):  # pooled counts: per-row sums are enough (fast on a large test split)
        tp, n_true, n_pred = (yt & yp).sum(axis=1), yt.sum(axis=1), yp.sum(axis=1)
        index = ("micro_precision", "micro_recall", "micro_f1").index(key)
        return np.array([float(_prf(tp[rows].sum(), n_true[rows].sum(), n_pred[rows].sum())[index])
                         for rows in draws])
    return np.array([_classification(yt[rows], yp[rows])[key] for rows in draws])


# ---------------------------------------------------------------- thresholds
@dataclass
class Thresholds:
    """Decision thresholds (one per label; all equal in global mode) and how they were tuned."""

    values: np.ndarray
    per_label: bool = False
    min_labels: int = 0
    validation_micro_f1: float = 0.0

    def to_dict(self) -> dict:
        """Plain-JSON form for ``thresholds.json`` (floats round-trip exactly through json; +inf, which no finite
        score passes, is written as null: JSON has no infinity)."""
        return {
            "values": [None if v == np.inf else float(v) for v in np.asarray(self.values, dtype=np.float64)],
            "per_label": bool(self.per_label),
            "min_labels": int(self.min_labels),
            "validation_micro_f1": float(self.validation_micro_f1),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Thresholds:
        return cls(
            values=np.asarray([np.inf if v is None else v for v in data["values"]], dtype=np.float64),
            per_label=bool(data.get("per_label", False)),
            min_labels=int(data.get("min_labels", 0)),
            validation_micro_f1=float(data.get("validation_micro_f1", 0.0)),
        )


def apply_thresholds(scores, thresholds: Thresholds) -> np.ndarray:
    """Bool predictions ``scores >= values``; a row with fewer than ``min_labels`` labels is replaced by its
    ``min_labels`` top-scored labels (for min_labels=1: an empty row gets its argmax; ties to the lower index)."""
    sc = _as_scores(scores, None)
    values = np.asarray(thresholds.values, dtype=np.float64)  # float64 so float32 scores compare exactly
    if values.shape != (sc.shape[1],):
        raise ValueError(f"thresholds have shape {values.shape}, scores have {sc.shape[1]} labels")
    pred = sc >= values
    m = min(int(thresholds.min_labels), sc.shape[1])
    if m > 0:
        short = np.flatnonzero(pred.sum(axis=1) < m)
        if short.size:
            pred[short] = False
            pred[short[:, None], _top_k(sc[short], m)] = True
    return pred


def _step(values: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """A step function t -> sum of weights over values >= t, as (sorted values, cumulative weights or None = 1)."""
    if weights is None:
        return np.sort(values), None
    order = np.argsort(values, kind="stable")
    return values[order], np.concatenate([[0], np.cumsum(weights[order])])


def _at(step: tuple[np.ndarray, np.ndarray | None], t: np.ndarray) -> np.ndarray:
    values, cum = step
    idx = np.searchsorted(values, t, "left")
    return values.size - idx if cum is None else cum[-1] - cum[idx]


def _best_cut(cands, n0, tp0, n_true, n_terms, tp_terms) -> tuple[float, float]:
    """Evaluate micro F1 = 2 TP / (n_true + n_pred) at every candidate cut t (predict scores >= t) and return the
    best (t, F1). n_pred(t) and TP(t) are constants plus signed step functions, so each candidate costs O(log n).

    F1 only changes at score values and rises when a cut passes a score that adds no TP, so the candidates are the
    scores where TP can fall (plus +inf = "nothing passes"); ties prefer the highest cut (fewest predictions).
    """
    n_pred = n0 + sum(coef * _at(step, cands) for step, coef in n_terms)
    tp = tp0 + sum(coef * _at(step, cands) for step, coef in tp_terms)
    f1 = _ratio(2 * tp, n_true + n_pred)
    best = f1.size - 1 - int(np.argmax(f1[::-1]))
    return float(cands[best]), float(f1[best])


def _candidates(parts: list[np.ndarray], dtype) -> np.ndarray:
    # Same dtype as the sorted scores: searchsorted then compares without casting copies (and exactly).
    return np.append(np.unique(np.concatenate(parts)), np.inf).astype(dtype)


def _margin(sorted_scores: np.ndarray, cut: float) -> float:
    """Turn the chosen cut (a score value, or +inf) into the threshold to store.

    Any threshold in (next lower distinct score, cut] gives the same validation predictions; the midpoint leaves
    unseen scores the same margin on both sides instead of sitting on a validation score.
    """
    if cut == np.inf:
        return float(np.nextafter(float(sorted_scores[-1]), np.inf))  # just above every validation score
    i = int(np.searchsorted(sorted_scores, cut, "left"))
    if i == 0:
        return cut  # everything passes; nothing lower to split the difference with
    lower = float(sorted_scores[i - 1])
    mid = cut / 2 + lower / 2  # halves first: no overflow near the float limits
    return mid if lower < mid <= cut else cut


def _global_cut(sc: np.ndarray, yt: np.ndarray, m: int) -> float:
    """Single threshold maximising micro F1 by an exact sweep over all scores.

    With min_labels m, a row whose m-th best score v_m is below t falls back to its top-m labels; the only labels
    that still pass t in such a row are the "extra" ones scored strictly above v_m, whence the correction terms.
    """
    n = sc.shape[0]
    flat = np.sort(sc, axis=None)
    pos = sc[yt]
    n_terms, tp_terms, n0, tp0, parts = [((flat, None), 1)], [(_step(pos), 1)], 0, 0, [pos]
    if m:
        top = _top_k_rows(sc, m)
        vals, top_true = np.take_along_axis(sc, top, axis=1), np.take_along_axis(yt, top, axis=1)
        vm, hits = vals[:, -1], top_true.sum(axis=1)
        extra = vals > vm[:, None]
        ev, evm, etrue = vals[extra], np.broadcast_to(vm[:, None], vals.shape)[extra], top_true[extra]
        n0, tp0 = m * n, int(hits.sum())
        n_terms += [(_step(ev), -1), (_step(evm), 1), (_step(vm), -m)]
        tp_terms += [(_step(ev[etrue]), -1), (_step(evm[etrue]), 1), (_step(vm, hits), -1)]
        parts.append(vm)
    cut, _ = _best_cut(_candidates(parts, sc.dtype), n0, tp0, int(pos.size), n_terms, tp_terms)
    return _margin(flat, cut)


def _current_f1(count, hit, hits_top, m: int, n_true: int) -> float:
    if m == 0:
        return float(_ratio(2 * hit.sum(), n_true + count.sum()))
    short = count < m  # these rows fall back to their top-m labels
    return float(_ratio(2 * np.where(short, hits_top, hit).sum(), n_true + np.where(short, m, count).sum()))


def _tune_column(col, ycol, t_old, count, hit, hits_top, m: int, n_true: int) -> np.float64:
    """Best threshold for one column with the others fixed; updates the per-row ``count``/``hit`` in place.

    Rows split by how many labels the other columns predict (c): c >= m rows add this column's own prediction;
    c == m-1 rows switch between "others + this label" and their top-m fallback; rows below stay on the fallback.
    """
    f_now = _current_f1(count, hit, hits_top, m, n_true)
    was = col >= t_old
    count -= was
    hit -= was & ycol
    srt = np.sort(col)
    if m == 0:
        n0, tp0 = int(count.sum()), int(hit.sum())
        n_terms, tp_terms, parts = [((srt, None), 1)], [(_step(col[ycol]), 1)], [col[ycol]]
    else:
        a, b = count >= m, count == m - 1
        w = hit[b] + ycol[b] - hits_top[b]  # TP gained when this label passes instead of falling back
        n0 = int(count[a].sum()) + m * int(col.size - a.sum())
        tp0 = int(hit[a].sum()) + int(hits_top[~a].sum())
        n_terms, tp_terms = [(_step(col[a]), 1)], [(_step(col[a & ycol]), 1), (_step(col[b], w), 1)]
        parts = [col[a & ycol], col[b][w > 0]]
    cut, f_best = _best_cut(_candidates(parts, col.dtype), n0, tp0, n_true, n_terms, tp_terms)
    new = np.float64(_margin(srt, cut)) if f_best > f_now else t_old  # keep the old one on ties: no oscillation
    now = col >= new
    count += now
    hit += now & ycol
    return new


def _per_label_cuts(sc: np.ndarray, yt: np.ndarray, values: np.ndarray, m: int) -> np.ndarray:
    """Coordinate ascent on micro F1, one column at a time, ``_PASSES`` passes; positive-less labels keep theirs."""
    count, hit = np.empty(sc.shape[0], dtype=np.int64), np.empty(sc.shape[0], dtype=np.int64)
    for rows in _row_chunks(*sc.shape):
        pred = sc[rows] >= values
        count[rows], hit[rows] = pred.sum(axis=1), (pred & yt[rows]).sum(axis=1)
    hits_top = np.take_along_axis(yt, _top_k_rows(sc, m), axis=1).sum(axis=1) if m else None
    rows, cols = np.nonzero(yt)
    pos_rows, bounds = _by_column(rows, cols, sc.shape[1])
    ycol = np.zeros(sc.shape[0], dtype=bool)  # one column of y_true, rebuilt from its positives (no bool transpose)
    for _ in range(_PASSES):
        for j0, block in _column_blocks(sc):
            for j, col in enumerate(block, start=j0):
                if bounds[j + 1] > bounds[j]:
                    ycol[pos_rows[bounds[j] : bounds[j + 1]]] = True
                    values[j] = _tune_column(col, ycol, values[j], count, hit, hits_top, m, rows.size)
                    ycol[:] = False
    return values


def tune_thresholds(y_true, scores, *, per_label: bool = False, min_labels: int = 0) -> Thresholds:
    """Tune decision thresholds on validation data to maximise micro F1 of ``apply_thresholds``.

    Global mode: one threshold t for every label, found by an exact sweep over the distinct score values (sorted
    scores and cumulative counts, not a grid). The stored value is the midpoint between the chosen score and the next
    lower distinct score (a margin for unseen data; same validation predictions); if predicting nothing is best (no
    positives), it is the next float above the highest score. Per-label mode: start from the global threshold, then
    for each label in turn choose the threshold that maximises overall micro F1 with the other columns fixed (an
    exact per-column sweep), two passes; labels with no validation positive keep the global threshold.
    ``min_labels`` (e.g. 1: always predict the top label) is part of the objective being maximised.
    """
    yt = _as_bool(y_true, "y_true")
    sc = _as_scores(scores, yt.shape, finite=True)
    if min_labels < 0:
        raise ValueError("min_labels must be >= 0")
    m = min(int(min_labels), yt.shape[1])
    values = np.full(yt.shape[1], _global_cut(sc, yt, m), dtype=np.float64)
    if per_label:
        values = _per_label_cuts(sc, yt, values, m)
    result = Thresholds(values=values, per_label=per_label, min_labels=int(min_labels))
    n_pred = tp = 0
    for rows in _row_chunks(*sc.shape):  # recomputed from apply_thresholds itself, so the number is the real one
        pred = apply_thresholds(sc[rows], result)
        n_pred, tp = n_pred + np.count_nonzero(pred), tp + np.count_nonzero(pred & yt[rows])
    result.validation_micro_f1 = float(_prf(tp, np.count_nonzero(yt), n_pred)[2])
    return result


def tune_best_thresholds(y_true, scores, *, min_labels: Sequence[int], per_label: bool = False,
                         report: Callable[[Thresholds], None] | None = None) -> Thresholds:
    """`tune_thresholds` for each candidate of ``min_labels`` (the "always predict the top N" rule, searched like
    the thresholds themselves): the one with the best validation micro-F1, the earlier candidate on a tie.
    ``report`` sees every candidate (commands print them)."""
    best = None
    for m in min_labels:
        candidate = tune_thresholds(y_true, scores, per_label=per_label, min_labels=m)
        if report is not None:
            report(candidate)
        if best is None or candidate.validation_micro_f1 > best.validation_micro_f1:
            best = candidate
    if best is None:
        raise ValueError("min_labels must name at least one candidate")
    return best
