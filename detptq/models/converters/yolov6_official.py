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


def fold_deploy_post_bn(mapped: Dict[str, torch.Tensor],
                        eps: float = 1e-5) -> Dict[str, str]:
    """Fold the post-sum BN an official deploy-form QARepVGG block keeps into its conv.

    Official ``QARepVGGBlock(V2).switch_to_deploy`` keeps ``bn`` after
    ``rbr_reparam`` (for QAT); detptq's deploy block folds it. Changes
    ``mapped`` in place (``eps``: the file's BatchNorm eps); returns
    {removed keys: reason}.
    """
    notes: Dict[str, str] = {}
    prefixes = [k[:-len('.rbr_reparam.weight')] for k in list(mapped)
                if k.endswith('.rbr_reparam.weight')]
    for p in prefixes:
        if f'{p}.bn.weight' not in mapped:
            continue
        w, b = mapped[f'{p}.rbr_reparam.weight'], mapped[f'{p}.rbr_reparam.bias']
        gamma, beta = mapped.pop(f'{p}.bn.weight'), mapped.pop(f'{p}.bn.bias')
        mean, var = mapped.pop(f'{p}.bn.running_mean'), mapped.pop(f'{p}.bn.running_var')
        mapped.pop(f'{p}.bn.num_batches_tracked', None)
        scale = gamma / (var + eps).sqrt()
        mapped[f'{p}.rbr_reparam.weight'] = w * scale.view(-1, 1, 1, 1)
        mapped[f'{p}.rbr_reparam.bias'] = beta + (b - mean) * scale
        notes[f'{p}.bn.*'] = 'official deploy QARepVGG post-BN, folded into rbr_reparam'
    return notes
