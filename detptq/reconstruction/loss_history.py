"""Reconstruction loss versus iteration, to see whether a schedule has converged.

``LossRecorder(loss_fn, every, iters)`` wraps a unit's loss: the training
loop calls it once per iteration with gradients on, evaluation calls it under
``torch.no_grad()``. Only the training calls are counted; every ``every``-th
one (and the last) is recorded as ``(iteration, loss)``. Reading one scalar
every ``every`` steps keeps the cost negligible.
"""
from __future__ import annotations

from typing import Any, List, Tuple

import torch
from torch import nn


class LossRecorder(nn.Module):
    """A loss module that forwards to ``loss_fn`` and keeps a sparse training-loss history."""

    def __init__(self, loss_fn: nn.Module, every: int, iters: int) -> None:
        super().__init__()
        if every < 1:
            raise ValueError(f'LossRecorder: every={every} must be >= 1')
        self.loss_fn = loss_fn
        self.every = every
        self.iters = iters
        self.calls = 0
        self.history: List[Tuple[int, float]] = []

    def forward(self, pred: Any, target: Any) -> torch.Tensor:
        loss = self.loss_fn(pred, target)
        if torch.is_grad_enabled():  # a training step, not an evaluation
            t = self.calls
            self.calls += 1
            if t % self.every == 0 or t == self.iters - 1:
                self.history.append((t, float(loss.detach())))
        return loss
