"""Box decoding, YOLO-style NMS and letterbox un-mapping shared by YOLO heads.

Official YOLOv6/YOLOv7 evaluation: score threshold on class scores (YOLOv6
eval.py 0.03; YOLOv7 test.py 0.001, on obj*cls), multi-label (one candidate
per anchor and class above the threshold),
class-aware NMS at IoU 0.65, at most 300 detections, boxes mapped back from
the letterboxed input to the original image.
"""
from __future__ import annotations

from typing import Mapping, Optional, Tuple

import numpy as np
import torch
from mmcv.ops import batched_nms
from mmengine.structures import InstanceData


def anchor_points(featmap_sizes, strides, device, dtype=torch.float32
                  ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Anchor points ((x+0.5)*s, (y+0.5)*s) of all levels, row-major.

    Returns points (N, 2) in input pixels and their strides (N, 1).
    """
    points, point_strides = [], []
    for (h, w), s in zip(featmap_sizes, strides):
        ys = (torch.arange(int(h), device=device, dtype=dtype) + 0.5) * s
        xs = (torch.arange(int(w), device=device, dtype=dtype) + 0.5) * s
        yy, xx = torch.meshgrid(ys, xs, indexing='ij')
        points.append(torch.stack([xx.reshape(-1), yy.reshape(-1)], -1))
        point_strides.append(torch.full((int(h) * int(w), 1), float(s),
                                        device=device, dtype=dtype))
    return torch.cat(points), torch.cat(point_strides)


def dist2bbox(points: torch.Tensor, ltrb: torch.Tensor) -> torch.Tensor:
    """(x1, y1, x2, y2) from points (..., 2) and distances ltrb (..., 4)."""
    lt, rb = ltrb[..., :2], ltrb[..., 2:]
    return torch.cat([points - lt, points + rb], -1)


def bbox2dist(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Distances ltrb (..., 4) from points (..., 2) to box sides."""
    return torch.cat([points - boxes[..., :2], boxes[..., 2:] - points], -1)


def yolo_nms(boxes: torch.Tensor, scores: torch.Tensor,
             cfg: Mapping, with_nms: bool = True) -> InstanceData:
    """Threshold, (multi-label) candidates, class-aware NMS, top max_per_img.

    boxes (N, 4) and class probabilities scores (N, C) of one image.
    """
    score_thr = cfg.get('score_thr', 0.03)
    if cfg.get('multi_label', True):
        idx, labels = (scores > score_thr).nonzero(as_tuple=True)
        cand_scores = scores[idx, labels]
    else:
        cand_scores, labels = scores.max(1)
        idx = (cand_scores > score_thr).nonzero(as_tuple=True)[0]
        cand_scores, labels = cand_scores[idx], labels[idx]
    cand_boxes = boxes[idx]
    nms_pre = cfg.get('nms_pre', 30000)
    if cand_scores.numel() > nms_pre:
        cand_scores, top = cand_scores.topk(nms_pre)
        cand_boxes, labels = cand_boxes[top], labels[top]
    max_per_img = cfg.get('max_per_img', 300)
    if with_nms and cand_scores.numel() > 0:
        _, keep = batched_nms(cand_boxes, cand_scores, labels, cfg['nms'])
        keep = keep[:max_per_img]  # batched_nms sorts by score
    else:
        keep = cand_scores.argsort(descending=True)[:max_per_img]
    result = InstanceData()
    result.bboxes = cand_boxes[keep]
    result.scores = cand_scores[keep]
    result.labels = labels[keep]
    return result


def _as_four(values, default: float, like: torch.Tensor) -> torch.Tensor:
    """2 or 4 numbers (or None) as a tensor of 4 for (x, y, x, y) arithmetic."""
    if values is None:
        values = [default, default]
    arr = np.asarray(values, dtype=np.float32).reshape(-1)
    if arr.size == 2:
        arr = np.concatenate([arr, arr])
    return torch.as_tensor(arr, dtype=like.dtype, device=like.device)


def letterbox_to_original(bboxes: torch.Tensor, img_meta: Mapping
                          ) -> torch.Tensor:
    """Map boxes from the letterboxed input back to the original image.

    Uses ``pad_param = [top, bottom, left, right]`` (missing -> zeros),
    ``scale_factor = (sx, sy)`` and clips to ``ori_shape``.
    """
    pad = img_meta.get('pad_param', None)
    if pad is None:
        pad = np.zeros(4, dtype=np.float32)
    top, _, left, _ = [float(p) for p in np.asarray(pad).reshape(-1)[:4]]
    offset = bboxes.new_tensor([left, top, left, top])
    scale = _as_four(img_meta.get('scale_factor', None), 1.0, bboxes)
    out = (bboxes - offset) / scale
    if 'ori_shape' in img_meta:
        h, w = img_meta['ori_shape'][:2]
        out[:, 0::2] = out[:, 0::2].clamp(0, w)
        out[:, 1::2] = out[:, 1::2].clamp(0, h)
    return out


def postprocess_batch(boxes: torch.Tensor, scores: torch.Tensor,
                      batch_img_metas: Optional[list], cfg: Mapping,
                      rescale: bool = True, with_nms: bool = True) -> list:
    """NMS per image and (optionally) letterbox un-mapping; InstanceData list."""
    results = []
    for i in range(boxes.shape[0]):
        res = yolo_nms(boxes[i], scores[i], cfg, with_nms)
        if rescale and batch_img_metas is not None:
            res.bboxes = letterbox_to_original(res.bboxes, batch_img_metas[i])
        results.append(res)
    return results
