"""YOLOv6 efficient decoupled head (anchor-free, non-DFL or DFL).

Per level: ``stems`` (1x1), ``cls_convs`` / ``reg_convs`` (3x3), then
``cls_preds`` (C logits) and ``reg_preds`` (4 ltrb distances in stride units,
or 4*(reg_max+1) DFL logits). Names mirror the official ``Detect`` module so
its keys map by prefix (``detect.`` -> ``bbox_head.``).

Official training-only branches can be created for key parity
(``aux_branch='ab'``: ``cls_preds_ab`` / ``reg_preds_ab`` of the fused
anchor-based branch; ``aux_branch='distill_ns'``: ``reg_preds_dist``, the DFL
branch of the N/S self-distillation head). They are not used by our forward
or loss and ``switch_to_deploy`` drops them.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
from mmdet.models.dense_heads.base_dense_head import BaseDenseHead
from mmengine.structures import InstanceData
from torch import nn

# registers mmdet's assigner and losses so configs can name them
import mmdet.models.losses  # noqa: F401
import mmdet.models.task_modules  # noqa: F401
from detptq.registry import MODELS, TASK_UTILS
from ..layers import ConvBNAct, scale_channels
from .tal_loss import TaskAlignedLossMixin
from .yolo_postprocess import anchor_points, dist2bbox, postprocess_batch


class DFLIntegral(nn.Module):
    """Expected value of a softmax over reg_max+1 bins (the DFL integral).

    Holds the fixed bin values as a buffer named ``weight`` so the official
    ``detect.proj_conv.weight`` key maps onto it; not an ``nn.Conv2d`` so
    quantizers leave it alone.
    """

    def __init__(self, reg_max: int) -> None:
        super().__init__()
        self.reg_max = reg_max
        self.register_buffer('weight', torch.linspace(
            0, reg_max, reg_max + 1).view(1, reg_max + 1, 1, 1))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        """(..., 4*(reg_max+1)) logits -> (..., 4) distances."""
        bins = self.reg_max + 1
        prob = logits.reshape(*logits.shape[:-1], 4, bins).softmax(-1)
        return prob @ self.weight.reshape(bins).to(prob.dtype)


@MODELS.register_module()
class YOLOv6Head(TaskAlignedLossMixin, BaseDenseHead):
    """Efficient decoupled head of YOLOv6 (see module docstring)."""

    def __init__(self,
                 num_classes: int = 80,
                 in_channels: Sequence[int] = (128, 256, 512),
                 width_multiple: float = 1.0,
                 strides: Sequence[int] = (8, 16, 32),
                 reg_max: int = 0,
                 act: str = 'SiLU',
                 prior_prob: float = 0.01,
                 aux_branch: Optional[str] = None,
                 aux_num_anchors: int = 3,
                 aux_reg_max: int = 16,
                 loss_cls: dict = dict(type='VarifocalLoss', use_sigmoid=True,
                                       alpha=0.75, gamma=2.0,
                                       iou_weighted=True, loss_weight=1.0),
                 loss_bbox: dict = dict(type='GIoULoss', loss_weight=2.5),
                 loss_dfl: Optional[dict] = dict(type='DistributionFocalLoss',
                                                 loss_weight=0.5),
                 train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.num_classes = num_classes
        self.in_channels = scale_channels(list(in_channels), width_multiple)
        self.strides = list(strides)
        self.reg_max = reg_max
        self.prior_prob = prior_prob
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg
        self.aux_branch = aux_branch

        self.stems = nn.ModuleList()
        self.cls_convs = nn.ModuleList()
        self.reg_convs = nn.ModuleList()
        self.cls_preds = nn.ModuleList()
        self.reg_preds = nn.ModuleList()
        for c in self.in_channels:
            self.stems.append(ConvBNAct(c, c, 1, 1, act=act))
            self.cls_convs.append(ConvBNAct(c, c, 3, 1, act=act))
            self.reg_convs.append(ConvBNAct(c, c, 3, 1, act=act))
            self.cls_preds.append(nn.Conv2d(c, num_classes, 1))
            self.reg_preds.append(nn.Conv2d(c, 4 * (reg_max + 1), 1))
        self._build_aux(aux_branch, aux_num_anchors, aux_reg_max)
        # constants of the official head, kept for key parity
        self.register_buffer('proj', torch.linspace(0, reg_max, reg_max + 1))
        self.proj_conv = DFLIntegral(reg_max)

        self.loss_cls = MODELS.build(loss_cls)
        self.loss_bbox = MODELS.build(loss_bbox)
        self.loss_dfl = (MODELS.build(loss_dfl)
                         if reg_max > 0 and loss_dfl is not None else None)
        assigner = (train_cfg or {}).get(
            'assigner', dict(type='TaskAlignedAssigner', topk=13))
        self.assigner = TASK_UTILS.build(assigner)
        self.init_pred_layers()

    def _build_aux(self, kind: Optional[str], num_anchors: int,
                   aux_reg_max: int) -> None:
        """Training-only official branches (key parity only, see docstring)."""
        if kind is None:
            return
        if kind == 'ab':
            self.cls_preds_ab = nn.ModuleList(
                nn.Conv2d(c, self.num_classes * num_anchors, 1)
                for c in self.in_channels)
            self.reg_preds_ab = nn.ModuleList(
                nn.Conv2d(c, 4 * num_anchors, 1) for c in self.in_channels)
        elif kind == 'distill_ns':
            self.reg_preds_dist = nn.ModuleList(
                nn.Conv2d(c, 4 * (aux_reg_max + 1), 1)
                for c in self.in_channels)
        else:
            raise ValueError(f"aux_branch must be None, 'ab' or "
                             f"'distill_ns', got {kind!r}")

    # -------------------------------------------------------------- init
    @torch.no_grad()
    def init_pred_layers(self) -> None:
        """Official init: zero weights, cls bias at prior prob, reg bias 1."""
        cls_bias = -math.log((1 - self.prior_prob) / self.prior_prob)
        for conv in self.cls_preds:
            conv.weight.zero_()
            conv.bias.fill_(cls_bias)
        for conv in self.reg_preds:
            conv.weight.zero_()
            conv.bias.fill_(1.0)

    def init_weights(self) -> None:
        """BaseModule init, then the prediction-layer init above."""
        super().init_weights()
        self.init_pred_layers()

    # ----------------------------------------------------------- forward
    def forward(self, feats: Sequence[torch.Tensor]
                ) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """Per level: cls logits (B, C, H, W), box regression (B, 4[*(R+1)], H, W)."""
        cls_scores, bbox_preds = [], []
        for i, x in enumerate(feats):
            x = self.stems[i](x)
            cls_scores.append(self.cls_preds[i](self.cls_convs[i](x)))
            bbox_preds.append(self.reg_preds[i](self.reg_convs[i](x)))
        return cls_scores, bbox_preds

    def flatten_preds(self, cls_scores: Sequence[torch.Tensor],
                      bbox_preds: Sequence[torch.Tensor]
                      ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Concatenate levels: (B, N, C) logits and (B, N, 4[*(R+1)]) raw reg."""
        cls = torch.cat([c.flatten(2) for c in cls_scores], 2).transpose(1, 2)
        reg = torch.cat([r.flatten(2) for r in bbox_preds], 2).transpose(1, 2)
        return cls, reg

    def integrate(self, reg_raw: torch.Tensor) -> torch.Tensor:
        """Raw regression -> ltrb distances in stride units (DFL integrated)."""
        if self.reg_max == 0:
            return reg_raw
        return self.proj_conv(reg_raw)

    def dense_outputs(self, cls_scores: Sequence[torch.Tensor],
                      bbox_preds: Sequence[torch.Tensor]
                      ) -> Tuple[torch.Tensor, torch.Tensor]:
        """(B, N, C) class probabilities and (B, N, 4) ltrb in stride units."""
        cls, reg = self.flatten_preds(cls_scores, bbox_preds)
        return cls.sigmoid(), self.integrate(reg)

    # ----------------------------------------------------------- predict
    def predict_by_feat(self,
                        cls_scores: List[torch.Tensor],
                        bbox_preds: List[torch.Tensor],
                        score_factors: Optional[List[torch.Tensor]] = None,
                        batch_img_metas: Optional[List[dict]] = None,
                        cfg: Optional[dict] = None,
                        rescale: bool = True,
                        with_nms: bool = True) -> List[InstanceData]:
        """Decode, threshold, NMS and map boxes to original image coords."""
        cfg = cfg if cfg is not None else self.test_cfg
        if cfg is None:
            raise ValueError('YOLOv6Head needs a test_cfg to predict')
        cls_prob, ltrb = self.dense_outputs(cls_scores, bbox_preds)
        points, strides = anchor_points([c.shape[-2:] for c in cls_scores],
                                        self.strides, cls_prob.device,
                                        ltrb.dtype)
        boxes = dist2bbox(points, ltrb * strides)
        return postprocess_batch(boxes, cls_prob, batch_img_metas, cfg,
                                 rescale=rescale, with_nms=with_nms)

    # ------------------------------------------------------------ deploy
    def switch_to_deploy(self) -> None:
        """Drop the training-only official branches, if any were built."""
        for name in ('cls_preds_ab', 'reg_preds_ab', 'reg_preds_dist'):
            if hasattr(self, name):
                delattr(self, name)
        self.aux_branch = None
