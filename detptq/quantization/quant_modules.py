"""Quantized Conv2d / Linear / ConvTranspose2d: float weights, weight and input fake quantizers."""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .quantizer import UniformQuantizer


class QuantModuleMixin:
    """Shared parts of the quant modules: parameter sharing, default quantizers, forward, state flags.

    ``weight_quantizer`` and ``input_quantizer`` are plain submodules: the
    reconstruction code may swap ``weight_quantizer`` for another module (e.g.
    AdaRound) that maps a weight tensor to a fake-quantized one and has an
    ``enabled`` flag.
    """

    weight_quantizer: nn.Module
    input_quantizer: nn.Module
    #: axis of the output channels in ``weight`` (for the default per-channel weight quantizer)
    weight_ch_axis = 0

    def _wrap_float(self, module: nn.Module, weight_quantizer: Optional[nn.Module],
                    input_quantizer: Optional[nn.Module]) -> None:
        """Share the float module's ``weight``/``bias`` and set both quantizers (8-bit defaults)."""
        padding_mode = getattr(module, 'padding_mode', 'zeros')
        if padding_mode != 'zeros':
            raise ValueError(
                f'{type(self).__name__}: padding_mode={padding_mode!r} is not supported')
        self.weight = module.weight
        self.bias = module.bias
        if weight_quantizer is None:
            weight_quantizer = UniformQuantizer(bits=8,
                                                symmetric=True,
                                                narrow_range=True,
                                                per_channel=True,
                                                ch_axis=self.weight_ch_axis)
        if input_quantizer is None:
            input_quantizer = UniformQuantizer(bits=8, symmetric=False)
        # quantizer buffers are born on the CPU: put them where the weights are
        device = module.weight.device
        self.weight_quantizer = weight_quantizer.to(device)
        self.input_quantizer = input_quantizer.to(device)

    def _layer_op(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The layer's functional op with the given weight (each subclass defines it)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._layer_op(self.input_quantizer(x), self.weight_quantizer(self.weight))

    def org_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The float layer (no quantization)."""
        return self._layer_op(x, self.weight)

    def _share_params(self, float_module: nn.Module) -> nn.Module:
        """Point a freshly built (meta-device) float module at this module's parameters."""
        float_module.weight = self.weight
        float_module.bias = self.bias
        return float_module

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
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride = conv.kernel_size, conv.stride
        self.padding, self.dilation, self.groups = conv.padding, conv.dilation, conv.groups
        self._wrap_float(conv, weight_quantizer, input_quantizer)

    def _layer_op(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

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
        return self._share_params(conv)

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
        self._wrap_float(linear, weight_quantizer, input_quantizer)

    def _layer_op(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.linear(x, weight, self.bias)

    @property
    def org_module(self) -> nn.Linear:
        """A float ``nn.Linear`` sharing this module's parameters (not registered as a child)."""
        linear = nn.Linear(self.in_features,
                           self.out_features,
                           bias=self.bias is not None,
                           device='meta')
        return self._share_params(linear)

    def extra_repr(self) -> str:
        return f'in_features={self.in_features}, out_features={self.out_features}'


class QuantConvTranspose2d(QuantModuleMixin, nn.Module):
    """``F.conv_transpose2d`` on fake-quantized input and weight (learned upsampling, YOLOv6 necks).

    The weight is ``(Cin, Cout / groups, kh, kw)``: per-output-channel weight
    quantization uses ``ch_axis=1`` (quantize_model sets it; exact for groups=1).
    """

    weight_ch_axis = 1

    def __init__(self,
                 conv: nn.ConvTranspose2d,
                 weight_quantizer: Optional[nn.Module] = None,
                 input_quantizer: Optional[nn.Module] = None):
        super().__init__()
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride = conv.kernel_size, conv.stride
        self.padding, self.output_padding = conv.padding, conv.output_padding
        self.dilation, self.groups = conv.dilation, conv.groups
        self._wrap_float(conv, weight_quantizer, input_quantizer)

    def _layer_op(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(x, weight, self.bias, self.stride, self.padding,
                                  self.output_padding, self.groups, self.dilation)

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
        return self._share_params(conv)

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

