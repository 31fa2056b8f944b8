"""Multi-label losses: pure functions of ``logits`` (n_examples, n_labels) and ``targets`` of the same shape.

Targets: 1 (or any value > 0) marks a positive entry, 0 a negative one, and a value < 0 an entry to ignore (an
unknown label). Both losses compute in float32 whatever the logits' dtype, so they are safe under bf16 autocast.

- :func:`two_way_loss`: Kobayashi, "Two-way Multi-Label Loss", CVPR 2023. For a set S of entries (one row or one
  column of the batch) with positives P and negatives N,

      n(S) = tn * logsumexp_{j in S∩N}(x_j / tn)      p(S) = tp * logsumexp_{j in S∩P}(-x_j / tp)
      l(S) = softplus(n(S) + p(S))

  a smooth version of "the hardest negative should score below the hardest positive" (for tp = tn = 1,
  l(S) = log(1 + sum over (negative, positive) pairs of exp(x_n - x_p))). The loss is the mean of l over the
  columns (labels) that have a positive in the batch plus the mean over the rows (examples) that have one. Only
  differences of logits enter, so adding a constant to every logit changes nothing: the logits carry no natural
  cut at 0, and the decision threshold must be tuned on validation data.
- :func:`bce_loss`: binary cross-entropy on each entry (the usual baseline), with an optional ``pos_weight``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["LOSSES", "bce_loss", "two_way_loss"]


def _masked_logsumexp(values: torch.Tensor, mask: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """logsumexp of ``values`` over the entries where ``mask`` holds, along ``dim``, and whether any entry did.

    Where no entry is selected the value returned is 0 (not -inf) and no gradient flows: torch.logsumexp over an
    all -inf slice has a NaN gradient, which would poison the whole batch even when the slice is later dropped.
    """
    has_any = mask.any(dim=dim)
    shift = values.masked_fill(~mask, float("-inf")).amax(dim=dim, keepdim=True)
    # The shift cancels out mathematically; detached, it adds no gradient terms, and 0 for empty slices keeps it
    # finite.
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift)).detach()
    # Masked entries become exp(-inf) = 0 before the exp: exp of an unselected large value would overflow, and
    # torch.where would turn its inf into a NaN gradient.
    total = torch.exp((values - shift).masked_fill(~mask, float("-inf"))).sum(dim=dim)
    result = shift.squeeze(dim) + torch.log(torch.where(has_any, total, torch.ones_like(total)))
    return torch.where(has_any, result, torch.zeros_like(result)), has_any


def _set_losses(x: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, dim: int, tp: float,
                tn: float) -> tuple[torch.Tensor, torch.Tensor]:
    """l(S) for every slice S along ``dim`` (rows: dim=1, columns: dim=0) and which slices have a positive."""
    n_term, has_neg = _masked_logsumexp(x / tn, neg, dim)
    p_term, has_pos = _masked_logsumexp(-x / tp, pos, dim)
    # A slice without negatives has n(S) = -inf, hence l(S) = softplus(-inf) = 0: written out, not computed.
    per_set = torch.where(has_neg, F.softplus(tn * n_term + tp * p_term), torch.zeros_like(n_term))
    return per_set, has_pos


def _mean_where(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``keep`` holds; 0 (with a zero gradient) when it holds nowhere."""
    kept = torch.where(keep, values, torch.zeros_like(values))
    return kept.sum() / keep.sum().clamp(min=1)


def two_way_loss(logits: torch.Tensor, targets: torch.Tensor, tp: float = 4.0, tn: float = 1.0) -> torch.Tensor:
    """The Two-Way multi-label loss (see the module docstring); a scalar, float32.

    ``tp`` and ``tn`` are the temperatures of the positive and negative logsumexp (the paper's defaults, 4 and 1:
    a soft minimum over positives, a harder maximum over negatives).
    """
    _check(logits, targets)
    if tp <= 0 or tn <= 0:
        raise ValueError(f"temperatures must be positive, got tp={tp}, tn={tn}")
    x = logits.float()
    pos, neg = targets > 0, targets == 0
    per_column, column_has_pos = _set_losses(x, pos, neg, dim=0, tp=tp, tn=tn)
    per_row, row_has_pos = _set_losses(x, pos, neg, dim=1, tp=tp, tn=tn)
    return _mean_where(per_column, column_has_pos) + _mean_where(per_row, row_has_pos)


def bce_loss(logits: torch.Tensor, targets: torch.Tensor, pos_weight: float | torch.Tensor | None = None
             ) -> torch.Tensor:
    """Binary cross-entropy with logits, averaged over the entries that are not ignored; a scalar, float32.

    ``pos_weight`` (a number, or one per label) multiplies the loss of positive entries: values above 1 trade
    precision for recall on rare labels.
    """
    _check(logits, targets)
    x = logits.float()
    known = targets >= 0
    weight = None
    if pos_weight is not None:
        weight = torch.as_tensor(pos_weight, dtype=torch.float32, device=x.device)
    per_entry = F.binary_cross_entropy_with_logits(x, (targets > 0).float(), pos_weight=weight, reduction="none")
    return _mean_where(per_entry, known)


def _check(logits: torch.Tensor, targets: torch.Tensor) -> None:
    if logits.ndim != 2 or logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must be the same "
                         "(n_examples, n_labels) shape")


# name -> function, for the --loss option
LOSSES = {"twoway": two_way_loss, "bce": bce_loss}
