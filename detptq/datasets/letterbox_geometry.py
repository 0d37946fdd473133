"""Letterbox arithmetic: detptq's one-step rounding and the official YOLO two-step truncation.

Official YOLOv6 (``yolov6/data/datasets.py`` ``load_image`` + ``data_augment.py``
``letterbox``) and YOLOv7 (``utils/datasets.py``) evaluation resize in two steps:

1. ``load_image``: ``r = (img_size - shrink_size) / max(h0, w0)``; when ``r != 1``
   resize to ``(int(w0 * r), int(h0 * r))`` (truncation), INTER_AREA when
   shrinking, INTER_LINEAR when enlarging;
2. ``letterbox(img, canvas, auto=False, scaleup=False)``:
   ``r2 = min(1, H / h1, W / w1)``, size ``(int(round(w1 * r2)), int(round(h1 * r2)))``
   (INTER_LINEAR if it changes), half pads ``dw = (W - w2) / 2``, ``dh = (H - h2) / 2``,
   borders ``top = int(round(dh - 0.1))``, ``bottom = int(round(dh + 0.1))`` (same for x).

The official tools map predictions back with the float half pads, not the
integer borders, and with gains from the resized size: YOLOv6
(``evaler.scale_coords``) ``x = (x - dw) / (w2 / w0)``, ``y = (y - dh) / (h2 / h0)``;
YOLOv7 (``test.py`` / ``general.scale_coords``) divides both axes by ``h1 / h0``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

UNMAP_MODES = ('exact', 'yolov6', 'yolov7')


@dataclass(frozen=True)
class LetterboxGeometry:
    """Sizes (h, w) of each step, integer borders and half pads of one image."""

    ori_hw: Tuple[int, int]
    resized_hw: Tuple[int, int]   # after step 1 (official load_image)
    unpad_hw: Tuple[int, int]     # after step 2's resize (the image inside the canvas)
    canvas_hw: Tuple[int, int]
    borders: Tuple[int, int, int, int]  # top, bottom, left, right
    half_pad: Tuple[float, float]        # dw, dh (official ``pad``)

    def unmap_params(self, mode: str) -> Tuple[Tuple[float, float], Tuple[float, float]]:
        """((sx, sy), (off_x, off_y)) so that ``x0 = (x - off_x) / sx`` as ``mode`` does."""
        h0, w0 = self.ori_hw
        h1, _ = self.resized_hw
        h2, w2 = self.unpad_hw
        if mode == 'exact':  # the geometry: integer borders, true scales
            return (w2 / w0, h2 / h0), (float(self.borders[2]), float(self.borders[0]))
        if mode == 'yolov6':
            return (w2 / w0, h2 / h0), self.half_pad
        if mode == 'yolov7':
            return (h1 / h0, h1 / h0), self.half_pad
        raise ValueError(f'unmap must be one of {UNMAP_MODES}, got {mode!r}')


def _pad(canvas_hw: Tuple[int, int], unpad_hw: Tuple[int, int]):
    """Integer borders and half pads, split as the official letterbox does."""
    dw = (canvas_hw[1] - unpad_hw[1]) / 2
    dh = (canvas_hw[0] - unpad_hw[0]) / 2
    borders = (int(round(dh - 0.1)), int(round(dh + 0.1)),
               int(round(dw - 0.1)), int(round(dw + 0.1)))
    return borders, (dw, dh)


def official_geometry(ori_hw: Tuple[int, int], img_size: int,
                      canvas_hw: Tuple[int, int],
                      shrink_size: int = 0) -> LetterboxGeometry:
    """The official two-step geometry (module docstring) for one image."""
    h0, w0 = ori_hw
    r = (img_size - shrink_size) / max(h0, w0)
    h1, w1 = (int(h0 * r), int(w0 * r)) if r != 1 else (h0, w0)
    r2 = min(min(canvas_hw[0] / h1, canvas_hw[1] / w1), 1.0)
    w2, h2 = int(round(w1 * r2)), int(round(h1 * r2))
    borders, half_pad = _pad(canvas_hw, (h2, w2))
    return LetterboxGeometry((h0, w0), (h1, w1), (h2, w2), tuple(canvas_hw),
                             borders, half_pad)


def rounding_geometry(ori_hw: Tuple[int, int], canvas_hw: Tuple[int, int],
                      allow_scale_up: bool = True) -> LetterboxGeometry:
    """detptq's one-step letterbox: ratio min(H/h, W/w), sizes rounded."""
    h0, w0 = ori_hw
    ratio = min(canvas_hw[1] / w0, canvas_hw[0] / h0)
    if not allow_scale_up:
        ratio = min(ratio, 1.0)
    w1, h1 = int(round(w0 * ratio)), int(round(h0 * ratio))
    borders, half_pad = _pad(canvas_hw, (h1, w1))
    return LetterboxGeometry((h0, w0), (h1, w1), (h1, w1), tuple(canvas_hw),
                             borders, half_pad)
