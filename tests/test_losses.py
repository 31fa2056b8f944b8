"""losses.py against brute-force references written from the definitions, plus its numerical edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from llmcls.losses import LOSSES, bce_loss, two_way_loss


def random_batch(seed: int, n: int, c: int, ignore: float = 0.0, scale: float = 3.0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, scale, size=(n, c))
    targets = (rng.random((n, c)) < 0.3).astype(np.float64)
    targets[rng.random((n, c)) < ignore] = -1
    return torch.tensor(logits, dtype=torch.float64), torch.tensor(targets, dtype=torch.float64)


def reference_set_loss(x: list[float], t: list[float], tp: float, tn: float) -> float | None:
    """l(S) from the definition, in float64 Python; None for a set without positives (left out of the mean)."""
    pos = [v for v, y in zip(x, t, strict=True) if y > 0]
    neg = [v for v, y in zip(x, t, strict=True) if y == 0]
    if not pos:
        return None
    if not neg:
        return 0.0  # n(S) = -inf
    n_term = tn * math.log(sum(math.exp(v / tn) for v in neg))
    p_term = tp * math.log(sum(math.exp(-v / tp) for v in pos))
    return math.log1p(math.exp(n_term + p_term))


def reference_pairs(x: list[float], t: list[float]) -> float | None:
    """For tp = tn = 1: log(1 + sum over (negative, positive) pairs of exp(x_n - x_p))."""
    pos = [v for v, y in zip(x, t, strict=True) if y > 0]
    neg = [v for v, y in zip(x, t, strict=True) if y == 0]
    if not pos:
        return None
    return math.log1p(sum(math.exp(n - p) for n in neg for p in pos))


def reference_two_way(logits: torch.Tensor, targets: torch.Tensor, set_loss) -> float:
    x, t = logits.tolist(), targets.tolist()
    rows = [set_loss(x[i], t[i]) for i in range(len(x))]
    cols = [set_loss([r[j] for r in x], [r[j] for r in t]) for j in range(len(x[0]))]
    total = 0.0
    for values in (cols, rows):
        kept = [v for v in values if v is not None]
        total += sum(kept) / len(kept) if kept else 0.0
    return total


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("tp", "tn"), [(4.0, 1.0), (1.0, 1.0), (0.5, 2.0)])
def test_two_way_matches_the_definition(seed, tp, tn):
    logits, targets = random_batch(seed, n=7, c=5, ignore=0.15 if seed % 2 else 0.0)
    expected = reference_two_way(logits, targets, lambda x, t: reference_set_loss(x, t, tp, tn))
    assert two_way_loss(logits, targets, tp=tp, tn=tn).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_two_way_at_unit_temperatures_is_the_pairwise_softplus(seed):
    logits, targets = random_batch(seed, n=6, c=8)
    expected = reference_two_way(logits, targets, reference_pairs)
    assert two_way_loss(logits, targets, tp=1.0, tn=1.0).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("shift", [-50.0, 7.5, 1e3])
def test_two_way_is_invariant_to_a_constant_added_to_every_logit(shift):
    logits, targets = random_batch(1, n=16, c=10)
    base = two_way_loss(logits, targets)
    assert two_way_loss(logits + shift, targets).item() == pytest.approx(base.item(), rel=1e-5)
    # BCE is not: it is what gives sigmoid(0) its meaning
    assert bce_loss(logits + shift, targets).item() != pytest.approx(bce_loss(logits, targets).item(), rel=1e-3)


@pytest.mark.parametrize("loss_name", sorted(LOSSES))
def test_ignored_entries_have_no_effect_and_no_gradient(loss_name):
    loss_fn = LOSSES[loss_name]
    logits, targets = random_batch(3, n=9, c=6, ignore=0.2)
    ignored = targets < 0
    assert ignored.any()
    changed = logits.clone()
    changed[ignored] = torch.randn(int(ignored.sum()), dtype=torch.float64) * 100
    assert loss_fn(changed, targets).item() == pytest.approx(loss_fn(logits, targets).item(), rel=1e-6)
    x = logits.clone().requires_grad_(True)
    loss_fn(x, targets).backward()
    assert torch.all(x.grad[ignored] == 0) and x.grad[~ignored].abs().sum() > 0


@pytest.mark.parametrize(("logits", "targets", "expected"), [
    ([[0.3]], [[1.0]], 0.0),  # one positive: its row and column have no negatives, l = softplus(-inf) = 0
    ([[0.3]], [[0.0]], 0.0),  # no positive anywhere: no set enters either mean
    ([[2.0, -1.0]], [[1.0, 1.0]], 0.0),  # a row of positives only
    ([[-1.0, -1.0], [5.0, 3.0]], [[0.0, 0.0], [0.0, 0.0]], 0.0),  # all negative
    ([[1.0, 1.0]], [[1.0, 0.0]], math.log(2.0)),  # row: softplus(1 - 1); the positive's column has no negative
])
def test_two_way_tiny_batches_are_finite_with_finite_gradients(logits, targets, expected):
    x = torch.tensor(logits, requires_grad=True)
    loss = two_way_loss(x, torch.tensor(targets), tp=1.0, tn=1.0)
    loss.backward()
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert torch.isfinite(x.grad).all()


def test_two_way_large_batch_with_extreme_logits():
    torch.manual_seed(0)
    logits = (torch.randn(1024, 500) * 1e4).requires_grad_(True)
    targets = (torch.rand(1024, 500) < 0.01).float()
    targets[:, :3] = 0  # columns with no positive
    targets[:5] = 1  # rows with no negative
    loss = two_way_loss(logits, targets)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_two_way_gradient_pushes_positives_up_and_negatives_down():
    logits, targets = random_batch(5, n=8, c=6)
    x = logits.clone().requires_grad_(True)
    two_way_loss(x, targets).backward()
    # descent direction is -grad: positive entries rise (grad <= 0), negative entries fall (grad >= 0)
    assert torch.all(x.grad[targets > 0] <= 0) and torch.all(x.grad[targets == 0] >= 0)


def test_two_way_under_bf16_autocast_matches_float32():
    torch.manual_seed(0)
    layer = torch.nn.Linear(16, 12)
    features = torch.randn(32, 16)
    targets = (torch.rand(32, 12) < 0.25).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = layer(features)
        loss = two_way_loss(logits, targets)
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    loss.backward()
    assert all(torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in layer.parameters())
    reference = two_way_loss(logits.detach().float(), targets)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    assert loss.item() == pytest.approx(two_way_loss(layer(features), targets).item(), rel=0.05)


def test_bce_matches_torch_and_pos_weight_weights_positives():
    logits, targets = random_batch(2, n=10, c=7)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
    assert bce_loss(logits, targets).item() == pytest.approx(expected.item(), rel=1e-6)
    weighted = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets,
                                                                    pos_weight=torch.full((7,), 3.0))
    assert bce_loss(logits, targets, pos_weight=3.0).item() == pytest.approx(weighted.item(), rel=1e-6)
    assert bce_loss(logits, targets, pos_weight=3.0) > bce_loss(logits, targets)


@pytest.mark.parametrize("loss_name", sorted(LOSSES))
def test_shape_mismatch_is_an_error(loss_name):
    with pytest.raises(ValueError, match="same"):
        LOSSES[loss_name](torch.zeros(2, 3), torch.zeros(3, 2))


@pytest.mark.parametrize("loss_name", sorted(LOSSES))
def test_integer_targets_give_the_same_loss(loss_name):
    logits, targets = random_batch(4, n=5, c=6, ignore=0.1)
    as_int = LOSSES[loss_name](logits, targets.to(torch.int8))
    assert as_int.item() == pytest.approx(LOSSES[loss_name](logits, targets).item(), rel=1e-7)
