"""mmyolo YOLOv6 / YOLOv7 state dicts -> detptq names.

Layouts read from mmyolo's ``YOLOv6EfficientRep``/``YOLOv6CSPBep``,
``YOLOv6RepPAFPN``/``YOLOv6RepBiPAFPN`` (+ CSP forms), ``YOLOv6HeadModule``,
``YOLOv7Backbone``, ``YOLOv7PAFPN`` and ``YOLOv7HeadModule``:

* YOLOv6 backbone ``stage{k}.0.{0,1}`` = official ``ERBlock_{k+1}.{0,1}``,
  ``stage4.1`` = the SPPF (``conv1..`` = official ``cv1..``); BepC3 stages
  use ``conv1/conv2/conv3/block`` for official ``cv1/cv2/cv3/m``.
* YOLOv6 neck: ``reduce_layers.2`` = ``reduce_layer0``;
  ``top_down_layers.0.{0,1}`` = ``Rep_p4`` / ``reduce_layer1``;
  ``top_down_layers.1`` = ``Rep_p3``; ``downsample_layers.{0,1}`` =
  ``downsample2/1``; ``bottom_up_layers.{0,1}`` = ``Rep_n3/n4``;
  ``upsample_layers.i`` is a bare ConvTranspose2d (v2: ``upsample{i}``) or a
  BiFusion ``conv1..3/upsample/downsample`` (v3: ``Bifusion{i}``).
* Heads: ``bbox_head.head_module.*`` -> ``bbox_head.*``; YOLOv7
  ``convs_pred.i.{0,1,2}`` = ImplicitA / conv / ImplicitM.
* YOLOv7 body names are ours already, except the tiny ELAN
  (``TinyDownSampleBlock``): ``main_convs.0`` -> ``main_conv``,
  ``main_convs.{1,2}`` -> ``blocks.{0,1}``.
"""
from __future__ import annotations

import re
from typing import Dict, Tuple

import torch

_CSP_RENAME = {'conv1': 'cv1', 'conv2': 'cv2', 'conv3': 'cv3', 'block': 'm'}
_V6_NECK = [
    (r'^neck\.reduce_layers\.2\.', 'neck.reduce_layer0.'),
    (r'^neck\.top_down_layers\.0\.0\.', 'neck.Rep_p4.'),
    (r'^neck\.top_down_layers\.0\.1\.', 'neck.reduce_layer1.'),
    (r'^neck\.top_down_layers\.1\.', 'neck.Rep_p3.'),
    (r'^neck\.downsample_layers\.0\.', 'neck.downsample2.'),
    (r'^neck\.bottom_up_layers\.0\.', 'neck.Rep_n3.'),
    (r'^neck\.downsample_layers\.1\.', 'neck.downsample1.'),
    (r'^neck\.bottom_up_layers\.1\.', 'neck.Rep_n4.'),
]


def mmyolo_family(keys) -> str:
    """'yolov7' or 'yolov6' from the head module's layer names."""
    keys = list(keys)
    if any(k.startswith('bbox_head.head_module.convs_pred.') for k in keys):
        return 'yolov7'
    if any(k.startswith('bbox_head.head_module.stems.') for k in keys):
        return 'yolov6'
    raise KeyError('not an mmyolo YOLOv6/YOLOv7 state dict (no '
                   'bbox_head.head_module.stems/convs_pred keys)')


def _csp_prefixes(keys) -> set:
    """Module prefixes that are BepC3 stages: they own ``conv3`` and ``block``.

    (BiFusion and CSPSPPF also have a ``conv3`` but no ``block``.)
    """
    with_conv3, with_block = set(), set()
    for k in keys:
        for child, bucket in (('conv3', with_conv3), ('block', with_block)):
            m = re.match(rf'^(.*?)\.{child}\.', k)
            if m:
                bucket.add(m.group(1))
    return with_conv3 & with_block


def _rename_csp(key: str, csp: set) -> str:
    """conv1/2/3/block -> cv1/2/3/m directly below a BepC3 prefix."""
    for prefix in csp:
        if key.startswith(prefix + '.'):
            head, _, tail = key[len(prefix) + 1:].partition('.')
            if head in _CSP_RENAME:
                return f'{prefix}.{_CSP_RENAME[head]}.{tail}'
    return key


def _map_v6_key(key: str, csp: set) -> str:
    """One mmyolo YOLOv6 key -> ours (before the CSP child rename)."""
    key = _rename_csp(key, csp)
    m = re.match(r'^backbone\.stage(\d)\.0\.([01])\.(.*)$', key)
    if m:
        return f'backbone.ERBlock_{int(m.group(1)) + 1}.{m.group(2)}.{m.group(3)}'
    m = re.match(r'^backbone\.stage4\.1\.conv(\d)\.(.*)$', key)
    if m:  # SPPF / CSPSPPF
        return f'backbone.ERBlock_5.2.cv{m.group(1)}.{m.group(2)}'
    m = re.match(r'^neck\.upsample_layers\.(\d)\.(weight|bias)$', key)
    if m:  # v2: bare ConvTranspose2d
        return f'neck.upsample{m.group(1)}.upsample_transpose.{m.group(2)}'
    m = re.match(r'^neck\.upsample_layers\.(\d)\.(.*)$', key)
    if m:  # v3: BiFusion
        rest = m.group(2)
        rest = re.sub(r'^conv(\d)\.', r'cv\1.', rest)
        rest = re.sub(r'^upsample\.', 'upsample.upsample_transpose.', rest)
        return f'neck.Bifusion{m.group(1)}.{rest}'
    for pattern, new in _V6_NECK:
        if re.match(pattern, key):
            return re.sub(pattern, new, key)
    if key.startswith('bbox_head.head_module.'):
        return 'bbox_head.' + key[len('bbox_head.head_module.'):]
    return key


def _map_v7_key(key: str) -> str:
    """One mmyolo YOLOv7 key -> ours."""
    m = re.match(r'^bbox_head\.head_module\.convs_pred\.(\d+)\.([012])\.(.*)$',
                 key)
    if m:
        part = {'0': 'implicit_add', '1': 'conv', '2': 'implicit_mul'}[m.group(2)]
        return f'bbox_head.pred_layers.{m.group(1)}.{part}.{m.group(3)}'
    key = re.sub(r'\.main_convs\.0\.', '.main_conv.', key)
    key = re.sub(r'\.main_convs\.([12])\.',
                 lambda g: f'.blocks.{int(g.group(1)) - 1}.', key)
    return key


def map_mmyolo(state: Dict[str, torch.Tensor]
               ) -> Tuple[Dict[str, torch.Tensor], Dict[str, str], str]:
    """Rename mmyolo keys to ours; returns (mapped, unmapped-with-reason, family)."""
    family = mmyolo_family(state)
    csp = _csp_prefixes(state) if family == 'yolov6' else set()
    mapped: Dict[str, torch.Tensor] = {}
    unmapped: Dict[str, str] = {}
    for key, value in state.items():
        new = _map_v7_key(key) if family == 'yolov7' else _map_v6_key(key, csp)
        mapped[new] = value
    return mapped, unmapped, family
