"""quantize_model(): deploy-fuse, fold BN and swap Conv2d/Linear for quant modules.

The one way a model is quantized; engine.hooks.QuantWrapperHook wraps a Runner's
model with it (PTQLoop and a plain test run alike).
"""
import copy
import logging
from typing import Any, Dict, Iterable, List, Union

from torch import nn

from detptq.registry import QUANTIZERS
from .bn_fold import fold_bn
from .qconfig import QuantConfig, layer_qconfig, matches, merge_qcfg
from .quant_modules import QUANT_MODULE_TYPES, QUANT_MODULES

logger = logging.getLogger(__name__)


def switch_to_deploy_modules(model: nn.Module) -> List[str]:
    """Call ``switch_to_deploy()`` on the outermost modules having it; return innermost names.

    Only outermost modules are called (a detector's method fuses all its
    blocks; calling blocks again could break non-idempotent code). The
    returned names are the re-parameterizable blocks themselves, whose convs
    after fusion are the "reparam" convs (CFWS targets).
    """
    names = [n for n, m in model.named_modules() if callable(getattr(m, 'switch_to_deploy', None))]
    innermost = [
        n for n in names if not any(o != n and (n == '' or o.startswith(n + '.')) for o in names)
    ]
    outermost = [
        n for n in names if not any(o != n and (o == '' or n.startswith(o + '.')) for o in names)
    ]
    modules = dict(model.named_modules())
    for name in outermost:
        modules[name].switch_to_deploy()
    return innermost


def _is_under(name: str, prefixes: Iterable[str]) -> bool:
    return any(p == '' or name == p or name.startswith(p + '.') for p in prefixes)


def _replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition('.')
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def build_quant_module(module: nn.Module, layer_cfg: Dict[str, Any]) -> nn.Module:
    """A QuantConv2d/QuantLinear for ``module`` with quantizers built from ``layer_cfg``."""
    quant_type = next(q for f, q in QUANT_MODULE_TYPES.items() if isinstance(module, f))
    weight_cfg = copy.deepcopy(layer_cfg['weight'])
    if isinstance(module, nn.ConvTranspose2d):
        # Output channels are axis 1 of a transposed-conv weight; CFWS is for
        # re-parameterized kxk convs only.
        weight_cfg['ch_axis'] = 1
        if weight_cfg.get('type') == 'CFWSWeightQuantizer':
            weight_cfg['type'] = 'UniformQuantizer'
    weight_quantizer = QUANTIZERS.build(weight_cfg)
    input_quantizer = QUANTIZERS.build(copy.deepcopy(layer_cfg['act']))
    return quant_type(module, weight_quantizer, input_quantizer)


def quantize_model(model: nn.Module,
                   qcfg: Union[None, Dict[str, Any], QuantConfig] = None,
                   inplace: bool = False) -> nn.Module:
    """``model`` with every Conv2d/Linear/ConvTranspose2d replaced by a quant module (uncalibrated).

    Steps: deep copy (unless ``inplace``); ``switch_to_deploy()`` on modules that
    have it; BatchNorm folding; per-layer settings from :mod:`.qconfig`
    (``skip`` leaves a layer in float). The resolved per-layer settings are
    kept in ``model.quant_layer_cfgs`` (name -> dict) for reports.
    """
    cfg = qcfg.to_dict() if isinstance(qcfg, QuantConfig) else merge_qcfg(qcfg)
    if not inplace:
        model = copy.deepcopy(model)
    reparam_blocks = switch_to_deploy_modules(model) if cfg['switch_to_deploy'] else []
    if cfg['fold_bn']:
        folded = fold_bn(model)
        logger.info('quantize_model: folded %d BatchNorm layers', len(folded))

    float_types = tuple(QUANT_MODULE_TYPES)
    targets = [(n, m) for n, m in model.named_modules()
               if isinstance(m, float_types) and not isinstance(m, QUANT_MODULES)]
    if not targets:
        raise ValueError(
            'quantize_model: the model has no Conv2d/Linear/ConvTranspose2d layer to quantize')
    if cfg['first_patterns'] is None:
        first_names = {targets[0][0]}
    else:
        first_names = {n for n, _ in targets if matches(n, cfg['first_patterns'])}

    layer_cfgs: Dict[str, Dict[str, Any]] = {}
    for name, module in targets:
        layer_cfg = layer_qconfig(name,
                                  cfg,
                                  is_first=name in first_names,
                                  is_reparam=_is_under(name, reparam_blocks))
        layer_cfgs[name] = layer_cfg
        if not layer_cfg['skip']:
            _replace_module(model, name, build_quant_module(module, layer_cfg))
    model.quant_layer_cfgs = layer_cfgs
    return model
