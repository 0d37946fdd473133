"""Fake quantization that the TorchScript ONNX exporter writes as QuantizeLinear/DequantizeLinear.

In PyTorch the function computes exactly what ``UniformQuantizer`` computes:
``(clamp(round(x / s) + z, qmin, qmax) - z) * s``. When exported it emits an
ONNX ``QuantizeLinear`` -> ``DequantizeLinear`` pair (opset >= 13; ``axis``
for per-channel scales). ONNX's 8-bit Q saturates at the dtype's range only,
so a code range narrower than int8/uint8 (bits < 8, or narrow range) is
enforced by a ``Clip`` in front of the Q, at the real values of the end codes:
round(clip(x) / s) + z then lands in [qmin, qmax], the same codes as the clamp.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from detptq.quantization.functional import broadcast_to_channel

#: code range of each ONNX 8-bit integer type
DTYPE_RANGE = {torch.int8: (-128, 127), torch.uint8: (0, 255)}


def code_dtype(qmin: int, qmax: int) -> torch.dtype:
    """int8 for code ranges with negative codes, uint8 otherwise (both must fit in 8 bits)."""
    dtype = torch.int8 if qmin < 0 else torch.uint8
    low, high = DTYPE_RANGE[dtype]
    if qmin < low or qmax > high:
        raise ValueError(f'code range [{qmin}, {qmax}] does not fit in {dtype}; '
                         'ONNX QDQ export supports up to 8 bits')
    return dtype


def clip_bounds(scale: torch.Tensor, zero_point: torch.Tensor, qmin: int,
                qmax: int) -> Optional[Tuple[float, float]]:
    """Real-valued bounds of the code range when it is narrower than its 8-bit dtype, else None.

    Per-tensor only: the Clip operator takes scalar bounds.
    """
    low, high = DTYPE_RANGE[zero_point.dtype]
    if (qmin, qmax) == (low, high):
        return None
    if scale.numel() != 1:
        raise ValueError('a code range narrower than 8 bits needs a per-tensor scale '
                         'to be enforced by Clip')
    s, z = float(scale), float(zero_point)
    return (qmin - z) * s, (qmax - z) * s


class QuantDequant(torch.autograd.Function):
    """``x -> DequantizeLinear(QuantizeLinear(x))`` with an optional leading ``Clip``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
                axis: int, qmin: int, qmax: int,
                clip: Optional[Tuple[float, float]]) -> torch.Tensor:
        s = broadcast_to_channel(scale, x.dim(), axis)
        z = broadcast_to_channel(zero_point, x.dim(), axis).to(x.dtype)
        return (torch.clamp(torch.round(x / s) + z, qmin, qmax) - z) * s

    @staticmethod
    def symbolic(g, x, scale, zero_point, axis, qmin, qmax, clip):
        if clip is not None:
            low = g.op('Constant', value_t=torch.tensor(clip[0], dtype=torch.float32))
            high = g.op('Constant', value_t=torch.tensor(clip[1], dtype=torch.float32))
            x = g.op('Clip', x, low, high)
        # a 0-d scale is per tensor; ONNX ignores axis then, so leave it out
        per_channel = scale.type().dim() == 1
        kwargs = {'axis_i': axis} if per_channel else {}
        q = g.op('QuantizeLinear', x, scale, zero_point, **kwargs)
        return g.op('DequantizeLinear', q, scale, zero_point, **kwargs)


def quant_dequant(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int,
                  qmin: int, qmax: int, clip: Optional[Tuple[float, float]] = None
                  ) -> torch.Tensor:
    """Fake-quantize ``x`` (exported as Q/DQ); ``zero_point`` is an int8/uint8 tensor."""
    return QuantDequant.apply(x, scale, zero_point, axis, qmin, qmax, clip)
