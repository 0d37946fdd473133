"""AdaRound: learnt up/down rounding of weights (docs/METHOD.md section 5).

``AdaRoundQuantizer(base, weight)`` takes the place of a layer's
``weight_quantizer`` during reconstruction. It reuses the base
``UniformQuantizer``'s scale, zero point and code range (the weight scale is
not trained here) and learns one variable V per weight element:

    W_soft = s * (clamp(floor(W/s) + h(V) + z, qmin, qmax) - z)
    h(V)   = clamp(sigmoid(V) * (zeta - gamma) + gamma, 0, 1),  zeta 1.1, gamma -0.1

V starts where h(V) equals the fractional part of W/s, so the soft weight
equals the FP weight (inside the clipping range). ``rounding_loss(beta)`` is
the regulariser ``sum(1 - |2h(V) - 1|^beta)`` (the driver multiplies lambda);
``LinearTempDecay`` gives beta. ``hard()`` switches to ``floor(W/s) + (V >= 0)``.

CFWS (a base with an active kernel split, docs/METHOD.md section 3): the coarse
centre C stays as calibrated and AdaRound learns the fine-grid rounding of the
surrounding taps; the centre's fine residual keeps nearest rounding, because
a learnt centre code could move the re-derived coarse code and the written
weight would no longer reproduce itself. Once hard, ``forward`` returns the
weight to write back: on-grid surrounding taps and the original centre, which
the base CFWS quantizer maps to exactly the hardened quantized kernel.
"""
from __future__ import annotations

import torch
from torch import nn

from detptq.quantization.cfws import centre_mask, is_splittable

ZETA = 1.1
GAMMA = -0.1


class AdaRoundQuantizer(nn.Module):
    """Weight fake quantizer with learnable rounding, sharing a UniformQuantizer's grid."""

    def __init__(self, base: nn.Module, weight: torch.Tensor,
                 zeta: float = ZETA, gamma: float = GAMMA) -> None:
        super().__init__()
        # a plain attribute list keeps base out of this module's parameters/state
        self._base = [base]
        self.zeta = zeta
        self.gamma = gamma
        self.soft = True
        self._coarse = self._centre = self._centre_offset = None
        with torch.no_grad():
            scale, _ = self._grid(weight)
            if getattr(base, 'split', False) and is_splittable(weight):
                self._coarse = base.coarse_part(weight, base.coarse_scale).detach()
                self._centre = centre_mask(weight).bool()
                fine = (weight - self._coarse) / scale
                self._centre_offset = torch.round(fine) - torch.floor(fine)
                weight = weight - self._coarse
            frac = weight / scale - torch.floor(weight / scale)
            # invert h: sigmoid(V) = (frac - gamma) / (zeta - gamma)
            ratio = (frac - gamma) / (zeta - gamma)
            v_init = torch.log(ratio / (1 - ratio))
            # the weight and its grid stay fixed during reconstruction: floor(W/s) once
            # (not for CFWS: its fine residual is a new tensor on every forward)
            key = None if self._coarse is not None else self._key(weight)
            self._floor_cache = (key, torch.floor(weight / scale))
        self.v = nn.Parameter(v_init.detach().clone())

    @property
    def base(self) -> nn.Module:
        """The wrapped UniformQuantizer (scale, zero_point, qmin, qmax)."""
        return self._base[0]

    @property
    def enabled(self) -> bool:
        """The base quantizer's flag (``set_quant_state`` toggles it through here)."""
        return bool(self.base.enabled)

    @enabled.setter
    def enabled(self, flag: bool) -> None:
        self.base.enabled = flag

    @property
    def active(self) -> bool:
        """False when the base quantizer is disabled or a pass-through."""
        return bool(self.base.enabled) and not self.base.is_pass_through

    def _grid(self, weight: torch.Tensor):
        scale, zero_point = self.base.broadcast_params(weight)
        return scale.detach(), zero_point.detach()

    def h(self) -> torch.Tensor:
        """Rectified sigmoid h(V) in [0, 1]."""
        return torch.clamp(torch.sigmoid(self.v) * (self.zeta - self.gamma)
                           + self.gamma, 0, 1)

    def hard(self) -> 'AdaRoundQuantizer':
        """Freeze rounding: from now on forward uses floor(W/s) + (V >= 0)."""
        self.soft = False
        self.v.requires_grad_(False)
        return self

    def rounding_offset(self) -> torch.Tensor:
        """h(V) while soft, the binary decision (V >= 0) once hard (CFWS centre: nearest)."""
        offset = self.h() if self.soft else (self.v >= 0).to(self.v.dtype)
        if self._centre is not None:
            offset = torch.where(self._centre, self._centre_offset, offset)
        return offset

    def _key(self, weight: torch.Tensor) -> tuple:
        """Identity and in-place version of the weight and of the base scale."""
        base_scale = self.base.scale
        return (id(weight), weight._version, id(base_scale), base_scale._version)

    def _floor(self, weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """floor(W / s), cached while the weight and the base scale are unchanged."""
        key, floor = self._floor_cache
        if key == self._key(weight) and floor.shape == weight.shape:
            return floor
        return torch.floor(weight / scale)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return weight
        scale, zero_point = self._grid(weight)
        fine_in = weight if self._coarse is None else weight - self._coarse
        codes = self._floor(fine_in, scale) + self.rounding_offset() + zero_point
        codes = torch.clamp(codes, self.base.qmin, self.base.qmax)
        out = (codes - zero_point) * scale
        if self._coarse is None:
            return out
        if self.soft:
            return out + self._coarse
        return torch.where(self._centre, weight, out)  # see the module docstring (CFWS)

    def rounding_loss(self, beta: float) -> torch.Tensor:
        """sum(1 - |2h(V) - 1|^beta): pushes every h(V) towards 0 or 1 (learnt taps only)."""
        loss = 1 - (2 * self.h() - 1).abs().pow(beta)
        if self._centre is not None:
            loss = loss.masked_fill(self._centre, 0.0)
        return loss.sum()

    def extra_repr(self) -> str:
        return f'soft={self.soft}, zeta={self.zeta}, gamma={self.gamma}'


class LinearTempDecay:
    """beta schedule: start_b during warm-up, then linear to end_b at the last iteration.

    ``iters`` is the number of iterations t = 0 .. iters-1; the rounding
    regulariser is off while ``in_warmup(t)`` (t < warm_up * iters).
    """

    def __init__(self, iters: int, warm_up: float = 0.2,
                 start_b: float = 20.0, end_b: float = 2.0) -> None:
        if iters < 1 or not 0 <= warm_up < 1:
            raise ValueError(f'need iters >= 1 and 0 <= warm_up < 1, got {iters}, {warm_up}')
        self.iters = iters
        self.start_decay = int(warm_up * iters)
        self.start_b = start_b
        self.end_b = end_b

    def in_warmup(self, t: int) -> bool:
        """True while the rounding regulariser is switched off."""
        return t < self.start_decay

    def __call__(self, t: int) -> float:
        if t <= self.start_decay:
            return self.start_b
        span = max(self.iters - 1 - self.start_decay, 1)
        rel = min((t - self.start_decay) / span, 1.0)
        return self.end_b + (self.start_b - self.end_b) * (1.0 - rel)
