"""Data transforms that mmdet does not provide in the form YOLO evaluation needs."""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
from mmcv.transforms import BaseTransform

from detptq.registry import TRANSFORMS
from .letterbox_geometry import (UNMAP_MODES, LetterboxGeometry,
                                 official_geometry, rounding_geometry)

RESIZE_MODES = ('round', 'official')


@TRANSFORMS.register_module()
class YOLOLetterbox(BaseTransform):
    """Resize keeping aspect ratio, then pad centred (YOLO evaluation letterbox).

    mmdet's ``Resize`` + ``Pad`` pads at the bottom/right only; YOLO
    evaluation centres the image, which changes mAP measurably. Writes
    ``scale_factor=(sx, sy)`` and ``pad_param=[top, bottom, left, right]`` so the
    head maps boxes back as ``x0 = (x - left) / sx``, ``y0 = (y - top) / sy``.

    Args:
        scale: canvas (width, height); a ``batch_shape`` (h, w) in the results
            (set by :class:`~detptq.datasets.YOLORectCocoDataset`) replaces it.
        pad_val: value of the border (114 as official YOLO).
        allow_scale_up: ``resize_mode='round'`` only: if False, small images
            are padded, never enlarged.
        resize_mode: ``'round'`` (detptq default: one resize, sizes rounded)
            or ``'official'`` (the official YOLOv6/YOLOv7 two steps with
            ``int()`` truncation, see :mod:`detptq.datasets.letterbox_geometry`).
        img_size: ``'official'`` only: the long side of step 1 (default: the
            larger canvas side).
        shrink_size: ``'official'`` only: step 1 resizes the long side to
            ``img_size - shrink_size`` (YOLOv6 ``--reproduce_640_eval``).
        unmap: ``'exact'`` (integer borders, true scales), ``'yolov6'`` or
            ``'yolov7'`` (the official tools' float half pads and gains, so
            boxes land where the official evaluation puts them).
    """

    def __init__(self, scale: Sequence[int] = (640, 640), pad_val: int = 114,
                 allow_scale_up: bool = True, resize_mode: str = 'round',
                 img_size: int = None, shrink_size: int = 0,
                 unmap: str = 'exact') -> None:
        if len(scale) != 2 or min(scale) <= 0:
            raise ValueError(f'YOLOLetterbox: scale must be (width, height) > 0, got {scale!r}')
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f'YOLOLetterbox: resize_mode must be one of {RESIZE_MODES}, '
                             f'got {resize_mode!r}')
        if unmap not in UNMAP_MODES:
            raise ValueError(f'YOLOLetterbox: unmap must be one of {UNMAP_MODES}, got {unmap!r}')
        if resize_mode == 'round' and (unmap != 'exact' or shrink_size):
            raise ValueError("YOLOLetterbox: unmap='yolov6'/'yolov7' and shrink_size "
                             "need resize_mode='official'")
        self.scale = (int(scale[0]), int(scale[1]))
        self.pad_val = pad_val
        self.allow_scale_up = allow_scale_up
        self.resize_mode = resize_mode
        self.img_size = int(img_size) if img_size else max(self.scale)
        self.shrink_size = int(shrink_size)
        self.unmap = unmap

    def geometry(self, ori_hw, canvas_hw=None) -> LetterboxGeometry:
        """The letterbox geometry of an image of ``ori_hw`` on ``canvas_hw`` (h, w)."""
        canvas_hw = tuple(canvas_hw) if canvas_hw is not None else self.scale[::-1]
        if self.resize_mode == 'official':
            return official_geometry(ori_hw, self.img_size, canvas_hw, self.shrink_size)
        return rounding_geometry(ori_hw, canvas_hw, self.allow_scale_up)

    def transform(self, results: dict) -> dict:
        """Letterbox ``results['img']`` and any ``gt_bboxes`` in place."""
        img = results['img']
        canvas = results.get('batch_shape')
        geo = self.geometry(img.shape[:2], canvas)
        (h0, w0), (h1, w1), (h2, w2) = geo.ori_hw, geo.resized_hw, geo.unpad_hw
        if (h1, w1) != (h0, w0):  # official load_image: AREA shrinks, LINEAR enlarges
            interp = cv2.INTER_AREA if h1 * w1 < h0 * w0 else cv2.INTER_LINEAR
            img = cv2.resize(img, (w1, h1), interpolation=interp)
        if (h2, w2) != (h1, w1):  # official letterbox step: always LINEAR
            img = cv2.resize(img, (w2, h2), interpolation=cv2.INTER_LINEAR)
        top, bottom, left, right = geo.borders
        img = cv2.copyMakeBorder(img, top, bottom, left, right,
                                 cv2.BORDER_CONSTANT,
                                 value=(self.pad_val,) * 3)
        (sx, sy), (off_x, off_y) = geo.unmap_params(self.unmap)
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['scale_factor'] = (sx, sy)
        # official unmap modes store the float half pads the official tools subtract
        results['pad_param'] = np.array([off_y, off_y, off_x, off_x]
                                        if self.unmap != 'exact' else geo.borders,
                                        dtype=np.float32)
        if results.get('gt_bboxes') is not None:  # true geometry for the targets
            boxes = results['gt_bboxes']
            boxes.rescale_([w2 / w0, h2 / h0])
            boxes.translate_([left, top])
            boxes.clip_(img.shape[:2])
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(scale={self.scale}, '
                f'pad_val={self.pad_val}, allow_scale_up={self.allow_scale_up}, '
                f'resize_mode={self.resize_mode!r}, img_size={self.img_size}, '
                f'shrink_size={self.shrink_size}, unmap={self.unmap!r})')
