"""Lp reconstruction loss (docs/METHOD.md section 6).

``LpLoss(p)(y_q, y_fp)`` = mean over the batch (and spatial positions) of the
sum over channels of ``|y_q - y_fp|^p``, the loss BRECQ/QDrop minimise per
unit; DetPTQ swaps the fixed p = 2 for a per-layer p*. Tuples/lists of outputs
(units with several outputs) add up their per-output losses.

``l2_units=True`` returns ``loss ** (2 / p)``: the same minimiser and gradient
direction, but a size comparable to the p = 2 loss, so the rounding
regulariser's lambda (tuned for p = 2) keeps its weight for every p.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import nn

TensorOrSeq = Union[torch.Tensor, Sequence[torch.Tensor]]


def lp_error(pred: torch.Tensor, target: torch.Tensor, p: float,
             reduction: str = 'channel_sum') -> torch.Tensor:
    """|pred - target|^p reduced: 'channel_sum' (sum dim 1, mean rest), 'mean', 'none'."""
    diff = pred - target
    # p = 2: diff * diff has the values and gradients of |diff|^2 with fewer passes
    err = diff * diff if p == 2.0 else diff.abs().pow(p)
    if reduction == 'none':
        return err
    if reduction == 'mean':
        return err.mean()
    if reduction == 'channel_sum':
        # a vector or (B,) output has no channel axis: plain mean over the batch
        return err.sum(1).mean() if err.dim() > 1 else err.mean()
    raise ValueError(f'unknown reduction {reduction!r}')


class LpLoss(nn.Module):
    """Batch mean of the channel sum of |y_q - y_fp|^p; sums over multi-output units."""

    def __init__(self, p: float = 2.0, reduction: str = 'channel_sum',
                 l2_units: bool = False) -> None:
        super().__init__()
        if p <= 0:
            raise ValueError(f'p must be positive, got {p}')
        self.p = float(p)
        self.reduction = reduction
        self.l2_units = l2_units

    def _total(self, pred: TensorOrSeq, target: TensorOrSeq) -> torch.Tensor:
        if isinstance(pred, torch.Tensor):
            return lp_error(pred, target, self.p, self.reduction)
        if len(pred) != len(target):
            raise ValueError('pred and target have different numbers of outputs')
        return sum(self._total(a, b) for a, b in zip(pred, target))

    def forward(self, pred: TensorOrSeq, target: TensorOrSeq) -> torch.Tensor:
        total = self._total(pred, target)
        if self.l2_units and self.p != 2.0:
            # clamp: the root's gradient is infinite at an exact zero loss
            total = total.clamp_min(1e-12).pow(2.0 / self.p)
        return total

    def extra_repr(self) -> str:
        return f'p={self.p}, reduction={self.reduction!r}, l2_units={self.l2_units}'
