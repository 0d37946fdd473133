"""Data transforms that mmdet does not provide in the form YOLO evaluation needs."""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
from mmcv.transforms import BaseTransform

from detptq.registry import TRANSFORMS


@TRANSFORMS.register_module()
class YOLOLetterbox(BaseTransform):
    """Resize keeping aspect ratio, then pad centred to ``scale`` (official YOLOv6 eval).

    mmdet's ``Resize`` + ``Pad`` pads at the bottom/right only; official YOLO
    evaluation centres the image, which changes mAP measurably. Writes
    ``scale_factor=(sx, sy)`` and ``pad_param=[top, bottom, left, right]`` to the
    results so the head can map boxes back to the original image.

    Args:
        scale: output (width, height).
        pad_val: value of the border (114 as official YOLO).
        allow_scale_up: if False, small images are padded, never enlarged.
    """

    def __init__(self, scale: Sequence[int] = (640, 640), pad_val: int = 114,
                 allow_scale_up: bool = True) -> None:
        if len(scale) != 2 or min(scale) <= 0:
            raise ValueError(f'YOLOLetterbox: scale must be (width, height) > 0, got {scale!r}')
        self.scale = (int(scale[0]), int(scale[1]))
        self.pad_val = pad_val
        self.allow_scale_up = allow_scale_up

    def transform(self, results: dict) -> dict:
        """Letterbox ``results['img']`` and any ``gt_bboxes`` in place."""
        img = results['img']
        h, w = img.shape[:2]
        out_w, out_h = self.scale
        ratio = min(out_w / w, out_h / h)
        if not self.allow_scale_up:
            ratio = min(ratio, 1.0)
        new_w, new_h = int(round(w * ratio)), int(round(h * ratio))
        if (new_w, new_h) != (w, h):
            interp = cv2.INTER_AREA if ratio < 1 else cv2.INTER_LINEAR
            img = cv2.resize(img, (new_w, new_h), interpolation=interp)
        dw, dh = (out_w - new_w) / 2, (out_h - new_h) / 2
        # +-0.1 splits an odd border the way the official letterbox does
        top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
        left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
        img = cv2.copyMakeBorder(img, top, bottom, left, right,
                                 cv2.BORDER_CONSTANT,
                                 value=(self.pad_val,) * 3)
        sx, sy = new_w / w, new_h / h
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['scale_factor'] = (sx, sy)
        results['pad_param'] = np.array([top, bottom, left, right],
                                        dtype=np.float32)
        if results.get('gt_bboxes') is not None:
            boxes = results['gt_bboxes']
            boxes.rescale_([sx, sy])
            boxes.translate_([left, top])
            boxes.clip_(img.shape[:2])
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(scale={self.scale}, '
                f'pad_val={self.pad_val}, allow_scale_up={self.allow_scale_up})')
