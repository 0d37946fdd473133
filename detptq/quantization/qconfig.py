"""Quantization config: the QuantConfig dataclass (defaults, validation) and per-layer settings.

A config's ``quant_cfg`` is a plain dict; everything not given takes the
default of :class:`QuantConfig`::

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
import json
from dataclasses import dataclass, field, fields
from fnmatch import fnmatchcase
from typing import Any, Dict, List, Optional, Sequence, Union

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

# Quantizer kwargs every layer starts from (``weight`` / ``act`` of a config update them).
DEFAULT_WEIGHT: Dict[str, Any] = dict(type='UniformQuantizer',
                                      calibrator=dict(type='MinMaxCalibrator'),
                                      symmetric=True,
                                      unsigned=False,
                                      narrow_range=True,
                                      per_channel=True,
                                      ch_axis=0,
                                      learn_scale=False)
# activations: asymmetric, per tensor (channel axis 1 of an NCHW input when per channel)
DEFAULT_ACT: Dict[str, Any] = dict(copy.deepcopy(DEFAULT_WEIGHT), symmetric=False,
                                   narrow_range=False, per_channel=False, ch_axis=1)
# last: YOLOv6 heads (cls/reg_preds), our YOLOv7 head (pred_layers), official YOLOv7 Detect (m.N).
DEFAULT_LAST_PATTERNS = ['*cls_preds*', '*reg_preds*', '*pred_layers*', 'm.*', '*.m.*']

#: Version of what a stored quant config means (``quantized.pth``'s ``meta.quant_cfg`` holds
#: the config as written, so the defaults above are part of it). Bump it when a default or
#: the meaning of a key changes; :func:`quant_cfg_from_meta` refuses other versions.
QCONFIG_VERSION = 1
#: Version 1 files carry no version key: they keep the exact bytes tools/quantize.py wrote
#: before versioning (the demo's quantized.pth hashes). From version 2 on the key is written.
UNVERSIONED = 1
VERSION_KEY = 'quant_cfg_version'


@dataclass
class QuantConfig:
    """How to quantize a model (module docstring); validated on construction.

    ``QuantConfig.from_dict(quant_cfg)`` builds it from a config's ``quant_cfg``
    (unknown keys refused); ``to_dict()`` is the resolved plain dict that
    :func:`layer_qconfig` and ``quantize_model`` read.
    """
    w_bits: int = 8
    a_bits: int = 8
    weight: Dict[str, Any] = field(default_factory=dict)  # merged onto DEFAULT_WEIGHT
    act: Dict[str, Any] = field(default_factory=dict)     # merged onto DEFAULT_ACT
    # Bits of the first layer and the final prediction convs (None: no special case).
    first_last_bits: Optional[int] = 8
    # None: the first Conv2d/Linear in module registration order.
    first_patterns: Optional[List[str]] = None
    last_patterns: Optional[List[str]] = field(
        default_factory=lambda: list(DEFAULT_LAST_PATTERNS))
    # CFWS weight splitting: False, 'reparam' (convs of blocks that had
    # switch_to_deploy) or 'all' (every kxk conv).
    cfws: Union[bool, str] = False
    switch_to_deploy: bool = True
    fold_bn: bool = True
    overrides: List[Dict[str, Any]] = field(default_factory=list)
    # None, or a key of BACKEND_PRESETS
    backend: Optional[str] = None

    def __post_init__(self) -> None:
        # ``weight`` / ``act`` are partial: merging onto the defaults is idempotent
        for key, default in (('weight', DEFAULT_WEIGHT), ('act', DEFAULT_ACT)):
            _check_quantizer_cfg(key, getattr(self, key))
            setattr(self, key, _merge_quantizer_cfg(default, getattr(self, key)))
        _check_bits('w_bits', self.w_bits)
        _check_bits('a_bits', self.a_bits)
        if self.first_last_bits is not None:
            _check_bits('first_last_bits', self.first_last_bits)
        if self.cfws not in CFWS_CHOICES:
            raise ValueError(
                f'quant config: cfws={self.cfws!r} is invalid; use one of {CFWS_CHOICES}')
        for key in ('first_patterns', 'last_patterns'):
            value = getattr(self, key)
            if value is not None and not (isinstance(value, (list, tuple))
                                          and all(isinstance(p, str) for p in value)):
                raise ValueError(
                    f'quant config: {key}={value!r} is invalid; expected a list of str or None')
        if not isinstance(self.overrides, (list, tuple)):
            raise ValueError(
                f'quant config: overrides={self.overrides!r} is invalid; expected a list')
        self._apply_backend()
        for i, override in enumerate(self.overrides):
            _check_override(i, override)

    @classmethod
    def from_dict(cls, qcfg: Optional[Dict[str, Any]] = None) -> 'QuantConfig':
        """The config of a plain (or mmengine Config) dict; unknown keys are refused."""
        qcfg = {} if qcfg is None else dict(qcfg)
        qcfg.pop('type', None)  # present when the dict came from a registry config
        unknown = set(qcfg) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f'quant config: unknown key(s) {sorted(unknown)}; '
                             f'allowed: {sorted(f.name for f in fields(cls))}')
        return cls(**copy.deepcopy(qcfg))

    def to_dict(self) -> Dict[str, Any]:
        """Every setting as a plain dict (a deep copy), in field order."""
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self)}

    def _apply_backend(self) -> None:
        backend = self.backend
        if backend is None:
            return
        if backend not in BACKEND_PRESETS:
            raise ValueError(f'quant config: backend={backend!r} is invalid; use None or one of '
                             f'{sorted(BACKEND_PRESETS)}')
        preset = BACKEND_PRESETS[backend]
        self.act.update(copy.deepcopy(preset['act']))
        preset_overrides = copy.deepcopy(preset['overrides'])
        if not self.overrides[:len(preset_overrides)] == preset_overrides:  # idempotent
            self.overrides = preset_overrides + list(self.overrides)
        for override in self.overrides:
            for key, value in preset['act'].items():
                if override.get('act', {}).get(key, value) != value:
                    raise ValueError(f'quant config: override {override["pattern"]!r} sets '
                                     f'act.{key}={override["act"][key]!r}, which '
                                     f'backend={backend!r} does not accept')


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
    return QuantConfig.from_dict(qcfg).to_dict()


#: every setting at its default (a resolved config, as merge_qcfg returns)
DEFAULT_QCFG: Dict[str, Any] = QuantConfig().to_dict()


def quant_cfg_meta(quant_cfg: Dict[str, Any]) -> Dict[str, Any]:
    """``meta`` entries that store ``quant_cfg`` (as written in the config) in a quantized.pth."""
    meta = {'quant_cfg': json.dumps(quant_cfg, default=str)}
    if QCONFIG_VERSION != UNVERSIONED:
        meta[VERSION_KEY] = QCONFIG_VERSION
    return meta


def quant_cfg_from_meta(meta: Dict[str, Any], path: str) -> Dict[str, Any]:
    """The quant config stored by :func:`quant_cfg_meta`; ValueError for another version."""
    version = meta.get(VERSION_KEY, UNVERSIONED)
    if version != QCONFIG_VERSION:
        raise ValueError(
            f'{path!r} stores a quant config of version {version!r} ({VERSION_KEY}), but this '
            f'detptq reads version {QCONFIG_VERSION}: quantize again with this version '
            '(`python tools/quantize.py CONFIG`), or use the detptq that wrote the file')
    quant_cfg = meta['quant_cfg']
    return json.loads(quant_cfg) if isinstance(quant_cfg, str) else dict(quant_cfg)


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
