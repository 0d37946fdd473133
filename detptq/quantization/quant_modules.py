"""Quantized Conv2d / Linear / ConvTranspose2d: float weights, weight and input fake quantizers."""
from contextlib import contextmanager
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .quantizer import UniformQuantizer


class QuantModuleMixin:
    """Shared state handling of the quant modules.

    ``weight_quantizer`` and ``input_quantizer`` are plain submodules: the
    reconstruction code may swap ``weight_quantizer`` for another module (e.g.
    AdaRound) that maps a weight tensor to a fake-quantized one and has an
    ``enabled`` flag.
    """

    weight_quantizer: nn.Module
    input_quantizer: nn.Module

    def set_quant_state(self, weight: bool = True, act: bool = True) -> None:
        """Enable or disable weight and input-activation fake quantization."""
        self.weight_quantizer.enabled = weight
        self.input_quantizer.enabled = act

    @property
    def use_weight_quant(self) -> bool:
        """True when the weight is fake-quantized in forward."""
        return bool(self.weight_quantizer.enabled)

    @property
    def use_act_quant(self) -> bool:
        """True when the input activation is fake-quantized in forward."""
        return bool(self.input_quantizer.enabled)

    def quantized_weight(self) -> torch.Tensor:
        """The weight as used in forward (fake-quantized when enabled)."""
        return self.weight_quantizer(self.weight)

    @classmethod
    def _check_quantizers(cls, weight_quantizer: Optional[nn.Module],
                          input_quantizer: Optional[nn.Module]):
        if weight_quantizer is None:
            weight_quantizer = UniformQuantizer(bits=8,
                                                symmetric=True,
                                                narrow_range=True,
                                                per_channel=True,
                                                ch_axis=0)
        if input_quantizer is None:
            input_quantizer = UniformQuantizer(bits=8, symmetric=False)
        return weight_quantizer, input_quantizer


