"""Tests for llmcls.metrics: scikit-learn 1.9 is the reference for every shared definition."""

from __future__ import annotations

import itertools
import json
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from llmcls.metrics import (
    NDCG_K,
    TOP_K,
    Thresholds,
    apply_thresholds,
    compute_metrics,
    per_label_metrics,
    tune_best_thresholds,
    tune_thresholds,
)

TOL = 1e-9
BASE_KEYS = {
    "micro_f1", "macro_f1", "samples_f1", "weighted_f1", "micro_precision", "micro_recall", "macro_precision",
    "macro_recall", "hamming_loss", "label_accuracy", "subset_accuracy", "n_examples", "n_labels", "avg_labels_true",
    "avg_labels_pred",
}  # fmt: skip
RANKING_KEYS = {"p_at_1", "p_at_3", "p_at_5", "ndcg_at_3", "ndcg_at_5", "map", "lrap"}
FAST = settings(max_examples=150, derandomize=True, deadline=None)


@st.composite
def multilabel(draw, min_labels: int = 2, max_labels: int = 7, max_rows: int = 9, score_levels: int = 4):
    """Random small (y_true, y_pred, scores) triples; sparse draws give empty rows and absent columns, and small
    integer-valued scores force ties."""
    n = draw(st.integers(1, max_rows))
    n_labels = draw(st.integers(min_labels, max_labels))
    seed = draw(st.integers(0, 2**32 - 1))
    p_true, p_pred = draw(st.sampled_from([0.0, 0.1, 0.3, 0.6, 1.0])), draw(st.sampled_from([0.0, 0.2, 0.5, 0.9]))
    rng = np.random.default_rng(seed)
    y_true = rng.random((n, n_labels)) < p_true
    y_pred = rng.random((n, n_labels)) < p_pred
    scores = rng.integers(0, score_levels, (n, n_labels)).astype(np.float64)
    return y_true, y_pred, scores


def _sklearn_reference(y_true, y_pred) -> dict[str, float]:
    ref = {}
    for avg in ("micro", "macro", "samples", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, average=avg, zero_division=0)
        ref[f"{avg}_f1"] = f
        assert f == pytest.approx(skm.f1_score(y_true, y_pred, average=avg, zero_division=0), abs=TOL)
        if avg in ("micro", "macro"):
            ref[f"{avg}_precision"], ref[f"{avg}_recall"] = p, r
    ref["hamming_loss"] = skm.hamming_loss(y_true, y_pred)
    ref["label_accuracy"] = 1.0 - ref["hamming_loss"]
    ref["subset_accuracy"] = skm.accuracy_score(y_true, y_pred)
    return ref


# ---------------------------------------------------------------- classification metrics vs scikit-learn
@FAST
@given(multilabel())
def test_classification_matches_sklearn(data):
    y_true, y_pred, _ = data
    got = compute_metrics(y_true, y_pred)
    for key, expected in _sklearn_reference(y_true, y_pred).items():
        assert got[key] == pytest.approx(expected, abs=TOL), key
    assert got["n_examples"] == y_true.shape[0] and got["n_labels"] == y_true.shape[1]
    assert got["avg_labels_true"] == pytest.approx(y_true.sum() / y_true.shape[0])
    assert got["avg_labels_pred"] == pytest.approx(y_pred.sum() / y_true.shape[0])


@FAST
@given(multilabel())
def test_int_inputs_equal_bool_inputs(data):
    y_true, y_pred, scores = data
    assert compute_metrics(y_true.astype(int), y_pred.astype(np.int8), scores) == compute_metrics(
        y_true, y_pred, scores
    )


def test_edge_cases_follow_sklearn_zero_division_0():
    y_true = np.array([[0, 0, 0], [1, 0, 0], [0, 0, 0]], dtype=bool)
    y_pred = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=bool)
    got = compute_metrics(y_true, y_pred)
    # Columns 1 and 2 never occur in y_true: both count as 0 in the macro mean over the whole label space.
    assert got["macro_f1"] == pytest.approx(1 / 3)
    # Rows 0 and 2 have no true label: scikit-learn 1.9 scores them 0 with zero_division=0 (even row 0, all empty).
    assert got["samples_f1"] == pytest.approx(1 / 3)
    assert got["weighted_f1"] == pytest.approx(1.0)
    nothing = compute_metrics(np.zeros((2, 3), bool), np.zeros((2, 3), bool))
    assert nothing["micro_f1"] == nothing["macro_f1"] == nothing["samples_f1"] == nothing["weighted_f1"] == 0.0
    assert nothing["subset_accuracy"] == 1.0 and nothing["hamming_loss"] == 0.0


