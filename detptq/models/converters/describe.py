"""Say which model a (renamed) checkpoint looks like, from tensor shapes alone.

Used by the converter to pick a config when none is given, and to make the
error explicit when the given config does not fit the file.
"""
from __future__ import annotations

import os
from typing import Dict, Iterable, Optional

import torch

from .block_classes import file_block_types

# stem output channels -> YOLOv6 size (base 64 channels x width multiple)
_YOLOV6_SIZES = {16: 'n', 24: 't', 32: 's', 48: 'm', 64: 'l'}


def _first(state: Dict[str, torch.Tensor], *keys: str) -> Optional[torch.Tensor]:
    for key in keys:
        if key in state:
            return state[key]
    return None


def describe_weights(state: Dict[str, torch.Tensor],
                     source_classes: Optional[Iterable[str]] = None
                     ) -> Dict[str, object]:
    """Family, size, layout, block kind and class count of a state dict in detptq names.

    ``source_classes`` (official class names of a pickled model, if any)
    name the QARepVGG version, which the keys cannot.
    """
    desc: Dict[str, object] = {}
    if any(k.startswith('bbox_head.pred_layers.') for k in state):
        desc['family'] = 'yolov7'
        desc['size'] = 'l' if 'backbone.stem.2.conv.weight' in state else 'tiny'
        pred = _first(state, 'bbox_head.pred_layers.0.conv.weight')
        if pred is not None:
            desc['num_classes'] = pred.shape[0] // 3 - 5
        desc['implicit'] = any('.implicit_add.' in k for k in state)
        return desc
    stem = _first(state, 'backbone.stem.rbr_dense.conv.weight',
                  'backbone.stem.rbr_reparam.weight',
                  'backbone.stem.conv.weight')
    if stem is None:
        desc['family'] = 'unknown'
        return desc
    desc['family'] = 'yolov6'
    width = stem.shape[0]
    desc['size'] = _YOLOV6_SIZES.get(width, f'width {width}')
    desc['layout'] = ('v3' if any(k.startswith('neck.Bifusion') for k in state)
                      else 'v2')
    desc['qa'] = 'backbone.stem.bn.weight' in state
    blocks = file_block_types(source_classes) or set()
    if desc['qa']:  # None: v1 or v2, the keys are the same
        desc['qa_version'] = ('v2' if 'QARepVGGBlockV2' in blocks else
                              'v1' if 'QARepVGGBlock' in blocks else None)
    desc['csp'] = any(k.startswith('backbone.ERBlock_2.1.cv1.') for k in state)
    cls = _first(state, 'bbox_head.cls_preds.0.weight')
    reg = _first(state, 'bbox_head.reg_preds.0.weight')
    if cls is not None:
        desc['num_classes'] = cls.shape[0]
    if reg is not None:
        desc['reg_max'] = reg.shape[0] // 4 - 1
    if any(k.startswith('bbox_head.cls_preds_ab.') for k in state):
        desc['aux_branch'] = 'ab'
    elif any(k.startswith('bbox_head.reg_preds_dist.') for k in state):
        desc['aux_branch'] = 'distill_ns'
    return desc


def describe_text(desc: Dict[str, object]) -> str:
    """One line for messages, e.g. 'YOLOv6-N (v3 layout, QARepVGG, 80 classes)'."""
    fam = desc.get('family')
    if fam == 'yolov7':
        name = 'YOLOv7' if desc.get('size') == 'l' else 'YOLOv7-tiny'
        extra = ['implicit layers' if desc.get('implicit') else
                 'no implicit layers (deploy Detect)']
    elif fam == 'yolov6':
        name = f"YOLOv6-{str(desc.get('size')).upper()}"
        extra = [f"{desc.get('layout')} layout"]
        if desc.get('qa'):
            extra.append(f"QARepVGG {desc.get('qa_version') or 'v1 or v2'}")
        if desc.get('reg_max'):
            extra.append(f"DFL reg_max {desc['reg_max']}")
        if desc.get('aux_branch'):
            extra.append(f"training branch {desc['aux_branch']}")
    else:
        return 'an unrecognised model (no YOLOv6 stem / YOLOv7 head keys)'
    if 'num_classes' in desc:
        extra.append(f"{desc['num_classes']} classes")
    return f"{name} ({', '.join(extra)})"


def default_config_dir() -> str:
    """``configs/_base_/models`` of the detptq source tree."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.dirname(os.path.abspath(__file__)))))
    return os.path.join(root, 'configs', '_base_', 'models')


def guess_config(desc: Dict[str, object],
                 config_dir: Optional[str] = None) -> Optional[str]:
    """Path of the base model config matching ``desc``, or None."""
    config_dir = config_dir or default_config_dir()
    if desc.get('family') == 'yolov7':
        name = 'yolov7.py' if desc.get('size') == 'l' else 'yolov7_tiny.py'
    elif desc.get('family') == 'yolov6':
        name = f"yolov6_{desc.get('size')}"
        if desc.get('qa'):
            if desc.get('qa_version') is None:
                return None  # see qa_ambiguity(): keys fit v1 and v2 alike
            name += '_qa' if desc['qa_version'] == 'v2' else '_qa_v1'
        if desc.get('layout') == 'v2':
            name += '_v2'
        name += '.py'
    else:
        return None
    path = os.path.join(config_dir, name)
    return path if os.path.isfile(path) else None


def qa_ambiguity(desc: Dict[str, object]) -> Optional[str]:
    """The sentence explaining why a QARepVGG file without class names needs --config."""
    if desc.get('family') != 'yolov6' or not desc.get('qa') or \
            desc.get('qa_version') is not None:
        return None
    size = desc.get('size')
    return (f'its keys fit both QARepVGG v1 and v2 blocks (v2 only adds a '
            f'weight-free average pool) and the file names no block classes; '
            f'pass --config configs/_base_/models/yolov6_{size}_qa.py (v2, the '
            f'official v3 QA releases) or yolov6_{size}_qa_v1.py')
