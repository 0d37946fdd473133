"""Quantization config: defaults, validation, and the per-layer settings quantize_model() applies.

A config is a plain dict; everything not given takes the default below::

    quant_cfg = dict(
        w_bits=4, a_bits=8,
        weight=dict(calibrator=dict(type='MinMaxCalibrator'), per_channel=True, symmetric=True),
        act=dict(calibrator=dict(type='KLCalibrator', bins=2048), symmetric=False),
        first_last_bits=8,
        overrides=[dict(pattern='bbox_head.*', a_bits=8,
                        calibrator=dict(type='PercentileCalibrator'))])

``weight`` / ``act`` hold the quantizer kwargs (``type`` defaults to
``UniformQuantizer``); their ``calibrator`` entry is replaced as a whole, never
merged. Layer resolution order: defaults -> ``first_last_bits`` for the first
layer and the ``last_patterns`` layers -> ``cfws`` -> each matching override, in
list order (later wins).

Override keys: ``pattern`` (fnmatch on the module name, or a list of them),
``skip`` (leave the layer in float), ``w_bits``, ``a_bits``, ``weight`` and
``act`` (partial quantizer kwargs), ``calibrator`` (shorthand for the
*activation* calibrator, the one usually tuned per layer) and ``w_calibrator``.

``backend='tensorrt'`` applies :data:`BACKEND_PRESETS` on top of the rest:
what TensorRT's explicit INT8 quantization needs (see detptq/export/trt_rules.py).
"""
import copy
from fnmatch import fnmatchcase
from typing import Any, Dict, List, Optional, Sequence

from .quantizer import PASS_THROUGH_BITS

QUANTIZER_KEYS = {
    'type', 'calibrator', 'symmetric', 'unsigned', 'narrow_range', 'per_channel', 'ch_axis',
    'learn_scale'
}
OVERRIDE_KEYS = {
    'pattern', 'skip', 'w_bits', 'a_bits', 'weight', 'act', 'calibrator', 'w_calibrator'
}
CFWS_CHOICES = (False, 'reparam', 'all')

#: per deployment backend: act settings forced on every layer, overrides put first.
#: TensorRT takes symmetric int8 activations only, and ConvTranspose weights per
#: tensor (its per-channel axis is the input channels; ours is the output's).
BACKEND_PRESETS: Dict[str, Dict[str, Any]] = {
    'onnxruntime': dict(act={}, overrides=[]),
    'tensorrt': dict(act=dict(symmetric=True, unsigned=False),
                     overrides=[dict(pattern=['*upsample*', '*transpose*'],
                                     weight=dict(per_channel=False))]),
}

DEFAULT_QCFG: Dict[str, Any] = dict(
    w_bits=8,
    a_bits=8,
    weight=dict(type='UniformQuantizer',
                calibrator=dict(type='MinMaxCalibrator'),
                symmetric=True,
                unsigned=False,
                narrow_range=True,
                per_channel=True,
                ch_axis=0,
                learn_scale=False),
    act=dict(type='UniformQuantizer',
             calibrator=dict(type='MinMaxCalibrator'),
             symmetric=False,
             unsigned=False,
             narrow_range=False,
             per_channel=False,
             ch_axis=1,
             learn_scale=False),
    # Bits of the first layer and the final prediction convs (None: no special case).
    first_last_bits=8,
    # None: the first Conv2d/Linear in module registration order.
    # last: YOLOv6 heads (cls/reg_preds), our YOLOv7 head (pred_layers),
    # official YOLOv7 Detect (m.N).
    first_patterns=None,
    last_patterns=['*cls_preds*', '*reg_preds*', '*pred_layers*', 'm.*', '*.m.*'],
    # CFWS weight splitting: False, 'reparam' (convs of blocks that had
    # switch_to_deploy) or 'all' (every kxk conv).
    cfws=False,
    switch_to_deploy=True,
    fold_bn=True,
    overrides=[],
    # None, or a key of BACKEND_PRESETS
    backend=None,
)