def test_single_label_space_and_single_example():
    got = compute_metrics(np.array([[1], [0]]), np.array([[1], [1]]), np.array([[0.9], [0.2]]))
    assert got["micro_precision"] == 0.5 and got["micro_recall"] == 1.0
    assert got["p_at_1"] == 0.5 and got["p_at_5"] == pytest.approx(0.1)
    assert got["lrap"] == 1.0  # a one-label row has either no or all labels relevant
    one = compute_metrics(np.array([[0, 1, 1]]), np.array([[0, 1, 0]]))
    assert one["subset_accuracy"] == 0.0 and one["samples_f1"] == pytest.approx(2 / 3)


def test_key_set_is_exact():
    y = np.eye(4, dtype=bool)
    assert set(compute_metrics(y, y)) == BASE_KEYS
    assert set(compute_metrics(y, y, np.eye(4))) == BASE_KEYS | RANKING_KEYS
    got = compute_metrics(y, y, np.eye(4))
    assert all(type(v) is int for k, v in got.items() if k in {"n_examples", "n_labels"})
    assert all(type(v) is float for k, v in got.items() if k not in {"n_examples", "n_labels"})


def test_invalid_inputs_are_refused():
    y = np.zeros((2, 3), dtype=bool)
    with pytest.raises(ValueError):
        compute_metrics(y, np.zeros((2, 4), dtype=bool))
    with pytest.raises(ValueError):
        compute_metrics(y, np.full((2, 3), 2))
    with pytest.raises(ValueError):
        compute_metrics(y, y, np.full((2, 3), np.nan))
    with pytest.raises(ValueError):
        compute_metrics(np.zeros((0, 3)), np.zeros((0, 3)))


# ---------------------------------------------------------------- ranking metrics
@FAST
@given(multilabel())
def test_lrap_matches_sklearn_with_ties(data):
    y_true, y_pred, scores = data
    got = compute_metrics(y_true, y_pred, scores)["lrap"]
    assert got == pytest.approx(skm.label_ranking_average_precision_score(y_true, scores), abs=TOL)


@FAST
@given(multilabel(score_levels=3))
def test_macro_ap_matches_sklearn_including_labels_without_positives(data):
    y_true, y_pred, scores = data
    with warnings.catch_warnings():
        # scikit-learn 1.9 warns "No positive class found in y_true" and scores such a column 0 (kept in the mean)
        warnings.simplefilter("ignore", UserWarning)
        expected = skm.average_precision_score(y_true, scores, average="macro")
        per_column = [skm.average_precision_score(y_true[:, j], scores[:, j]) for j in range(y_true.shape[1])]
    got = compute_metrics(y_true, y_pred, scores)["map"]
    assert got == pytest.approx(expected, abs=TOL)
    assert got == pytest.approx(float(np.mean(per_column)), abs=TOL)


def _brute_ranking(y_true, scores) -> dict[str, float]:
    """P@k and nDCG@k by plain Python, averaged over every order of the labels that the scores allow (each order of
    the tied labels equally likely): the documented tie rule, by enumeration rather than by its formula."""
    p_at = {k: 0.0 for k in TOP_K}
    ndcg = {k: [] for k in NDCG_K}
    for truth, row in zip(y_true.tolist(), scores.tolist(), strict=True):
        orders = [o for o in itertools.permutations(range(len(row)))
                  if all(row[a] >= row[b] for a, b in itertools.pairwise(o))]
        n_true = sum(truth)
        for k in TOP_K:
            p_at[k] += sum(sum(truth[j] for j in o[:k]) / k for o in orders) / len(orders)
        for k in NDCG_K:
            if n_true:
                ideal = sum(1 / math.log2(i + 2) for i in range(min(k, n_true)))
                dcg = [sum(truth[j] / math.log2(i + 2) for i, j in enumerate(o[:k])) for o in orders]
                ndcg[k].append(sum(dcg) / len(dcg) / ideal)
    out = {f"p_at_{k}": v / len(scores) for k, v in p_at.items()}
    out.update({f"ndcg_at_{k}": (sum(v) / len(v) if v else 0.0) for k, v in ndcg.items()})
    return out


