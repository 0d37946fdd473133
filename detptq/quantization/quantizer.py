"""Uniform fake quantizer with a straight-through estimator and optional LSQ step (docs/METHOD.md §1).

Plain attributes read by the reconstruction and export code:

- ``scale``: float tensor, shape ``()`` per tensor or ``(C,)`` per channel
  (a buffer, or an ``nn.Parameter`` when the step size is learnt, LSQ).
- ``zero_point``: float tensor holding integers, same shape as ``scale``
  (always 0 for symmetric modes); exporters cast it to int8/uint8.
- ``qmin`` / ``qmax``: integer code range; ``ch_axis``: channel axis of the
  quantized tensor when ``per_channel``; ``bits``; ``enabled``.

``x_hat = (clamp(round(x / scale) + zero_point, qmin, qmax) - zero_point) * scale``.
"""
import math
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import nn

from detptq.registry import CALIBRATORS, QUANTIZERS
# re-exported: the rest of the project imports these names from here too
from .functional import (MIN_SCALE, PASS_THROUGH_BITS, broadcast_to_channel,  # noqa: F401
                         code_range, fake_quantize, grad_scale, round_ste)


def _require_bool(owner: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f'{owner}: {key}={value!r} is invalid; expected True or False')
    return value


def build_calibrator(cfg: Union[None, Dict, Any], per_channel: bool, ch_axis: int):
    """Build a calibrator from a config (or take an instance); give it the granularity."""
    if cfg is None:
        cfg = dict(type='MinMaxCalibrator')
    if isinstance(cfg, dict):
        if 'type' not in cfg:
            raise ValueError(f'calibrator config {cfg!r} has no "type" key')
        # Registration happens when the calibrators package is imported.
        import detptq.quantization.calibrators  # noqa: F401
        calibrator = CALIBRATORS.build(dict(cfg))
    else:
        calibrator = cfg
    if not (hasattr(calibrator, 'observe') and hasattr(calibrator, 'compute')):
        raise ValueError(f'calibrator {calibrator!r} lacks observe()/compute()')
    calibrator.configure(per_channel=per_channel, ch_axis=ch_axis)
    return calibrator


