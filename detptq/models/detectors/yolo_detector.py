"""Single-stage YOLO detector: mmdet's SingleStageDetector + deploy switch."""
from __future__ import annotations

from typing import Optional

from mmdet.models.detectors.single_stage import SingleStageDetector
from torch import nn

from detptq.registry import MODELS
from ..deploy import switch_to_deploy


@MODELS.register_module()
class YOLODetector(SingleStageDetector):
    """backbone -> neck -> bbox_head, with the YOLO BN defaults.

    ``train_cfg`` / ``test_cfg`` may live in ``bbox_head`` (as our configs
    do); detector-level ones, when given, take precedence as in mmdet.
    All BatchNorm layers get YOLOv6/YOLOv7's ``eps=1e-3, momentum=0.03``.
    """

    def __init__(self,
                 backbone: dict,
                 neck: Optional[dict] = None,
                 bbox_head: Optional[dict] = None,
                 train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None,
                 bn_eps: float = 1e-3,
                 bn_momentum: float = 0.03) -> None:
        # SingleStageDetector overwrites the head's cfgs with its own.
        if bbox_head is not None:
            train_cfg = train_cfg if train_cfg is not None \
                else bbox_head.get('train_cfg')
            test_cfg = test_cfg if test_cfg is not None \
                else bbox_head.get('test_cfg')
        super().__init__(backbone=backbone, neck=neck, bbox_head=bbox_head,
                         train_cfg=train_cfg, test_cfg=test_cfg,
                         data_preprocessor=data_preprocessor,
                         init_cfg=init_cfg)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps = bn_eps
                m.momentum = bn_momentum

    def switch_to_deploy(self) -> 'YOLODetector':
        """Fold re-parameterisable blocks and drop training-only branches."""
        return switch_to_deploy(self)