@FAST
@given(multilabel(min_labels=1, max_labels=6, max_rows=5))
def test_precision_and_ndcg_at_k_match_brute_force(data):
    y_true, y_pred, scores = data
    got = compute_metrics(y_true, y_pred, scores)
    for key, expected in _brute_ranking(y_true, scores).items():
        assert got[key] == pytest.approx(expected, abs=TOL), key


@FAST
@given(multilabel(min_labels=2, max_labels=12, max_rows=20, score_levels=3))
def test_ndcg_matches_sklearn_with_ties_on_rows_with_true_labels(data):
    y_true, y_pred, scores = data
    has = y_true.any(axis=1)
    if not has.any():
        return
    got = compute_metrics(y_true[has], y_pred[has], scores[has])
    for k in NDCG_K:
        expected = skm.ndcg_score(y_true[has].astype(float), scores[has], k=k, ignore_ties=False)
        assert got[f"ndcg_at_{k}"] == pytest.approx(expected, abs=TOL), k


def test_ranking_ties_count_at_their_expected_value_not_by_column_order():
    """Column order is training frequency: breaking ties by it handed a collapsed scorer the frequent labels' hits."""
    y_true = np.array([[0, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0]], dtype=bool)
    scores = np.array([[0.5, 0.5, 0.5, 0.5, 0.5, 0.5], [0.1, 0.1, 0.9, 0.1, 0.1, 0.1]])
    got = compute_metrics(y_true, y_true, scores)
    # row 0: one true label among six equal scores; row 1: one among the five tied behind the best
    assert got["p_at_1"] == pytest.approx((1 / 6 + 0) / 2) and got["p_at_3"] == pytest.approx((1 / 6 + 2 / 15) / 2)
    d2, d3 = 1 / math.log2(3), 1 / 2
    assert got["ndcg_at_3"] == pytest.approx(((1 + d2 + d3) / 6 + (d2 + d3) / 5) / 2)
    frequent_first = np.zeros((4, 4), dtype=bool)
    frequent_first[:, 0] = True  # every row has the first (most frequent) label; constant scores know nothing
    constant = compute_metrics(frequent_first, frequent_first, np.zeros((4, 4)))
    assert constant["p_at_1"] == pytest.approx(0.25) and constant["ndcg_at_3"] < 1  # column order: 1.0 and 1.0


def test_ranking_uses_chunks_consistently(monkeypatch):
    import llmcls.metrics as metrics

    rng = np.random.default_rng(0)
    y_true, scores = rng.random((300, 9)) < 0.3, rng.integers(0, 5, (300, 9)).astype(float)
    whole = compute_metrics(y_true, y_true, scores)
    monkeypatch.setattr(metrics, "_ROW_CHUNK_CELLS", 50)  # several row chunks
    monkeypatch.setattr(metrics, "_COUNT_CHUNK_CELLS", 40)
    monkeypatch.setattr(metrics, "_COL_BLOCK_CELLS", 700)  # several column blocks
    monkeypatch.setattr(metrics, "_SLAB_ROWS", 7)
    chunked = compute_metrics(y_true, y_true, scores)
    assert chunked == pytest.approx(whole, abs=1e-12)


# ---------------------------------------------------------------- per-label metrics
@FAST
@given(multilabel())
def test_per_label_metrics_match_sklearn(data):
    y_true, y_pred, _ = data
    labels = [f"cs.{j}" for j in range(y_true.shape[1])]
    rows = per_label_metrics(y_true, y_pred, labels)
    p, r, f, support = skm.precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
    assert [row["label"] for row in rows] == labels
    np.testing.assert_allclose([row["precision"] for row in rows], p, atol=TOL)
    np.testing.assert_allclose([row["recall"] for row in rows], r, atol=TOL)
    np.testing.assert_allclose([row["f1"] for row in rows], f, atol=TOL)
    assert [row["support"] for row in rows] == support.tolist()
    assert [row["predicted"] for row in rows] == y_pred.sum(axis=0).tolist()
    with pytest.raises(ValueError):
        per_label_metrics(y_true, y_pred, labels[:-1])


