"""Coarse & Fine Weight Splitting for re-parameterized kxk kernels (CFWS paper, docs/METHOD.md §3).

For a kernel W (Cout, Cin, k, k), k odd > 1, with centre taps ``W_c``:

1. coarse: ``s_c = max|W_c| / (2^(b-1) - 1)`` per output channel (MinMax),
   ``C = Q(W_c, s_c) * s_c``;
2. fine: ``W_union`` = W with its centre replaced by the residual ``W_c - C``;
   ``F = Q(W_union, s_f) * s_f`` with ``s_f`` from the quantizer's calibrator
   (MinMax by default, as in the paper);
3. ``W_hat = F + C`` placed at the centre.

Deployment needs the kxk conv with F plus a 1x1 conv with C (same stride,
padding reduced by ``centre * dilation``), summed: that extra 1x1 conv is the
cost reported by :func:`cfws_extra_bops`.
"""
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch
from torch import nn

from detptq.registry import QUANTIZERS
from .bops import count_bops
from .functional import fake_quantize, range_to_qparams, round_ste
from .quantizer import UniformQuantizer


def is_splittable(weight: torch.Tensor) -> bool:
    """True for 4-D kernels with an odd spatial size > 1 (they have a single centre tap)."""
    return (weight.dim() == 4 and weight.shape[2] == weight.shape[3] and weight.shape[2] > 1
            and weight.shape[2] % 2 == 1)


def centre_mask(weight: torch.Tensor) -> torch.Tensor:
    """A (1, 1, k, k) tensor with 1 at the centre tap."""
    k = weight.shape[-1]
    mask = torch.zeros(1, 1, k, k, dtype=weight.dtype, device=weight.device)
    mask[..., k // 2, k // 2] = 1
    return mask


@QUANTIZERS.register_module()
class CFWSWeightQuantizer(UniformQuantizer):
    """Weight fake quantizer applying CFWS to kxk kernels (k odd > 1); plain uniform otherwise.

    Extra attribute ``coarse_scale`` (shape like ``scale``): step of the coarse
    centre quantization; ``scale`` is the fine step. ``split`` tells whether the
    last calibrated weight was split. Signed symmetric only.
    """

    def __init__(self,
                 bits: int = 8,
                 symmetric: bool = True,
                 unsigned: bool = False,
                 narrow_range: bool = True,
                 per_channel: bool = True,
                 ch_axis: int = 0,
                 learn_scale: bool = False,
                 calibrator: Union[None, Dict, Any] = None):
        if symmetric is not True or unsigned is not False:
            raise ValueError('CFWSWeightQuantizer: needs symmetric=True, unsigned=False '
                             f'(got symmetric={symmetric!r}, unsigned={unsigned!r})')
        if per_channel and ch_axis != 0:
            raise ValueError(f'CFWSWeightQuantizer: ch_axis={ch_axis!r} is invalid; '
                             'output channels of a conv kernel are axis 0')
        super().__init__(bits=bits,
                         symmetric=True,
                         unsigned=False,
                         narrow_range=narrow_range,
                         per_channel=per_channel,
                         ch_axis=ch_axis,
                         learn_scale=learn_scale,
                         calibrator=calibrator)
        self.register_buffer('coarse_scale', torch.tensor(1.0))
        # A buffer so that a reloaded state dict remembers whether CFWS applies.
        self.register_buffer('split_active', torch.tensor(False))
        # host copy of split_active: forward reads it without a device-to-host sync
        self._split = False
        self._pending_coarse: Optional[torch.Tensor] = None

    @property
    def split(self) -> bool:
        """True when forward splits the kernel (set by calibration on a kxk weight)."""
        return self._split

    def _coarse_scale_for(self, weight: torch.Tensor) -> torch.Tensor:
        centre = weight[:, :, weight.shape[2] // 2, weight.shape[3] // 2]
        amax = centre.abs().amax(dim=1) if self.per_channel else centre.abs().amax()
        scale, _ = range_to_qparams(self, -amax, amax)
        return scale

    def coarse_part(self, weight: torch.Tensor, coarse_scale: torch.Tensor) -> torch.Tensor:
        """The coarse-quantized centre taps as a full kxk kernel (zeros around)."""
        k = weight.shape[-1]
        centre = weight[:, :, k // 2, k // 2]
        scale = coarse_scale.reshape(-1, 1) if coarse_scale.dim() == 1 else coarse_scale
        coarse = fake_quantize(centre,
                               scale,
                               torch.zeros_like(scale),
                               self.qmin,
                               self.qmax,
                               rounding=round_ste)
        return coarse[:, :, None, None] * centre_mask(weight)

    def observe(self, x: torch.Tensor) -> None:
        weight = x.detach()
        if not is_splittable(weight):
            self._pending_coarse = None
            super().observe(weight)
            return
        coarse_scale = self._coarse_scale_for(weight)
        self._pending_coarse = coarse_scale
        super().observe(weight - self.coarse_part(weight, coarse_scale))

    def compute_params(self) -> Tuple[torch.Tensor, torch.Tensor]:
        result = super().compute_params()
        self._split = self._pending_coarse is not None
        self.split_active = torch.tensor(self._split,
                                         device=self.scale.device)  # stays on the model's device
        if self.split:
            self.coarse_scale = self._pending_coarse.to(self.scale.device)
        return result

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        stored = state_dict.get(prefix + 'coarse_scale')
        if stored is not None and stored.shape != self.coarse_scale.shape:
            self.coarse_scale = torch.empty_like(stored)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._split = bool(self.split_active)  # once per load, not per forward

    def split_weight(self, weight: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(fine kxk kernel, coarse centre as (Cout, Cin, 1, 1))``, both fake-quantized."""
        coarse = self.coarse_part(weight, self.coarse_scale)
        fine = super().quantize_dequantize(weight - coarse)
        k = weight.shape[-1]
        return fine, coarse[:, :, k // 2:k // 2 + 1, k // 2:k // 2 + 1]

    def quantize_dequantize(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.split and is_splittable(x)):
            return super().quantize_dequantize(x)
        coarse = self.coarse_part(x, self.coarse_scale)
        return super().quantize_dequantize(x - coarse) + coarse

    def extra_repr(self) -> str:
        return super().extra_repr() + f', cfws_split={self.split}'


def cfws_extra_bops(model: nn.Module,
                    inputs: Any,
                    forward_fn: Optional[Callable[[nn.Module, Any], Any]] = None) -> Dict[str, Any]:
    """BOPs of the model and the extra BOPs of CFWS's centre 1x1 convs (per input sample).

    Returns ``dict(total_bops, cfws_extra_bops, extra_ratio, layers)`` where
    ``total_bops`` includes the extra cost and ``layers`` lists per-layer counts.
    """
    report = count_bops(model, inputs, forward_fn)
    extra = sum(layer['extra_bops'] for layer in report['layers'])
    base = report['total_bops'] - extra
    return dict(total_bops=report['total_bops'],
                cfws_extra_bops=extra,
                extra_ratio=extra / base if base else 0.0,
                layers=report['layers'])
