"""Deploy-form modules for ONNX export: on-grid weights plus explicit weight/activation Q/DQ.

``build_export_model(model_q)`` deep-copies a model from ``quantize_model`` and
swaps every ``QuantConv2d`` / ``QuantLinear`` / ``QuantConvTranspose2d`` for an
``Export*`` module:

- the weight is baked once: the weight quantizer's output, i.e. float values
  lying on the integer grid (AdaRound: its hard rounding ``floor(W/s) + (V >= 0)``;
  CFWS: the fine kxk kernel plus a separate 1x1 conv holding the coarse centre,
  as the CFWS paper deploys it);
- the weight goes through a per-channel Q/DQ (axis 0, 1 for transposed convs)
  and the input through a per-tensor Q/DQ (``ActivationQDQ``), so the exported
  graph is "float initializer -> QuantizeLinear -> DequantizeLinear -> Conv",
  the form TensorRT and onnxruntime read as INT8.

In PyTorch the export modules compute what the fake-quant modules compute.
"""
from __future__ import annotations

import copy
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from detptq.quantization.cfws import CFWSWeightQuantizer, is_splittable
from detptq.quantization.quant_modules import (QUANT_MODULES, QuantConv2d,
                                               QuantConvTranspose2d, QuantLinear)
from detptq.quantization.state import is_active as _is_active
from .qdq_functions import clip_bounds, code_dtype, quant_dequant

#: largest distance of ``W / s`` from an integer accepted as "on the grid"
GRID_TOLERANCE = 1e-3


class QDQParams(nn.Module):
    """Scale, integer zero point and code range of one quantized tensor (weight or activation)."""

    def __init__(self, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int,
                 bits: int, axis: int = 0, is_weight: bool = False) -> None:
        super().__init__()
        self.register_buffer('scale', torch.empty(0))
        self.register_buffer('zero_point', torch.empty(0))
        self.set_params(scale, zero_point, qmin, qmax, bits)
        self.axis = axis
        # baked weights are on the grid already: no Clip in front of their Q
        self.is_weight = is_weight

    @classmethod
    def from_quantizer(cls, quantizer: nn.Module, is_weight: bool = False) -> 'QDQParams':
        """Copy a calibrated ``UniformQuantizer``'s parameters."""
        axis = quantizer.ch_axis if quantizer.per_channel else 0
        return cls(quantizer.scale, quantizer.zero_point, quantizer.qmin, quantizer.qmax,
                   quantizer.bits, axis, is_weight)

    def set_params(self, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int,
                   bits: int) -> None:
        """Replace the parameters (used when scales are unified across a Concat)."""
        dtype = code_dtype(qmin, qmax)
        zero_point = torch.as_tensor(zero_point).detach().float()
        if not torch.equal(zero_point, zero_point.round()) or zero_point.min() < qmin \
                or zero_point.max() > qmax:
            raise ValueError(f'zero point {zero_point.tolist()} is not an integer code '
                             f'in [{qmin}, {qmax}]')
        self.scale = torch.as_tensor(scale).detach().float().clone()
        self.zero_point = zero_point.to(dtype)
        self.qmin, self.qmax, self.bits = int(qmin), int(qmax), int(bits)

    @property
    def real_range(self) -> Tuple[float, float]:
        """Real values of the smallest and largest code (per-tensor parameters)."""
        s, z = float(self.scale), float(self.zero_point)
        return (self.qmin - z) * s, (self.qmax - z) * s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        clip = None if self.is_weight else clip_bounds(self.scale, self.zero_point, self.qmin,
                                                       self.qmax)
        return quant_dequant(x, self.scale, self.zero_point, self.axis, self.qmin, self.qmax,
                             clip)

    def extra_repr(self) -> str:
        kind = f'per_channel(axis={self.axis})' if self.scale.dim() else 'per_tensor'
        return f'bits={self.bits}, codes=[{self.qmin}, {self.qmax}], {kind}'


def _check_on_grid(weight: torch.Tensor, params: QDQParams, name: str) -> None:
    shape = [1] * weight.dim()
    if params.scale.dim():
        shape[params.axis] = -1
    codes = weight / params.scale.reshape(shape) + params.zero_point.float().reshape(shape)
    off = float((codes - codes.round()).abs().max()) if codes.numel() else 0.0
    if off > GRID_TOLERANCE or codes.min() < params.qmin - 0.5 or codes.max() > params.qmax + 0.5:
        raise ValueError(f'{name}: baked weight is not on its quantization grid '
                         f'(max distance {off:.3g} codes); cannot export exactly')


def bake_weight(module: nn.Module) -> Tuple[torch.Tensor, Optional[QDQParams],
                                            Optional[Tuple[torch.Tensor, QDQParams]]]:
    """``(weight, weight QDQ or None, (coarse 1x1 weight, its QDQ) or None)`` of a quant module.

    The weight is the quantizer's own output (on the grid), AdaRound hardened first.
    """
    quantizer = module.weight_quantizer
    weight = module.weight.detach()
    with torch.no_grad():
        if callable(getattr(quantizer, 'hard', None)) and hasattr(quantizer, 'base'):
            # AdaRoundQuantizer: the learned integer values, on the base quantizer's grid
            if not quantizer.active:
                return weight.clone(), None, None
            quantizer.hard()
            return quantizer(weight).detach(), QDQParams.from_quantizer(quantizer.base, True), None
        if not _is_active(quantizer):
            return weight.clone(), None, None
        if isinstance(quantizer, CFWSWeightQuantizer) and quantizer.split and \
                is_splittable(weight):
            fine, coarse = quantizer.split_weight(weight)
            coarse_params = QDQParams(quantizer.coarse_scale, torch.zeros_like(
                quantizer.coarse_scale), quantizer.qmin, quantizer.qmax, quantizer.bits, 0, True)
            return fine.detach(), QDQParams.from_quantizer(quantizer, True), (coarse.detach(),
                                                                         coarse_params)
        if not hasattr(quantizer, 'qmin'):
            raise TypeError(f'cannot export weight quantizer {type(quantizer).__name__}: '
                            'expected a UniformQuantizer, CFWS or AdaRound quantizer')
        return quantizer(weight).detach(), QDQParams.from_quantizer(quantizer, True), None


