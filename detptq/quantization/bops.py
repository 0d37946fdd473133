"""Bit-operation counts (BOPs = MACs x weight bits x activation bits), per input sample."""
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import nn

from .quant_modules import QUANT_MODULES, QuantConv2d, QuantConvTranspose2d
from .state import disabled

#: bit width counted for layers kept in float
FLOAT_BITS = 32


def _bits(quantizer: nn.Module) -> int:
    bits = getattr(quantizer, 'bits', FLOAT_BITS)
    return bits if getattr(quantizer, 'enabled', True) else FLOAT_BITS


def _macs(module: nn.Module, inputs: torch.Tensor, output: torch.Tensor) -> int:
    per_sample = output[0].numel() if output.dim() > 1 else output.numel()
    if isinstance(module, (nn.ConvTranspose2d, QuantConvTranspose2d)):
        # Every input pixel scatters a (Cout / groups) x kh x kw patch.
        kh, kw = module.kernel_size
        in_pixels = inputs[0, 0].numel()
        return in_pixels * module.in_channels * (module.out_channels // module.groups) * kh * kw
    if isinstance(module, (nn.Conv2d, QuantConv2d)):
        kh, kw = module.kernel_size
        return per_sample * (module.in_channels // module.groups) * kh * kw
    return per_sample * module.in_features


def _centre_macs(module: nn.Module, output: torch.Tensor) -> int:
    return output[0].numel() * (module.in_channels // module.groups)


def default_forward(model: nn.Module, inputs: Any) -> Any:
    """Call the model on a tensor, a tuple/list of positional args or a dict of kwargs."""
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (list, tuple)):
        return model(*inputs)
    return model(inputs)


@torch.no_grad()
def count_bops(model: nn.Module,
               inputs: Any,
               forward_fn: Optional[Callable[[nn.Module, Any], Any]] = None) -> Dict[str, Any]:
    """Run one forward and count BOPs of every conv/deconv/linear (quantized or float).

    Quant modules count their quantizers' bits (disabled quantizers count as
    float, 32 bits); plain float layers count 32 x 32. A CFWS weight quantizer
    that splits its kernel adds the extra centre 1x1 conv (``extra_bops``).
    Returns ``dict(total_bops, layers=[dict(name, macs, w_bits, a_bits, bops, extra_bops)])``.
    """
    layers: List[Dict[str, Any]] = []
    # Quantizer enabled flags are read before the forward disables them.
    bits = {
        id(m): (_bits(m.weight_quantizer), _bits(m.input_quantizer))
        for m in model.modules() if isinstance(m, QUANT_MODULES)
    }

    def hook(name: str):

        def record(module: nn.Module, args, output: torch.Tensor) -> None:
            w_bits, a_bits = bits.get(id(module), (FLOAT_BITS, FLOAT_BITS))
            macs = _macs(module, args[0], output)
            extra = 0
            if getattr(module.weight_quantizer if isinstance(module, QuantConv2d) else None,
                       'split', False):
                extra = _centre_macs(module, output) * w_bits * a_bits
            layers.append(
                dict(name=name,
                     macs=macs,
                     w_bits=w_bits,
                     a_bits=a_bits,
                     bops=macs * w_bits * a_bits,
                     extra_bops=extra))

        return record

    types = (nn.Conv2d, nn.Linear, nn.ConvTranspose2d) + QUANT_MODULES
    handles = [
        m.register_forward_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, types)
    ]
    was_training = model.training
    model.eval()
    try:
        # Only shapes matter here; disabling avoids needing calibrated scales.
        with disabled(model):
            (forward_fn or default_forward)(model, inputs)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    total = sum(layer['bops'] + layer['extra_bops'] for layer in layers)
    return dict(total_bops=total, layers=layers)