# ---------------------------------------------------------------- thresholds
def _micro_f1(y_true, pred) -> float:
    """Micro F1 from counts (sklearn's f1_score would read a one-column array as binary, both classes counted)."""
    denominator = int(y_true.sum()) + int(pred.sum())
    return 2 * int((y_true & pred).sum()) / denominator if denominator else 0.0


def _grid(scores) -> list[float]:
    """Every cut that can change predictions: each distinct score, and one above them all."""
    return [*np.unique(scores).tolist(), float(scores.max()) + 1.0]


def _with(values, min_labels) -> Thresholds:
    return Thresholds(values=np.asarray(values, dtype=np.float64), min_labels=min_labels)


@settings(max_examples=100, derandomize=True, deadline=None)
@given(multilabel(min_labels=1, score_levels=6), st.sampled_from([0, 1, 2]))
def test_global_threshold_is_best_on_exhaustive_grid(data, min_labels):
    y_true, _, scores = data
    scores = scores / 5.0  # non-integer values so midpoints are exercised
    tuned = tune_thresholds(y_true, scores, min_labels=min_labels)
    n_labels = scores.shape[1]
    best = max(_micro_f1(y_true, apply_thresholds(scores, _with([t] * n_labels, min_labels))) for t in _grid(scores))
    assert tuned.validation_micro_f1 == pytest.approx(best, abs=TOL)
    assert _micro_f1(y_true, apply_thresholds(scores, tuned)) == pytest.approx(best, abs=TOL)
    assert not tuned.per_label and np.all(tuned.values == tuned.values[0])


def test_global_threshold_is_a_midpoint_and_handles_nothing_positive():
    y_true = np.array([[1, 0], [0, 1], [0, 0]], dtype=bool)
    scores = np.array([[0.9, 0.1], [0.3, 0.7], [0.2, 0.5]])
    tuned = tune_thresholds(y_true, scores)
    assert tuned.values[0] == pytest.approx((0.7 + 0.5) / 2)  # between the chosen 0.7 and the next lower 0.5
    assert tuned.validation_micro_f1 == 1.0
    empty = tune_thresholds(np.zeros((3, 2), dtype=bool), scores)
    assert not apply_thresholds(scores, empty).any()  # predicting nothing is best: threshold above every score
    assert empty.validation_micro_f1 == 0.0


@settings(max_examples=100, derandomize=True, deadline=None)
@given(multilabel(min_labels=1, score_levels=6), st.sampled_from([0, 1, 2]))
def test_per_label_is_never_worse_and_last_label_is_coordinate_optimal(data, min_labels):
    y_true, _, scores = data
    scores = scores / 5.0
    base = tune_thresholds(y_true, scores, min_labels=min_labels)
    tuned = tune_thresholds(y_true, scores, per_label=True, min_labels=min_labels)
    assert tuned.per_label and tuned.values.shape == (scores.shape[1],)
    assert tuned.validation_micro_f1 >= base.validation_micro_f1 - 1e-12
    assert tuned.validation_micro_f1 == pytest.approx(_micro_f1(y_true, apply_thresholds(scores, tuned)), abs=TOL)
    # Nothing is tuned after the last label, so no single change of its threshold can improve micro F1.
    last = scores.shape[1] - 1
    if y_true[:, last].any():
        for t in _grid(scores[:, last]):
            values = tuned.values.copy()
            values[last] = t
            f1 = _micro_f1(y_true, apply_thresholds(scores, _with(values, min_labels)))
            assert f1 <= tuned.validation_micro_f1 + TOL
    else:
        assert tuned.values[last] == base.values[0]  # a label without validation positives keeps the global one


@settings(max_examples=60, derandomize=True, deadline=None)
@given(multilabel(min_labels=1), st.booleans())
def test_min_labels_one_never_leaves_a_row_empty(data, per_label):
    y_true, _, scores = data
    tuned = tune_thresholds(y_true, scores, per_label=per_label, min_labels=1)
    pred = apply_thresholds(scores, tuned)
    assert pred.any(axis=1).all()