class QuantConv2d(QuantModuleMixin, nn.Module):
    """``F.conv2d(input_quantizer(x), weight_quantizer(weight), bias)``, float conv's settings.

    ``weight``/``bias`` are the float module's own ``nn.Parameter`` objects
    (shared, not copied). ``org_forward(x)`` / ``org_module`` give the float
    function for reconstruction targets.
    """

    def __init__(self,
                 conv: nn.Conv2d,
                 weight_quantizer: Optional[nn.Module] = None,
                 input_quantizer: Optional[nn.Module] = None):
        super().__init__()
        if conv.padding_mode != 'zeros':
            raise ValueError(f'QuantConv2d: padding_mode={conv.padding_mode!r} is not supported')
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride = conv.kernel_size, conv.stride
        self.padding, self.dilation, self.groups = conv.padding, conv.dilation, conv.groups
        self.weight = conv.weight
        self.bias = conv.bias
        self.weight_quantizer, self.input_quantizer = self._check_quantizers(
            weight_quantizer, input_quantizer)

    def _conv(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv(self.input_quantizer(x), self.weight_quantizer(self.weight))

    def org_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The float convolution (no quantization)."""
        return self._conv(x, self.weight)

    @property
    def org_module(self) -> nn.Conv2d:
        """A float ``nn.Conv2d`` sharing this module's parameters (not registered as a child)."""
        conv = nn.Conv2d(self.in_channels,
                         self.out_channels,
                         self.kernel_size,
                         self.stride,
                         self.padding,
                         self.dilation,
                         self.groups,
                         bias=self.bias is not None,
                         device='meta')
        conv.weight = self.weight
        conv.bias = self.bias
        return conv

    def extra_repr(self) -> str:
        return (f'{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, '
                f'stride={self.stride}, padding={self.padding}, groups={self.groups}')


class QuantLinear(QuantModuleMixin, nn.Module):
    """``F.linear(input_quantizer(x), weight_quantizer(weight), bias)``."""

    def __init__(self,
                 linear: nn.Linear,
                 weight_quantizer: Optional[nn.Module] = None,
                 input_quantizer: Optional[nn.Module] = None):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        self.weight_quantizer, self.input_quantizer = self._check_quantizers(
            weight_quantizer, input_quantizer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.input_quantizer(x), self.weight_quantizer(self.weight), self.bias)

    def org_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The float linear layer (no quantization)."""
        return F.linear(x, self.weight, self.bias)

    @property
    def org_module(self) -> nn.Linear:
        """A float ``nn.Linear`` sharing this module's parameters (not registered as a child)."""
        linear = nn.Linear(self.in_features,
                           self.out_features,
                           bias=self.bias is not None,
                           device='meta')
        linear.weight = self.weight
        linear.bias = self.bias
        return linear

    def extra_repr(self) -> str:
        return f'in_features={self.in_features}, out_features={self.out_features}'


class QuantConvTranspose2d(QuantModuleMixin, nn.Module):
    """``F.conv_transpose2d`` on fake-quantized input and weight (learned upsampling, YOLOv6 necks).

    The weight is ``(Cin, Cout / groups, kh, kw)``: per-output-channel weight
    quantization uses ``ch_axis=1`` (quantize_model sets it; exact for groups=1).
    """

    def __init__(self,
                 conv: nn.ConvTranspose2d,
                 weight_quantizer: Optional[nn.Module] = None,
                 input_quantizer: Optional[nn.Module] = None):
        super().__init__()
        if conv.padding_mode != 'zeros':
            raise ValueError(
                f'QuantConvTranspose2d: padding_mode={conv.padding_mode!r} is not supported')
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride = conv.kernel_size, conv.stride
        self.padding, self.output_padding = conv.padding, conv.output_padding
        self.dilation, self.groups = conv.dilation, conv.groups
        self.weight = conv.weight
        self.bias = conv.bias
        if weight_quantizer is None:
            weight_quantizer = UniformQuantizer(bits=8,
                                                symmetric=True,
                                                narrow_range=True,
                                                per_channel=True,
                                                ch_axis=1)
        self.weight_quantizer, self.input_quantizer = self._check_quantizers(
            weight_quantizer, input_quantizer)

    def _deconv(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(x, weight, self.bias, self.stride, self.padding,
                                  self.output_padding, self.groups, self.dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._deconv(self.input_quantizer(x), self.weight_quantizer(self.weight))

    def org_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The float transposed convolution (no quantization)."""
        return self._deconv(x, self.weight)

    @property
    def org_module(self) -> nn.ConvTranspose2d:
        """A float ``nn.ConvTranspose2d`` sharing this module's parameters (not registered)."""
        conv = nn.ConvTranspose2d(self.in_channels,
                                  self.out_channels,
                                  self.kernel_size,
                                  self.stride,
                                  self.padding,
                                  self.output_padding,
                                  self.groups,
                                  bias=self.bias is not None,
                                  dilation=self.dilation,
                                  device='meta')
        conv.weight = self.weight
        conv.bias = self.bias
        return conv

    def extra_repr(self) -> str:
        return (f'{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, '
                f'stride={self.stride}, padding={self.padding}')


#: quant modules, by the float module type they replace
QUANT_MODULE_TYPES = {
    nn.Conv2d: QuantConv2d,
    nn.Linear: QuantLinear,
    nn.ConvTranspose2d: QuantConvTranspose2d
}
QUANT_MODULES = (QuantConv2d, QuantLinear, QuantConvTranspose2d)
#: quant modules whose weight has output channels on axis 1
TRANSPOSED_QUANT_MODULES = (QuantConvTranspose2d, )


def iter_quantizers(model: nn.Module):
    """Yield ``(name, quantizer)`` for the weight and input quantizer of every quant module."""
    for name, module in model.named_modules():
        if isinstance(module, QUANT_MODULES):
            yield f'{name}.weight_quantizer', module.weight_quantizer
            yield f'{name}.input_quantizer', module.input_quantizer


@contextmanager
def quantization_disabled(model: nn.Module):
    """Run the model in float inside the block, then restore every quantizer's ``enabled`` flag."""
    saved = [(q, q.enabled) for _, q in iter_quantizers(model)]
    for quantizer, _ in saved:
        quantizer.enabled = False
    try:
        yield model
    finally:
        for quantizer, flag in saved:
            quantizer.enabled = flag
