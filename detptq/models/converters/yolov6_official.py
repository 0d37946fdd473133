"""Official YOLOv6 keys (``backbone.*``, ``neck.*``, ``detect.*``) -> detptq names.

detptq's YOLOv6 modules use the attribute names of YOLOv6 release 0.3
(``SimConv``/``Conv`` with ``conv``/``bn``), so 0.2/0.3 files map by the
``detect.`` -> ``bbox_head.`` prefix alone. Release 0.4 (checked on the
upstream ``yolov6/layers/common.py``) changed the nesting:

* ``SimConv``/``Conv`` became ``ConvBNReLU``/``ConvBNSiLU`` wrapping a
  ``ConvModule`` in ``.block``: ``X.conv.weight`` -> ``X.block.conv.weight``
  (necks, BepC3 ``cv*``, BiFusion, head ``stems``/``cls_convs``/``reg_convs``
  and ``conv_relu``/``conv_silu`` basic blocks);
* ``SimSPPF``/``SPPF`` wrap ``SPPFModule`` in ``.sppf`` and
  ``SimCSPSPPF``/``CSPSPPF`` wrap ``CSPSPPFModule`` in ``.cspsppf``;
* ``RepVGGBlock.rbr_dense``/``rbr_1x1`` became ``ConvModule`` (attribute
  names ``conv``/``bn`` unchanged, so no rename).
"""
from __future__ import annotations

import re
from typing import Dict, Tuple

import torch

_BLOCK_LEVEL = re.compile(r'\.block\.(conv|bn)\.')
_SPPF_LEVEL = re.compile(r'\.(sppf|cspsppf)\.')


def yolov6_release_layout(keys) -> str:
    """'0.4' when the 0.4 wrapper levels are present, else '0.2/0.3'."""
    for key in keys:
        if _BLOCK_LEVEL.search(key) or _SPPF_LEVEL.search(key):
            return '0.4'
    return '0.2/0.3'


def map_yolov6_official(state: Dict[str, torch.Tensor]
                        ) -> Tuple[Dict[str, torch.Tensor], Dict[str, str], str]:
    """Rename official keys to ours; returns (mapped, unmapped-with-reason, layout)."""
    layout = yolov6_release_layout(state)
    mapped: Dict[str, torch.Tensor] = {}
    unmapped: Dict[str, str] = {}
    for key, value in state.items():
        top, _, rest = key.partition('.')
        if top not in ('backbone', 'neck', 'detect'):
            unmapped[key] = 'not under backbone/neck/detect'
            continue
        if layout == '0.4':
            rest = _BLOCK_LEVEL.sub(r'.\1.', '.' + rest)[1:]
            rest = _SPPF_LEVEL.sub('.', '.' + rest)[1:]
        new_top = 'bbox_head' if top == 'detect' else top
        mapped[f'{new_top}.{rest}'] = value
    return mapped, unmapped, layout
