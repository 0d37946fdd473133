"""Open a checkpoint in any supported format and return its weights (FP32) plus facts about it."""
from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict

import torch
from torch import nn

from detptq.utils.checkpoint import CheckpointError, load_checkpoint_file
from .restricted_unpickler import (RestrictedUnpicklingError,
                                   batchnorm_eps_values, load_pickled_checkpoint,
                                   module_tensors, official_class_path,
                                   standin_class_names)

MODEL_TYPES = ('auto', 'yolov6', 'yolov7', 'mmyolo')


class ConversionError(RuntimeError):
    """A checkpoint that cannot be converted (message says why and what to do)."""


@dataclass
class SourceWeights:
    """Weights of the source file with source key names, converted to FP32."""

    state: 'OrderedDict[str, torch.Tensor]'
    model_type: str  # 'yolov6' | 'yolov7' | 'mmyolo'
    info: Dict[str, Any] = field(default_factory=dict)


def _read_file(path: str) -> Any:
    """Safe load first; pickled whole models go through the restricted unpickler."""
    try:
        return load_checkpoint_file(path)
    except CheckpointError as err:
        if 'not found' in str(err):
            raise ConversionError(str(err)) from err
    try:
        return load_pickled_checkpoint(path)
    except RestrictedUnpicklingError as err:
        raise ConversionError(f'{path!r}: {err}') from err


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor)
        for k, v in obj.items())


def _type_from_class(path: str) -> str:
    if path.startswith('yolov6.'):
        return 'yolov6'
    if path.startswith('models.'):
        return 'yolov7'
    raise ConversionError(f'pickled model of class {path!r} is neither an '
                          'official YOLOv6 (yolov6.*) nor YOLOv7 (models.*) '
                          'model')


def _type_from_keys(keys) -> str:
    keys = list(keys)
    if any(k.startswith('bbox_head.head_module.') for k in keys):
        return 'mmyolo'
    if any(re.match(r'^model\.\d+\.', k) for k in keys):
        return 'yolov7'
    if any(k.startswith('detect.') for k in keys):
        return 'yolov6'
    if any(k.startswith('bbox_head.') for k in keys):
        raise ConversionError('the file already uses detptq names '
                              '(bbox_head.* without head_module): load it '
                              'directly, no conversion needed')
    raise ConversionError('cannot tell the format: keys start with '
                          f'{sorted({k.split(".")[0] for k in keys})[:5]}; '
                          'expected model.N.* (YOLOv7), backbone/neck/detect '
                          '(YOLOv6) or bbox_head.head_module (mmyolo)')


def _to_fp32(state: Dict[str, torch.Tensor]) -> 'OrderedDict[str, torch.Tensor]':
    return OrderedDict((k, v.detach().float() if v.is_floating_point()
                        else v.detach().clone()) for k, v in state.items())


def read_source(path: str, model_type: str = 'auto') -> SourceWeights:
    """Load ``path`` and extract its weights; ``model_type`` forces the family."""
    if model_type not in MODEL_TYPES:
        raise ConversionError(f'model_type must be one of {MODEL_TYPES}, '
                              f'got {model_type!r}')
    obj = _read_file(path)
    info: Dict[str, Any] = {'source': str(path)}
    module = None
    if isinstance(obj, nn.Module):
        module, info['weights_from'] = obj, 'whole model object'
    elif isinstance(obj, dict) and isinstance(obj.get('ema'), nn.Module):
        # official eval code prefers the EMA weights when present
        module, info['weights_from'] = obj['ema'], 'ema'
    elif isinstance(obj, dict) and isinstance(obj.get('model'), nn.Module):
        module, info['weights_from'] = obj['model'], 'model'
    if module is not None:
        info['source_class'] = official_class_path(module)
        info['source_bn_eps'] = sorted(batchnorm_eps_values(module))
        # class names tell apart forms whose keys are identical (QARepVGG v1/v2)
        info['source_classes'] = sorted(standin_class_names(module))
        detected = _type_from_class(info['source_class'])
        raw = module_tensors(module)
    elif isinstance(obj, dict) and _is_tensor_dict(obj.get('state_dict')):
        raw, info['weights_from'] = obj['state_dict'], 'state_dict'
        detected = _type_from_keys(raw)
    elif _is_tensor_dict(obj):
        raw, info['weights_from'] = obj, 'plain state dict'
        detected = _type_from_keys(raw)
    else:
        top = sorted(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
        raise ConversionError(f'{path!r}: no weights found (top level: {top}); '
                              "expected {'model'|'ema': <model>}, a "
                              "{'state_dict': ...} or a plain state dict")
    if model_type != 'auto' and model_type != detected:
        raise ConversionError(f'{path!r} looks like a {detected} checkpoint, '
                              f'not {model_type} (use --model-type auto)')
    dtypes = sorted({str(v.dtype).replace('torch.', '') for v in raw.values()
                     if v.is_floating_point()})
    info['source_float_dtypes'] = dtypes
    return SourceWeights(_to_fp32(raw), detected, info)