def test_apply_thresholds_shape_dtype_and_top_min_labels():
    scores = np.array([[0.1, 0.2, 0.3], [0.9, 0.8, 0.7], [0.5, 0.5, 0.1]], dtype=np.float32)
    pred = apply_thresholds(scores, _with([0.85, 0.85, 0.85], 0))
    assert pred.dtype == bool and pred.shape == scores.shape
    assert pred.tolist() == [[False, False, False], [True, False, False], [False, False, False]]
    two = apply_thresholds(scores, _with([0.85, 0.85, 0.85], 2))
    assert two.tolist() == [[False, True, True], [True, True, False], [True, True, False]]
    one = apply_thresholds(scores, _with([0.85, 0.85, 0.85], 1))
    assert one.tolist() == [[False, False, True], [True, False, False], [True, False, False]]  # tie: lower index
    with pytest.raises(ValueError):
        apply_thresholds(scores, _with([0.5, 0.5], 0))


def test_float32_scores_compare_against_float64_midpoints():
    low = np.float32(0.3)
    high = np.nextafter(low, np.float32(1))  # adjacent float32 values: the float64 midpoint must still split them
    scores = np.array([[low, high], [0.1, 0.2]], dtype=np.float32)
    y_true = np.array([[0, 1], [0, 0]], dtype=bool)
    tuned = tune_thresholds(y_true, scores)
    assert tuned.validation_micro_f1 == 1.0
    assert apply_thresholds(scores, tuned).tolist() == [[False, True], [False, False]]


def test_thresholds_round_trip_through_json():
    tuned = tune_thresholds(np.eye(3, dtype=bool), np.eye(3) * 0.7 + 0.1, per_label=True, min_labels=1)
    data = json.loads(json.dumps(tuned.to_dict()))
    back = Thresholds.from_dict(data)
    assert set(data) == {"values", "per_label", "min_labels", "validation_micro_f1"}
    assert all(type(v) is float for v in data["values"])
    np.testing.assert_array_equal(back.values, tuned.values)
    assert (back.per_label, back.min_labels, back.validation_micro_f1) == (True, 1, tuned.validation_micro_f1)
    assert back.values.dtype == np.float64


def test_tune_refuses_non_finite_scores():
    with pytest.raises(ValueError):
        tune_thresholds(np.eye(2, dtype=bool), np.array([[np.inf, 0.0], [0.0, 1.0]]))


@pytest.mark.parametrize("min_labels", [0, 1, 2])
def test_per_label_last_step_is_optimal_on_denser_data(min_labels):
    """Bigger seeded cases than the hypothesis ones, so rows often fall back to their top labels."""
    rng = np.random.default_rng(min_labels)
    for _ in range(60):
        n, n_labels = int(rng.integers(5, 30)), int(rng.integers(2, 5))
        y_true = rng.random((n, n_labels)) < rng.uniform(0.1, 0.6)
        scores = rng.integers(0, 8, (n, n_labels)) / 7.0 + 0.3 * y_true
        last = n_labels - 1
        if not y_true[:, last].any():
            continue  # such a label keeps the global threshold by design
        tuned = tune_thresholds(y_true, scores, per_label=True, min_labels=min_labels)
        for t in _grid(scores[:, last]):
            values = tuned.values.copy()
            values[last] = t
            f1 = _micro_f1(y_true, apply_thresholds(scores, _with(values, min_labels)))
            assert f1 <= tuned.validation_micro_f1 + TOL