def _check_bits(where: str, value: Any) -> None:
    # Only 16 means "keep in float": w_bits=33 is a typo, not a wish for float weights.
    if isinstance(value, bool) or not isinstance(value, int) or not (
            2 <= value <= 8 or value == PASS_THROUGH_BITS):
        raise ValueError(f'quant config: {where}={value!r} is invalid; use 2..8, or '
                         f'{PASS_THROUGH_BITS} to keep the layer in float')


def _check_quantizer_cfg(where: str, cfg: Any) -> None:
    if not isinstance(cfg, dict):
        raise ValueError(f'quant config: {where}={cfg!r} is invalid; expected a dict')
    if 'bits' in cfg:
        raise ValueError(f'quant config: {where}.bits is not used; set w_bits / a_bits instead')
    if cfg.get('type', 'UniformQuantizer') in ('UniformQuantizer', 'CFWSWeightQuantizer'):
        unknown = set(cfg) - QUANTIZER_KEYS
        if unknown:
            raise ValueError(f'quant config: unknown key(s) {sorted(unknown)} in {where}; '
                             f'allowed: {sorted(QUANTIZER_KEYS)}')
    calibrator = cfg.get('calibrator')
    if calibrator is not None and not (isinstance(calibrator, dict) and 'type' in calibrator):
        raise ValueError(f'quant config: {where}.calibrator={calibrator!r} is invalid; '
                         'expected a dict with a "type" key')


def _merge_quantizer_cfg(base: Dict, update: Dict) -> Dict:
    merged = copy.deepcopy(base)
    merged.update(copy.deepcopy(update))  # ``calibrator`` is replaced whole
    return merged


def _check_override(i: int, override: Any) -> None:
    where = f'overrides[{i}]'
    if not isinstance(override, dict) or 'pattern' not in override:
        raise ValueError(
            f'quant config: {where}={override!r} is invalid; expected a dict with "pattern"')
    unknown = set(override) - OVERRIDE_KEYS
    if unknown:
        raise ValueError(f'quant config: unknown key(s) {sorted(unknown)} in {where}; '
                         f'allowed: {sorted(OVERRIDE_KEYS)}')
    patterns = override['pattern']
    if not isinstance(patterns, str) and not (isinstance(patterns, (list, tuple))
                                              and all(isinstance(p, str) for p in patterns)):
        raise ValueError(
            f'quant config: {where}.pattern={patterns!r} is invalid; expected str or list of str')
    for key in ('w_bits', 'a_bits'):
        if key in override:
            _check_bits(f'{where}.{key}', override[key])
    for key in ('weight', 'act'):
        if key in override:
            _check_quantizer_cfg(f'{where}.{key}', override[key])
    if 'skip' in override and not isinstance(override['skip'], bool):
        raise ValueError(
            f'quant config: {where}.skip={override["skip"]!r} is invalid; expected a bool')


