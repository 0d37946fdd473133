"""YOLOv7 anchor-based head (official ``IDetect``; ``Detect`` with ``use_implicit=False``).

Inference only: there is no YOLOv7 training loss in detptq (the project
trains YOLOv6 models; YOLOv7 is quantized from converted official weights).
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.config import ConfigDict
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from torch import Tensor, nn

from detptq.registry import MODELS

from ..layers.elan import ImplicitPredConv
from .yolo_postprocess import postprocess_batch

# Official anchors (pixels) per level, strides 8/16/32.
YOLOV7_ANCHORS = (((12, 16), (19, 36), (40, 28)),
                  ((36, 75), (76, 55), (72, 146)),
                  ((142, 110), (192, 243), (459, 401)))
YOLOV7_TINY_ANCHORS = (((10, 13), (16, 30), (33, 23)),
                       ((30, 61), (62, 45), (59, 119)),
                       ((116, 90), (156, 198), (373, 326)))
# Official YOLOv7 test.py: conf 0.001 on obj*cls, IoU 0.65, multi-label, 300 boxes.
YOLOV7_TEST_CFG = dict(score_thr=0.001, nms_pre=30000,
                       nms=dict(type='nms', iou_threshold=0.65),
                       max_per_img=300, multi_label=True)


@MODELS.register_module()
class YOLOv7Head(BaseModule):
    """One 1x1 prediction conv per level (with YOLOR implicit layers), 3 anchors per cell.

    Channel layout of the prediction conv (official): for each anchor ``a``
    the ``5 + C`` channels ``x, y, w, h, obj, cls_1..cls_C``.

    ``forward`` splits it into
      * ``cls_scores[l]``: ``(B, A*(1+C), H, W)``, per anchor ``obj, cls_1..C``
        logits (obj first);
      * ``bbox_preds[l]``: ``(B, A*4, H, W)``, per anchor raw ``x, y, w, h``
        logits, decoded as official YOLOv7:
        ``cxy = (2*sigmoid(xy) - 0.5 + grid) * stride``,
        ``wh = (2*sigmoid(wh))**2 * anchor``.
    ``dense_outputs`` flattens priors in (level, anchor, row, col) order.

    There is no loss: ``loss_by_feat`` raises (inference/PTQ only).
    """

    def __init__(self,
                 num_classes: int = 80,
                 in_channels: Sequence[int] = (256, 512, 1024),
                 featmap_strides: Sequence[int] = (8, 16, 32),
                 prior_sizes: Sequence = YOLOV7_ANCHORS,
                 use_implicit: bool = True,
                 test_cfg: Optional[dict] = None,
                 train_cfg: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if not (len(in_channels) == len(featmap_strides) == len(prior_sizes)):
            raise ValueError('in_channels, featmap_strides and prior_sizes '
                             'need one entry per level')
        self.num_classes = num_classes
        self.in_channels = list(in_channels)
        self.featmap_strides = list(featmap_strides)
        self.num_anchors = len(prior_sizes[0])
        self.num_out = 5 + num_classes
        # keys not given in test_cfg keep the official test.py values
        self.test_cfg = ConfigDict({**YOLOV7_TEST_CFG, **(test_cfg or {})})
        self.train_cfg = train_cfg
        # anchors in pixels, shape (levels, anchors, 2); not in the state dict
        # (a config constant; the converters check official files against it)
        self.register_buffer(
            'anchor_sizes', torch.tensor(prior_sizes, dtype=torch.float32),
            persistent=False)
        self.pred_layers = nn.ModuleList(
            ImplicitPredConv(c, self.num_anchors * self.num_out, use_implicit)
            for c in self.in_channels)
        self._prior_cache: Dict[tuple, Tensor] = {}

    def init_weights(self) -> None:
        """Official YOLOv5/7 bias prior: about 8 objects per 640 image, 0.6 class prob."""
        super().init_weights()
        if getattr(self, '_bias_prior_done', False):
            return  # the prior is added to the bias: apply it once only
        for layer, stride in zip(self.pred_layers, self.featmap_strides):
            bias = layer.conv.bias.data.view(self.num_anchors, -1)
            bias[:, 4] += math.log(8 / (640 / stride) ** 2)
            bias[:, 5:] += math.log(0.6 / (self.num_classes - 0.99))
        self._bias_prior_done = True

    # ------------------------------------------------------------- forward
    def forward(self, feats: Sequence[Tensor]) -> Tuple[List[Tensor], List[Tensor]]:
        """Per level (obj+cls logits, raw xywh), see the class docstring."""
        cls_scores, bbox_preds = [], []
        for feat, layer in zip(feats, self.pred_layers):
            pred = layer(feat)
            b, _, h, w = pred.shape
            pred = pred.view(b, self.num_anchors, self.num_out, h, w)
            cls_scores.append(pred[:, :, 4:].reshape(b, -1, h, w))
            bbox_preds.append(pred[:, :, :4].reshape(b, -1, h, w))
        return cls_scores, bbox_preds

    # ------------------------------------------------------------ decoding
    def _flatten(self, maps: Sequence[Tensor], per_anchor: int) -> Tensor:
        """(B, A*K, H, W) per level -> (B, N, K) in (level, anchor, row, col) order."""
        flat = []
        for m in maps:
            b, _, h, w = m.shape
            flat.append(m.view(b, self.num_anchors, per_anchor, h, w)
                        .permute(0, 1, 3, 4, 2).reshape(b, -1, per_anchor))
        return torch.cat(flat, 1)

    def priors(self, featmap_sizes: Sequence[Tuple[int, int]],
               device: torch.device) -> Tensor:
        """(N, 5): cell centre x, y (stride units), stride, anchor w, h (pixels)."""
        key = (tuple(map(tuple, featmap_sizes)), str(device))
        if key not in self._prior_cache:
            out = []
            for lvl, (h, w) in enumerate(featmap_sizes):
                ys, xs = torch.meshgrid(torch.arange(h, device=device),
                                        torch.arange(w, device=device),
                                        indexing='ij')
                centre = torch.stack([xs, ys], -1).view(1, h * w, 2) + 0.5
                centre = centre.expand(self.num_anchors, -1, -1)
                anchors = self.anchor_sizes[lvl].to(device).view(
                    self.num_anchors, 1, 2).expand(-1, h * w, -1)
                stride = centre.new_full((self.num_anchors, h * w, 1),
                                         float(self.featmap_strides[lvl]))
                out.append(torch.cat([centre.float(), stride, anchors], -1)
                           .reshape(-1, 5))
            self._prior_cache[key] = torch.cat(out, 0)
        return self._prior_cache[key]

    def dense_outputs(self, cls_scores: Sequence[Tensor],
                      bbox_preds: Sequence[Tensor]) -> Tuple[Tensor, Tensor]:
        """(B, N, C) sigmoid(obj)*sigmoid(cls) and (B, N, 4) ltrb in stride units from the cell centre."""
        logits = self._flatten(cls_scores, 1 + self.num_classes)
        cls_prob = logits[..., :1].sigmoid() * logits[..., 1:].sigmoid()
        raw = self._flatten(bbox_preds, 4).sigmoid()
        sizes = [m.shape[-2:] for m in bbox_preds]
        priors = self.priors(sizes, raw.device).to(raw.dtype)
        stride, anchor = priors[:, 2:3], priors[:, 3:5]
        offset = 2.0 * raw[..., :2] - 1.0  # centre minus cell centre, stride units
        half_wh = 0.5 * (2.0 * raw[..., 2:]) ** 2 * anchor / stride
        ltrb = torch.cat([half_wh - offset, half_wh + offset], -1)
        return cls_prob, ltrb

    def decode(self, cls_scores: Sequence[Tensor],
               bbox_preds: Sequence[Tensor]) -> Tuple[Tensor, Tensor]:
        """(B, N, C) scores and (B, N, 4) xyxy boxes in network-input pixels."""
        cls_prob, ltrb = self.dense_outputs(cls_scores, bbox_preds)
        sizes = [m.shape[-2:] for m in bbox_preds]
        priors = self.priors(sizes, ltrb.device).to(ltrb.dtype)
        centre, stride = priors[:, :2], priors[:, 2:3]
        boxes = torch.cat([centre - ltrb[..., :2], centre + ltrb[..., 2:]],
                          -1) * stride
        return cls_prob, boxes

    # ----------------------------------------------------------- inference
    def predict(self, feats: Sequence[Tensor], batch_data_samples: list,
                rescale: bool = False) -> List[InstanceData]:
        """forward -> predict_by_feat (the mmdet dense-head interface)."""
        metas = [s.metainfo for s in batch_data_samples]
        return self.predict_by_feat(*self(feats), batch_img_metas=metas,
                                    rescale=rescale)

    def predict_by_feat(self,
                        cls_scores: Sequence[Tensor],
                        bbox_preds: Sequence[Tensor],
                        batch_img_metas: Optional[List[dict]] = None,
                        cfg: Optional[dict] = None,
                        rescale: bool = True,
                        with_nms: bool = True) -> List[InstanceData]:
        """Decode, multi-label threshold on obj*cls, batched NMS, map back through the letterbox."""
        cfg = ConfigDict(cfg if cfg is not None else self.test_cfg)
        scores, boxes = self.decode(cls_scores, bbox_preds)
        return postprocess_batch(boxes, scores, batch_img_metas, cfg,
                                 rescale=rescale, with_nms=with_nms)

    # ------------------------------------------------------------ training
    def loss(self, *args, **kwargs) -> dict:
        """Not available: detptq has no YOLOv7 training loss (inference and PTQ only)."""
        raise NotImplementedError(
            'YOLOv7Head has no training loss in detptq: YOLOv7 models are '
            'converted from official weights (tools/convert_ckpt.py) and '
            'quantized, not trained')

    loss_by_feat = loss

    def switch_to_deploy(self) -> None:
        """Fold the implicit layers of every level into its prediction conv."""
        for layer in self.pred_layers:
            layer.switch_to_deploy()
