"""Task-aligned training loss of YOLOv6 (TOOD-style), from mmdet parts.

Assignment: mmdet ``TaskAlignedAssigner`` (top-k 13, alpha 1, beta 6) on the
detached predictions. Targets: for each positive anchor the class target is
the IoU-aware "normalised alignment metric" of TOOD/YOLOv6,
``t * max_iou(gt) / max_t(gt)``. Losses: ``VarifocalLoss`` (iou-weighted),
``GIoULoss`` weighted by the same target, ``DistributionFocalLoss`` for DFL
heads; each divided by the sum of class targets over the whole batch.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from mmdet.structures.bbox import get_box_tensor
from mmengine.structures import InstanceData

from .yolo_postprocess import anchor_points, bbox2dist, dist2bbox


class TaskAlignedLossMixin:
    """``loss_by_feat`` for anchor-free YOLO heads with ltrb regression.

    The host head provides ``num_classes``, ``reg_max``, ``strides``,
    ``assigner``, ``loss_cls``, ``loss_bbox``, ``loss_dfl`` (or None),
    ``train_cfg`` and the methods ``flatten_preds`` and ``integrate``.
    """

    def _assign_one(self, cls_prob: torch.Tensor, pred_boxes: torch.Tensor,
                    priors: torch.Tensor, gt: InstanceData
                    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Targets of one image: cls (N, C), boxes (N, 4), positive mask (N,)."""
        num_points = cls_prob.shape[0]
        cls_target = cls_prob.new_zeros((num_points, self.num_classes))
        box_target = pred_boxes.new_zeros((num_points, 4))
        gt_boxes = get_box_tensor(gt.bboxes).to(pred_boxes)
        gt_labels = gt.labels.long()
        if gt_boxes.shape[0] == 0:
            return cls_target, box_target, cls_target.new_zeros(
                num_points, dtype=torch.bool)
        cfg = self.train_cfg or {}
        result = self.assigner.assign(
            InstanceData(priors=priors, bboxes=pred_boxes, scores=cls_prob),
            InstanceData(bboxes=gt_boxes, labels=gt_labels),
            alpha=cfg.get('alpha', 1), beta=cfg.get('beta', 6))
        pos = result.gt_inds > 0
        if not pos.any():
            return cls_target, box_target, pos
        gt_idx = result.gt_inds[pos] - 1
        metric = result.assign_metrics[pos]
        ious = result.max_overlaps[pos]
        num_gt = gt_boxes.shape[0]
        # per-gt maxima over its positive anchors
        max_metric = metric.new_zeros(num_gt).scatter_reduce(
            0, gt_idx, metric, 'amax', include_self=False)
        max_iou = ious.new_zeros(num_gt).scatter_reduce(
            0, gt_idx, ious, 'amax', include_self=False)
        norm = metric * max_iou[gt_idx] / (max_metric[gt_idx] + 1e-9)
        pos_idx = pos.nonzero(as_tuple=True)[0]
        cls_target[pos_idx, gt_labels[gt_idx]] = norm
        box_target[pos_idx] = gt_boxes[gt_idx]
        return cls_target, box_target, pos

    def loss_by_feat(self,
                     cls_scores: List[torch.Tensor],
                     bbox_preds: List[torch.Tensor],
                     batch_gt_instances: List[InstanceData],
                     batch_img_metas: List[dict],
                     batch_gt_instances_ignore: Optional[list] = None
                     ) -> dict:
        """VFL + weighted GIoU (+ DFL), normalised by the batch target sum."""
        featmap_sizes = [c.shape[-2:] for c in cls_scores]
        cls_logits, reg_raw = self.flatten_preds(cls_scores, bbox_preds)
        ltrb = self.integrate(reg_raw)
        points, strides = anchor_points(featmap_sizes, self.strides,
                                        cls_logits.device, ltrb.dtype)
        pred_boxes = dist2bbox(points, ltrb * strides)
        priors = torch.cat([points, points], -1)  # zero-size boxes at points

        targets = [
            self._assign_one(cls_logits[i].detach().sigmoid(),
                             pred_boxes[i].detach(), priors, gt)
            for i, gt in enumerate(batch_gt_instances)
        ]
        cls_target = torch.stack([t[0] for t in targets])
        box_target = torch.stack([t[1] for t in targets])
        pos = torch.stack([t[2] for t in targets])
        target_sum = cls_target.sum().clamp(min=1.0)

        num_classes = cls_logits.shape[-1]
        loss_cls = self.loss_cls(cls_logits.reshape(-1, num_classes),
                                 cls_target.reshape(-1, num_classes),
                                 avg_factor=target_sum)
        losses = dict(loss_cls=loss_cls)
        if pos.any():
            weight = cls_target.sum(-1)[pos]
            losses['loss_bbox'] = self.loss_bbox(
                pred_boxes[pos], box_target[pos], weight=weight,
                avg_factor=target_sum)
        else:  # keep the graph connected so every parameter gets a grad
            losses['loss_bbox'] = pred_boxes.sum() * 0.0
        if self.loss_dfl is not None:
            losses['loss_dfl'] = self._dfl_loss(reg_raw, points, strides,
                                                box_target, cls_target, pos,
                                                target_sum)
        return losses

    def _dfl_loss(self, reg_raw, points, strides, box_target, cls_target,
                  pos, target_sum) -> torch.Tensor:
        """DFL on the 4 side distributions of positive anchors."""
        if not pos.any():
            return reg_raw.sum() * 0.0
        bins = self.reg_max + 1
        pos_points = points.unsqueeze(0).expand(pos.shape[0], -1, -1)[pos]
        pos_strides = strides.unsqueeze(0).expand(pos.shape[0], -1, -1)[pos]
        target = bbox2dist(pos_points, box_target[pos]) / pos_strides
        target = target.clamp(0, self.reg_max - 0.01)
        weight = cls_target.sum(-1)[pos][:, None].expand(-1, 4).reshape(-1)
        return self.loss_dfl(reg_raw[pos].reshape(-1, bins),
                             target.reshape(-1), weight=weight,
                             avg_factor=4.0 * target_sum)
