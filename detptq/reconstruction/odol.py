"""ODOL, the Object Detection Output Loss (docs/METHOD.md section 7).

Compares a detector's dense predictions before NMS, as produced by
``bbox_head.dense_outputs`` (docs/ARCHITECTURE.md): ``cls_prob`` (B, N, C)
sigmoid probabilities and ``ltrb`` (B, N, 4) box distances in stride units.

    ODOL = cls_weight * KL(cls_fp || cls_q) + box_weight * L1(ltrb_fp, ltrb_q)

Each class probability is a Bernoulli variable (YOLO heads use independent
sigmoids, not a softmax), so the KL per anchor is the sum over classes of the
Bernoulli KL; the L1 per anchor is the sum over the 4 distances. Both are then
averaged over anchors and images (our choice; docs/METHOD.md leaves it open).
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn


def bernoulli_kl(p: torch.Tensor, q: torch.Tensor,
                 eps: float = 1e-6) -> torch.Tensor:
    """Elementwise KL(Bernoulli(p) || Bernoulli(q)), clamped away from 0 and 1."""
    p = p.clamp(eps, 1 - eps)
    q = q.clamp(eps, 1 - eps)
    return p * (p.log() - q.log()) + (1 - p) * ((1 - p).log() - (1 - q).log())


class ODOL(nn.Module):
    """KL on per-class Bernoulli probabilities + L1 on ltrb distances, per image or mean."""

    def __init__(self, cls_weight: float = 1.0, box_weight: float = 1.0,
                 eps: float = 1e-6) -> None:
        super().__init__()
        self.cls_weight = cls_weight
        self.box_weight = box_weight
        self.eps = eps

    def components(self, fp: Tuple[torch.Tensor, torch.Tensor],
                   q: Tuple[torch.Tensor, torch.Tensor]
                   ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per-image (B,) KL and L1 terms, each averaged over anchors."""
        cls_fp, box_fp = fp
        cls_q, box_q = q
        if cls_fp.shape != cls_q.shape or box_fp.shape != box_q.shape:
            raise ValueError(f'shape mismatch: cls {tuple(cls_fp.shape)} vs '
                             f'{tuple(cls_q.shape)}, box {tuple(box_fp.shape)} '
                             f'vs {tuple(box_q.shape)}')
        # float64: the KL of nearly equal tiny probabilities cancels badly in fp32
        kl = bernoulli_kl(cls_fp.double(), cls_q.double(), self.eps)
        l1 = (box_fp.double() - box_q.double()).abs()
        return kl.sum(-1).flatten(1).mean(1), l1.sum(-1).flatten(1).mean(1)

    def forward(self, fp: Tuple[torch.Tensor, torch.Tensor],
                q: Tuple[torch.Tensor, torch.Tensor],
                reduction: str = 'mean') -> torch.Tensor:
        """ODOL between FP and quantized dense outputs; reduction 'mean' or 'none' (per image)."""
        kl, l1 = self.components(fp, q)
        per_image = self.cls_weight * kl + self.box_weight * l1
        if reduction == 'none':
            return per_image
        if reduction == 'mean':
            return per_image.mean()
        raise ValueError(f'unknown reduction {reduction!r}')

    def extra_repr(self) -> str:
        return f'cls_weight={self.cls_weight}, box_weight={self.box_weight}'
