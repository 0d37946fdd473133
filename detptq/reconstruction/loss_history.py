"""Reconstruction loss versus iteration, to see whether a schedule has converged.

``LossRecorder(loss_fn, every, iters)`` wraps a unit's loss: the training
loop calls it once per iteration with gradients on, evaluation calls it under
``torch.no_grad()``. Only the training calls are counted; every ``every``-th
one (and the last) is recorded as ``(iteration, loss)``. Reading one scalar
every ``every`` steps keeps the cost negligible. ``save_loss_curves`` writes a
run's curves to ``loss_curves.json``; ``plot_loss_curves`` draws a few of them
(``tools/run_board.py --plot-loss-curves``) to check that the loss plateaued.
"""
from __future__ import annotations

import json
import os.path as osp
from typing import Any, Dict, List, Sequence, Tuple

import torch
from torch import nn

from detptq.utils.io import write_json_atomic


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


def save_loss_curves(stats: Sequence[Dict[str, Any]], path: str) -> None:
    """Write ``{'units': [{unit, position, p, curve: [[iteration, loss], ...]}, ...]}``."""
    units = [dict(unit=st['unit'], position=st['position'], p=st.get('p'),
                  curve=[list(pt) for pt in st['loss_curve']])
             for st in stats if st.get('loss_curve')]
    write_json_atomic(dict(units=units), path)


def plot_loss_curves(path: str, units: int = 6) -> str:
    """PNG of the training loss vs iteration of ``units`` units spread over the model.

    ``path`` is a run folder (its ``recon/loss_curves.json`` or ``loss_curves.json``) or the
    JSON file itself; the PNG is written beside the JSON and its path returned.
    """
    import matplotlib
    matplotlib.use('Agg')  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    json_path = path
    for candidate in ('recon/loss_curves.json', 'loss_curves.json'):
        if osp.isdir(path) and osp.isfile(osp.join(path, candidate)):
            json_path = osp.join(path, candidate)
    data = None
    if osp.isfile(json_path):
        with open(json_path) as f:
            data = json.load(f)
    if not data or not data.get('units'):
        raise SystemExit(f'no loss curves in {json_path!r} (runs record them with '
                         'recon_cfg.loss_curve_every > 0, as the board configs do)')
    curves = data['units']
    step = max(1, len(curves) // units)
    picked = curves[::step][:units - 1] + [curves[-1]] if len(curves) > units else curves
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for unit in picked:
        its, losses = zip(*unit['curve'])
        ax.plot(its, losses, label=f"{unit['position']}: {unit['unit']} (p={unit['p']:g})")
    ax.set_yscale('log')
    ax.set_xlabel('iteration')
    ax.set_ylabel('reconstruction loss (train batch)')
    ax.set_title(osp.basename(osp.dirname(osp.abspath(json_path))) or 'loss curves')
    ax.legend(fontsize=7)
    fig.tight_layout()
    png = osp.join(osp.dirname(json_path), 'loss_curves.png')
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png
