"""The bottom of the quantization package: integer grids and fake quantization on plain tensors.

No modules, no calibrators, no registry: ``quantizer.py``, the calibrators,
CFWS, the p search and the ONNX export all build on these functions, and this
file imports nothing from detptq (docs/ARCHITECTURE.md, "Layers").

A grid is described by anything with ``qmin``, ``qmax``, ``symmetric`` and
``unsigned`` attributes: a ``QuantGrid`` or a ``UniformQuantizer``.
"""
from dataclasses import dataclass
from typing import Callable, Tuple

import torch

#: bit widths at or above this value mean "keep in high precision"
PASS_THROUGH_BITS = 16
#: smallest step size a quantizer will accept (avoids division by zero)
MIN_SCALE = 1e-8


def code_range(bits: int, signed: bool, narrow_range: bool = False) -> Tuple[int, int]:
    """``(qmin, qmax)`` of a ``bits``-bit integer code (narrow range drops the lowest signed code)."""
    if signed:
        return -(2**(bits - 1)) + int(narrow_range), 2**(bits - 1) - 1
    return 0, 2**bits - 1


@dataclass(frozen=True)
class QuantGrid:
    """A plain description of an integer grid, for ``range_to_qparams`` without a quantizer module."""
    bits: int = 8
    symmetric: bool = True
    unsigned: bool = False
    narrow_range: bool = False

    @property
    def qmin(self) -> int:
        """Smallest integer code."""
        return code_range(self.bits, self.symmetric and not self.unsigned, self.narrow_range)[0]

    @property
    def qmax(self) -> int:
        """Largest integer code."""
        return code_range(self.bits, self.symmetric and not self.unsigned, self.narrow_range)[1]


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round to nearest with a straight-through (identity) gradient."""
    return (x.round() - x).detach() + x


def grad_scale(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Return ``x`` unchanged in the forward pass, with its gradient multiplied by ``factor``."""
    scaled = x * factor
    return (x - scaled).detach() + scaled


def fake_quantize(x: torch.Tensor,
                  scale: torch.Tensor,
                  zero_point: torch.Tensor,
                  qmin: int,
                  qmax: int,
                  rounding: Callable[[torch.Tensor], torch.Tensor] = torch.round) -> torch.Tensor:
    """Quantize and dequantize ``x``; ``scale``/``zero_point`` must broadcast against ``x``."""
    codes = torch.clamp(rounding(x / scale) + zero_point, qmin, qmax)
    return (codes - zero_point) * scale


def broadcast_to_channel(param: torch.Tensor, ndim: int, ch_axis: int) -> torch.Tensor:
    """Reshape a ``(C,)`` tensor to broadcast along ``ch_axis`` of an ``ndim``-D tensor."""
    if param.dim() == 0:
        return param
    shape = [1] * ndim
    shape[ch_axis] = -1
    return param.reshape(shape)


def range_to_qparams(grid, lo: torch.Tensor, hi: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point that map the range ``[lo, hi]`` onto ``grid``'s codes.

    Works elementwise on tensors of any shape (per channel, or a batch of
    candidate ranges). The range is widened to include 0 so that zero is
    exactly representable (zero padding, ReLU outputs).

    - signed symmetric: ``s = max(|lo|, |hi|) / (2^(k-1) - 1)`` (also with full range),
    - unsigned symmetric: ``s = hi / (2^k - 1)`` (negatives clip to 0),
    - asymmetric: ``s = (hi - lo) / (2^k - 1)``, ``z = clamp(-round(lo / s), 0, 2^k - 1)``.
    """
    lo = torch.clamp(torch.as_tensor(lo, dtype=torch.float32), max=0.0)
    hi = torch.clamp(torch.as_tensor(hi, dtype=torch.float32), min=0.0)
    qmin, qmax = grid.qmin, grid.qmax
    if grid.symmetric:
        amax = hi if grid.unsigned else torch.maximum(-lo, hi)
        scale = (amax / qmax).clamp_min(MIN_SCALE)
        zero_point = torch.zeros_like(scale)
    else:
        scale = ((hi - lo) / (qmax - qmin)).clamp_min(MIN_SCALE)
        zero_point = torch.clamp(qmin - torch.round(lo / scale), qmin, qmax)
    return scale, zero_point