def merge_qcfg(qcfg: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Defaults updated with ``qcfg``, validated (ValueError names the bad key and value)."""
    qcfg = {} if qcfg is None else dict(qcfg)
    qcfg.pop('type', None)  # present when the dict came from a registry config
    unknown = set(qcfg) - set(DEFAULT_QCFG)
    if unknown:
        raise ValueError(
            f'quant config: unknown key(s) {sorted(unknown)}; allowed: {sorted(DEFAULT_QCFG)}')
    merged = copy.deepcopy(DEFAULT_QCFG)
    for key, value in qcfg.items():
        if key in ('weight', 'act'):
            _check_quantizer_cfg(key, value)
            merged[key] = _merge_quantizer_cfg(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    _check_bits('w_bits', merged['w_bits'])
    _check_bits('a_bits', merged['a_bits'])
    if merged['first_last_bits'] is not None:
        _check_bits('first_last_bits', merged['first_last_bits'])
    if merged['cfws'] not in CFWS_CHOICES:
        raise ValueError(
            f'quant config: cfws={merged["cfws"]!r} is invalid; use one of {CFWS_CHOICES}')
    for key in ('first_patterns', 'last_patterns'):
        value = merged[key]
        if value is not None and not (isinstance(value, (list, tuple))
                                      and all(isinstance(p, str) for p in value)):
            raise ValueError(
                f'quant config: {key}={value!r} is invalid; expected a list of str or None')
    if not isinstance(merged['overrides'], (list, tuple)):
        raise ValueError(
            f'quant config: overrides={merged["overrides"]!r} is invalid; expected a list')
    _apply_backend(merged)
    for i, override in enumerate(merged['overrides']):
        _check_override(i, override)
    return merged


def _apply_backend(merged: Dict[str, Any]) -> None:
    backend = merged['backend']
    if backend is None:
        return
    if backend not in BACKEND_PRESETS:
        raise ValueError(f'quant config: backend={backend!r} is invalid; use None or one of '
                         f'{sorted(BACKEND_PRESETS)}')
    preset = BACKEND_PRESETS[backend]
    merged['act'].update(copy.deepcopy(preset['act']))
    preset_overrides = copy.deepcopy(preset['overrides'])
    if not merged['overrides'][:len(preset_overrides)] == preset_overrides:  # idempotent
        merged['overrides'] = preset_overrides + list(merged['overrides'])
    for override in merged['overrides']:
        for key, value in preset['act'].items():
            if override.get('act', {}).get(key, value) != value:
                raise ValueError(f'quant config: override {override["pattern"]!r} sets '
                                 f'act.{key}={override["act"][key]!r}, which '
                                 f'backend={backend!r} does not accept')


def matches(name: str, patterns: Sequence[str]) -> bool:
    """True when ``name`` matches any fnmatch pattern (case-sensitive)."""
    if isinstance(patterns, str):
        patterns = [patterns]
    return any(fnmatchcase(name, p) for p in patterns)


def layer_qconfig(name: str,
                  qcfg: Dict[str, Any],
                  is_first: bool = False,
                  is_reparam: bool = False) -> Dict[str, Any]:
    """Settings of one layer: ``dict(skip, weight=quantizer cfg, act=quantizer cfg, reasons)``."""
    w_bits, a_bits = qcfg['w_bits'], qcfg['a_bits']
    weight, act = copy.deepcopy(qcfg['weight']), copy.deepcopy(qcfg['act'])
    skip = False
    reasons: List[str] = []
    is_last = qcfg['last_patterns'] is not None and matches(name, qcfg['last_patterns'])
    if qcfg['first_last_bits'] is not None and (is_first or is_last):
        w_bits = a_bits = qcfg['first_last_bits']
        reasons.append('first' if is_first else 'last')
    cfws = qcfg['cfws'] == 'all' or (qcfg['cfws'] == 'reparam' and is_reparam)
    if cfws and weight.get('type', 'UniformQuantizer') == 'UniformQuantizer':
        weight['type'] = 'CFWSWeightQuantizer'
        reasons.append('cfws')
    for i, override in enumerate(qcfg['overrides']):
        if not matches(name, override['pattern']):
            continue
        reasons.append(f'overrides[{i}]')
        skip = override.get('skip', skip)
        w_bits = override.get('w_bits', w_bits)
        a_bits = override.get('a_bits', a_bits)
        weight = _merge_quantizer_cfg(weight, override.get('weight', {}))
        act = _merge_quantizer_cfg(act, override.get('act', {}))
        if 'w_calibrator' in override:
            weight['calibrator'] = copy.deepcopy(override['w_calibrator'])
        if 'calibrator' in override:
            act['calibrator'] = copy.deepcopy(override['calibrator'])
    weight['bits'], act['bits'] = w_bits, a_bits
    weight.setdefault('type', 'UniformQuantizer')
    act.setdefault('type', 'UniformQuantizer')
    return dict(skip=skip, weight=weight, act=act, reasons=reasons)