class _ExportBase(nn.Module):
    """Baked weight + optional weight/input Q/DQ; ``quantize=False`` keeps the float weight."""

    def __init__(self, module: nn.Module, name: str, quantize: bool) -> None:
        super().__init__()
        if quantize:
            weight, weight_qdq, coarse = bake_weight(module)
            act = module.input_quantizer
            self.input_qdq = QDQParams.from_quantizer(act) if _is_active(act) else None
        else:
            weight, weight_qdq, coarse = module.weight.detach().clone(), None, None
            self.input_qdq = None
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = None if module.bias is None else nn.Parameter(
            module.bias.detach().clone(), requires_grad=False)
        self.weight_qdq = weight_qdq
        if weight_qdq is not None:
            _check_on_grid(weight, weight_qdq, name)
        self.coarse_weight = None
        self.coarse_qdq = None
        if coarse is not None:
            _check_on_grid(coarse[0], coarse[1], name + ' (CFWS coarse)')
            self.coarse_weight = nn.Parameter(coarse[0], requires_grad=False)
            self.coarse_qdq = coarse[1]

    def _inputs(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.input_qdq is not None:
            x = self.input_qdq(x)
        weight = self.weight if self.weight_qdq is None else self.weight_qdq(self.weight)
        return x, weight


class ExportConv2d(_ExportBase):
    """Conv2d on Q/DQ input and weight; CFWS adds the coarse centre as a 1x1 conv."""

    def __init__(self, module: QuantConv2d, name: str, quantize: bool = True) -> None:
        super().__init__(module, name, quantize)
        self.stride, self.padding = module.stride, module.padding
        self.dilation, self.groups = module.dilation, module.groups
        # set by conv_outputs.quantize_conv_outputs (onnxruntime INT8 kernels)
        self.output_qdq: Optional[QDQParams] = None
        if self.coarse_weight is not None:
            if isinstance(self.padding, str):
                raise ValueError(f'{name}: CFWS export needs numeric padding')
            k = self.weight.shape[-2:]
            self.coarse_padding = tuple(p - (kk // 2) * d for p, kk, d in zip(
                self.padding, k, self.dilation))
            if min(self.coarse_padding) < 0:
                raise ValueError(f'{name}: CFWS export needs padding >= kernel centre '
                                 f'offset, got padding {self.padding}')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, weight = self._inputs(x)
        out = F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation,
                       self.groups)
        if self.coarse_weight is not None:
            coarse = self.coarse_qdq(self.coarse_weight)
            out = out + F.conv2d(x, coarse, None, self.stride, self.coarse_padding, 1,
                                 self.groups)
        if self.output_qdq is not None:
            out = self.output_qdq(out)
        return out


class ExportLinear(_ExportBase):
    """Linear on Q/DQ input and weight (exported as Gemm/MatMul, weight axis 0)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, weight = self._inputs(x)
        return F.linear(x, weight, self.bias)


class ExportConvTranspose2d(_ExportBase):
    """ConvTranspose2d on Q/DQ input and weight (weight channels on axis 1)."""

    def __init__(self, module: QuantConvTranspose2d, name: str, quantize: bool = True) -> None:
        super().__init__(module, name, quantize)
        self.stride, self.padding = module.stride, module.padding
        self.output_padding, self.groups = module.output_padding, module.groups
        self.dilation = module.dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, weight = self._inputs(x)
        return F.conv_transpose2d(x, weight, self.bias, self.stride, self.padding,
                                  self.output_padding, self.groups, self.dilation)


EXPORT_TYPES = {QuantConv2d: ExportConv2d, QuantLinear: ExportLinear,
                QuantConvTranspose2d: ExportConvTranspose2d}
EXPORT_MODULES = (ExportConv2d, ExportLinear, ExportConvTranspose2d)


def build_export_model(model_q: nn.Module, quantize: bool = True) -> nn.Module:
    """A copy of ``model_q`` with every quant module replaced by its export module.

    ``quantize=False`` gives the float model of the same (fused) graph: the
    original float weights and no Q/DQ (the FP32 baseline of benchmarks).
    """
    model = copy.deepcopy(model_q).eval()
    targets = [(n, m) for n, m in model.named_modules() if isinstance(m, QUANT_MODULES)]
    if not targets:
        raise ValueError('build_export_model: the model has no quant modules; '
                         'quantize it with detptq.quantization.quantize_model first')
    for name, module in targets:
        export_type = next(e for q, e in EXPORT_TYPES.items() if isinstance(module, q))
        export = export_type(module, name, quantize)
        parent_name, _, child = name.rpartition('.')
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, export)
    return model
