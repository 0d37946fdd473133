"""Refuse a checkpoint whose weights do not fit the model, with a sentence saying what it is.

mmengine's Runner loads ``load_from`` with ``strict=False`` and only logs
missing keys, so a YOLOv6 file in a YOLOv7 config (or a quantized.pth given
to tools/test.py) evaluates random weights to the end. This hook runs at
mmengine's ``after_load_checkpoint`` point, before the weights are copied,
and raises :class:`CheckpointMismatchError` on any missing or unexpected key
or shape mismatch, naming a few keys and what the file looks like.
"""
from __future__ import annotations

import re
from typing import Dict, List, Mapping, Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from detptq.registry import HOOKS
from detptq.utils.checkpoint import CheckpointError

QUANT_KEY = re.compile(r'\.(weight|input)_quantizer\.(scale|zero_point)$')


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's weights do not fit the config's model."""


def _few(keys: List[str], limit: int = 3) -> str:
    shown = ', '.join(keys[:limit])
    return shown + (f' (+{len(keys) - limit} more)' if len(keys) > limit else '')


def is_quantized_state(state: Mapping[str, object], meta: Optional[Mapping] = None) -> bool:
    """True for a tools/quantize.py ``quantized.pth`` (quantizer scales, meta.quant_cfg)."""
    return bool(meta and 'quant_cfg' in meta) or any(QUANT_KEY.search(k) for k in state)


def _what_it_looks_like(state: Mapping[str, object]) -> str:
    """'keys look like a YOLOv7 (...) model: use a config based on configs/...' or ''."""
    from detptq.models.converters.describe import (describe_text, describe_weights,
                                                   guess_config)
    desc = describe_weights(dict(state))
    if desc.get('family') in (None, 'unknown'):
        return ''
    config = guess_config(desc)
    if config:  # repository-relative, as users write it in _base_
        config = config[config.rfind('configs/'):] if 'configs/' in config else config
    hint = f': use a config whose model is {config}' if config else ''
    return f' The file\'s keys look like a {describe_text(desc)} model{hint}.'


def mismatch_message(path: str, state: Mapping[str, object], model_state: Mapping[str, object],
                     meta: Optional[Mapping] = None) -> Optional[str]:
    """One sentence describing why ``state`` does not fit the model, or None if it fits."""
    missing = sorted(k for k in model_state if k not in state)
    unexpected = sorted(k for k in state if k not in model_state)
    shapes = sorted(k for k in state if k in model_state and hasattr(state[k], 'shape')
                    and tuple(state[k].shape) != tuple(model_state[k].shape))
    if not (missing or unexpected or shapes):
        return None
    if is_quantized_state(state, meta):
        return (f'{path!r} is a quantized checkpoint (written by tools/quantize.py), not FP '
                'weights for this config: its quantized mAP is in the result.json next to it '
                '(tools/quantize.py writes both); export it with `python tools/export_onnx.py '
                f'CONFIG --checkpoint {path} --eval` to evaluate it.')
    parts = []
    if missing:
        parts.append(f'{len(missing)} model keys are missing from it (e.g. {_few(missing)})')
    if unexpected:
        parts.append(f'{len(unexpected)} of its keys are not in the model '
                     f'(e.g. {_few(unexpected)})')
    if shapes:
        k = shapes[0]
        parts.append(f'{len(shapes)} tensors have other shapes (e.g. {k}: '
                     f'{tuple(state[k].shape)} in the file, {tuple(model_state[k].shape)} '
                     'in the model)')
    source = (meta or {}).get('config')
    made_for = f' It was written for {source}.' if source else ''
    return (f'{path!r} does not fit the config\'s model: ' + '; '.join(parts) + '.'
            + made_for + _what_it_looks_like(state))


def checkpoint_state(checkpoint: Mapping) -> Dict[str, object]:
    """The state dict mmengine would load, with its default ``module.`` prefix removed."""
    state = checkpoint.get('state_dict', checkpoint)
    return {re.sub(r'^module\.', '', k): v for k, v in state.items()}


@HOOKS.register_module()
class StrictLoadCheckpointHook(Hook):
    """Raise CheckpointMismatchError when ``load_from`` does not fit the model exactly."""
    priority = 'VERY_HIGH'

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Compare keys and shapes before mmengine copies the weights."""
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        meta = checkpoint.get('meta') if isinstance(checkpoint.get('meta'), Mapping) else None
        message = mismatch_message(str(runner.cfg.get('load_from')), checkpoint_state(checkpoint),
                                   model.state_dict(), meta)
        if message:
            raise CheckpointMismatchError(message)