def test_bootstrap_interval_is_seeded_contains_the_score_and_narrows_with_more_examples():
    from llmcls.metrics import bootstrap_interval

    rng = np.random.default_rng(3)
    gold = rng.random((2000, 12)) < 0.2
    pred = np.where(rng.random(gold.shape) < 0.8, gold, ~gold)  # 80% of the cells right
    score = compute_metrics(gold, pred)["micro_f1"]
    se, low, high = bootstrap_interval(gold, pred, n=300)
    assert low < score < high and 0 < se < high - low
    assert bootstrap_interval(gold, pred, n=300) == (se, low, high)  # seeded
    small_se, small_low, small_high = bootstrap_interval(gold[:50], pred[:50], n=300)
    assert small_se > 3 * se and small_high - small_low > 3 * (high - low)  # ~sqrt(40) wider on 1/40 of the rows
    assert bootstrap_interval(gold, gold, n=50) == (0.0, 1.0, 1.0)
    assert bootstrap_interval(gold, pred, "subset_accuracy", n=50)[0] > 0
    with pytest.raises(ValueError, match="unknown"):
        bootstrap_interval(gold, pred, "p_at_1")
    # the pooled-count path of the micro metrics equals scoring every draw in full
    for key in ("micro_f1", "micro_precision", "micro_recall"):
        rng = np.random.default_rng(7)
        full = np.array([compute_metrics(gold[rows], pred[rows])[key]
                         for rows in (rng.integers(0, len(gold), len(gold)) for _ in range(40))])
        low, high = np.quantile(full, [0.025, 0.975])
        assert bootstrap_interval(gold, pred, key, n=40, seed=7) == pytest.approx(
            (full.std(ddof=1), low, high), abs=1e-12)


def test_bootstrap_difference_is_paired():
    """The paired interval of b - a: centred on the observed difference, seeded, 0 for identical systems, and
    much narrower than the systems' own intervals when they agree on most examples (the point of pairing)."""
    from llmcls.metrics import bootstrap_difference, bootstrap_interval

    rng = np.random.default_rng(5)
    gold = rng.random((400, 10)) < 0.2
    a = np.where(rng.random(gold.shape) < 0.8, gold, ~gold)
    b = a.copy()
    fix = (rng.random(gold.shape) < 0.05) & (a != gold)  # b corrects 5% of a's errors and is otherwise a
    b[fix] = gold[fix]
    observed = compute_metrics(gold, b)["micro_f1"] - compute_metrics(gold, a)["micro_f1"]
    difference, low, high = bootstrap_difference(gold, a, b, n=300)
    assert difference == pytest.approx(observed) and 0 < low < difference < high
    assert bootstrap_difference(gold, a, b, n=300) == (difference, low, high)  # seeded
    assert bootstrap_difference(gold, b, a, n=300) == pytest.approx((-difference, -high, -low))
    _, own_low, own_high = bootstrap_interval(gold, a, n=300)
    assert high - low < (own_high - own_low) / 3  # unpaired intervals would overlap; the paired one excludes 0
    assert bootstrap_difference(gold, a, a, n=50) == (0.0, 0.0, 0.0)
    assert bootstrap_difference(gold, a, b, "macro_f1", n=50)[0] == pytest.approx(
        compute_metrics(gold, b)["macro_f1"] - compute_metrics(gold, a)["macro_f1"])
    with pytest.raises(ValueError, match="shape"):
        bootstrap_difference(gold, a, b[:, :5])


def test_a_threshold_nothing_passes_is_plain_json():
    """+inf (score mode's fallback: no label passes, min_labels decides) is null in thresholds.json, not the
    `Infinity` that strict JSON readers refuse."""
    thresholds = Thresholds(values=np.array([np.inf, 0.5]), per_label=True, min_labels=1)
    text = json.dumps(thresholds.to_dict(), allow_nan=False)  # raises on Infinity
    back = Thresholds.from_dict(json.loads(text))
    np.testing.assert_array_equal(back.values, [np.inf, 0.5])


def test_the_best_min_labels_candidate_wins_and_the_earlier_on_a_tie():
    y_true = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 0]], dtype=bool)
    scores = np.array([[0.9, 0.1, 0.2], [0.8, 0.7, 0.1], [0.1, 0.2, 0.3], [0.2, 0.6, 0.1]])
    seen = []
    best = tune_best_thresholds(y_true, scores, min_labels=[0, 1, 2], report=seen.append)
    assert [t.min_labels for t in seen] == [0, 1, 2]
    top = max(t.validation_micro_f1 for t in seen)
    assert best.validation_micro_f1 == top and best is next(t for t in seen if t.validation_micro_f1 == top)
    assert tune_best_thresholds(y_true, scores, min_labels=[2, 2]).min_labels == 2
    with pytest.raises(ValueError, match="at least one"):
        tune_best_thresholds(y_true, scores, min_labels=[])