@QUANTIZERS.register_module()
class UniformQuantizer(nn.Module):
    """Uniform affine fake quantizer: symmetric / asymmetric / unsigned, per tensor or per channel.

    Args:
        bits: 2..8 quantize; >= 16 is a pass-through ("keep in high precision").
        symmetric: zero point fixed at 0; otherwise asymmetric with range [0, 2^k - 1].
        unsigned: with ``symmetric``, use codes [0, 2^k - 1] (post-ReLU activations).
        narrow_range: signed symmetric only; drop the code -2^(k-1) (TensorRT weights).
        per_channel: one scale per slice along ``ch_axis``.
        learn_scale: make ``scale`` an ``nn.Parameter`` with LSQ's gradient scaling.
        calibrator: config dict (registry ``CALIBRATORS``) or instance; default MinMax.
    """

    def __init__(self,
                 bits: int = 8,
                 symmetric: bool = True,
                 unsigned: bool = False,
                 narrow_range: bool = False,
                 per_channel: bool = False,
                 ch_axis: int = 0,
                 learn_scale: bool = False,
                 calibrator: Union[None, Dict, Any] = None):
        super().__init__()
        owner = type(self).__name__
        if isinstance(bits, bool) or not isinstance(
                bits, int) or not (2 <= bits <= 8 or bits >= PASS_THROUGH_BITS):
            raise ValueError(f'{owner}: bits={bits!r} is invalid; use an int in 2..8, '
                             f'or >= {PASS_THROUGH_BITS} for pass-through')
        self.bits = bits
        self.symmetric = _require_bool(owner, 'symmetric', symmetric)
        self.unsigned = _require_bool(owner, 'unsigned', unsigned)
        self.narrow_range = _require_bool(owner, 'narrow_range', narrow_range)
        self.per_channel = _require_bool(owner, 'per_channel', per_channel)
        learn_scale = _require_bool(owner, 'learn_scale', learn_scale)
        if self.unsigned and not self.symmetric:
            raise ValueError(f'{owner}: unsigned=True needs symmetric=True '
                             '(asymmetric already uses codes [0, 2^k - 1])')
        if self.narrow_range and (self.unsigned or not self.symmetric):
            raise ValueError(f'{owner}: narrow_range=True applies to signed symmetric '
                             'quantizers only (unsigned/asymmetric given)')
        if isinstance(ch_axis, bool) or not isinstance(ch_axis, int):
            raise ValueError(f'{owner}: ch_axis={ch_axis!r} is invalid; expected an int')
        self.ch_axis = ch_axis
        self.enabled = True
        # When True, forward() feeds its input to the calibrator (used by calibrate()).
        self.observing = False
        self.register_buffer('scale', torch.tensor(1.0))
        self.register_buffer('zero_point', torch.tensor(0.0))
        self.learn_scale = False
        self.set_learn_scale(learn_scale)
        self.calibrator = build_calibrator(calibrator, self.per_channel, self.ch_axis)

    # ----------------------------------------------------------------- ranges
    @property
    def is_pass_through(self) -> bool:
        """True when ``bits >= 16``: forward returns its input unchanged."""
        return self.bits >= PASS_THROUGH_BITS

    @property
    def is_signed(self) -> bool:
        """True when the code range includes negative integers."""
        return self.symmetric and not self.unsigned

    @property
    def qmin(self) -> int:
        """Smallest integer code."""
        return code_range(self.bits, self.is_signed, self.narrow_range)[0]

    @property
    def qmax(self) -> int:
        """Largest integer code."""
        return code_range(self.bits, self.is_signed, self.narrow_range)[1]

    # ------------------------------------------------------------- parameters
    def set_learn_scale(self, flag: bool) -> None:
        """Turn the step size into a learnable LSQ parameter (or back into a buffer)."""
        current = self.scale.detach().clone()
        del self.scale  # works for both buffers and parameters
        if flag:
            self.scale = nn.Parameter(current)
        else:
            self.register_buffer('scale', current)
        self.learn_scale = flag

    def set_params(self, scale: torch.Tensor, zero_point: Optional[torch.Tensor] = None) -> None:
        """Set scale and zero point (shape ``()`` per tensor, ``(C,)`` per channel)."""
        scale = torch.as_tensor(scale, dtype=torch.float32).detach()
        if zero_point is None:
            zero_point = torch.zeros_like(scale)
        zero_point = torch.as_tensor(zero_point, dtype=torch.float32).detach()
        expected_dim = 1 if self.per_channel else 0
        if not self.per_channel and scale.numel() == 1:
            scale, zero_point = scale.reshape(()), zero_point.reshape(())
        if scale.dim() != expected_dim or zero_point.shape != scale.shape:
            raise ValueError(
                f'{type(self).__name__}: scale shape {tuple(scale.shape)} / zero_point '
                f'shape {tuple(zero_point.shape)} do not fit per_channel={self.per_channel}')
        scale = scale.clamp_min(MIN_SCALE).to(self.scale.device)
        zero_point = zero_point.to(self.zero_point.device)
        if isinstance(self.scale, nn.Parameter):
            self.scale.data = scale
        else:
            self.scale = scale
        self.zero_point = zero_point

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Calibrated scales have a shape only known after calibration: adopt the stored one.
        for name in ('scale', 'zero_point'):
            stored = state_dict.get(prefix + name)
            current = getattr(self, name)
            if stored is not None and stored.shape != current.shape:
                if isinstance(current, nn.Parameter):
                    current.data = torch.empty_like(stored)
                else:
                    setattr(self, name, torch.empty_like(stored))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------ calibration
    def observe(self, x: torch.Tensor) -> None:
        """Feed a tensor to the calibrator's statistics."""
        self.calibrator.observe(x.detach())

    def compute_params(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """Compute scale/zero point from the calibrator's statistics and store them."""
        scale, zero_point = self.calibrator.compute(self)
        self.set_params(scale, zero_point)
        return self.scale.detach(), self.zero_point

    # ---------------------------------------------------------------- forward
    def broadcast_params(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Scale and zero point shaped to broadcast against ``x``."""
        if self.per_channel and self.scale.dim() == 1 and self.scale.numel() != x.shape[
                self.ch_axis]:
            raise RuntimeError(
                f'{type(self).__name__}: {self.scale.numel()} channel scales for a tensor '
                f'with {x.shape[self.ch_axis]} channels on axis {self.ch_axis}; '
                'calibrate first')
        return (broadcast_to_channel(self.scale, x.dim(), self.ch_axis),
                broadcast_to_channel(self.zero_point, x.dim(), self.ch_axis))

    def lsq_grad_factor(self, x: torch.Tensor) -> float:
        """LSQ step-size gradient scale ``1 / sqrt(N * Q_p)``, N = elements per scale."""
        per_scale = x.numel() / max(self.scale.numel(), 1)
        return 1.0 / math.sqrt(per_scale * self.qmax)

    def quantize_dequantize(self, x: torch.Tensor) -> torch.Tensor:
        """Fake-quantize ``x`` with the current parameters (STE on rounding)."""
        scale, zero_point = self.broadcast_params(x)
        if self.learn_scale:
            scale = grad_scale(scale, self.lsq_grad_factor(x))
        return fake_quantize(x, scale, zero_point, self.qmin, self.qmax, rounding=round_ste)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            self.observe(x)
        if not self.enabled or self.is_pass_through:
            return x
        return self.quantize_dequantize(x)

    @torch.no_grad()
    def to_int(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes of ``x`` (as float tensor) under the current parameters."""
        scale, zero_point = self.broadcast_params(x)
        return torch.clamp(torch.round(x / scale) + zero_point, self.qmin, self.qmax)

    def extra_repr(self) -> str:
        mode = 'symmetric' if self.symmetric else 'asymmetric'
        if self.unsigned:
            mode = 'unsigned ' + mode
        gran = f'per_channel(axis={self.ch_axis})' if self.per_channel else 'per_tensor'
        return (f'bits={self.bits}, {mode}, narrow_range={self.narrow_range}, {gran}, '
                f'learn_scale={self.learn_scale}, calibrator={type(self.calibrator).__name__}')
