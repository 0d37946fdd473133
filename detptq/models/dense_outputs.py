"""The detector's dense-output contract: what ODOL, the p search and sensitivity analysis compare.

``bbox_head.dense_outputs(cls_scores, bbox_preds) -> (cls_prob (B, N, C), ltrb (B, N, 4))``
(docs/ARCHITECTURE.md, "Detector"); ``default_dense_fn`` runs a detector up to it.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn


def default_dense_fn(model: nn.Module, inputs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """backbone -> neck -> bbox_head -> bbox_head.dense_outputs (docs/ARCHITECTURE.md)."""
    feats = model.extract_feat(inputs)
    outs = model.bbox_head(feats)
    return model.bbox_head.dense_outputs(outs[0], outs[1])
