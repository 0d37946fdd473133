"""Lp-norm clipping search: pick the range minimising mean |x - Q(x)|^p (docs/METHOD.md §2)."""
from typing import Optional, Tuple

import torch

from detptq.registry import CALIBRATORS
from detptq.quantization.functional import fake_quantize
from .base import RangeCalibrator, range_to_qparams, squeeze_per_tensor
from .sample_buffer import SampleBuffer

#: elements of the (candidates, C, N) error tensor evaluated at once
_CHUNK_ELEMENTS = 4_000_000


def lp_error(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int,
             p: float) -> torch.Tensor:
    """Mean ``|x - Q(x)|^p`` over the last axis (``scale``/``zero_point`` broadcast on ``x``)."""
    return (x - fake_quantize(x, scale, zero_point, qmin, qmax)).abs().pow(p).mean(dim=-1)


@CALIBRATORS.register_module()
class LpSearchCalibrator(RangeCalibrator):
    """Grid search over clipping ratios ``alpha_i = 1 - i * step`` of the observed range.

    Candidate ranges are ``[alpha * min, alpha * max]`` (reference code: 80-100
    candidates in 1% steps; p = 2.4 there, p = 2 is MSE). Per channel the search
    is vectorised over channels and candidates. Activations are searched on a
    bounded random sample (``max_samples`` per channel / per tensor; weights are
    kept whole); the unclipped range is always exact.
    """

    def __init__(self,
                 p: float = 2.0,
                 num_candidates: int = 100,
                 step: float = 0.01,
                 max_samples: int = 262_144,
                 seed: int = 0):
        if not isinstance(p, (int, float)) or p <= 0:
            raise ValueError(f'LpSearchCalibrator: p={p!r} is invalid; expected a positive number')
        if not isinstance(num_candidates, int) or num_candidates < 1:
            raise ValueError(f'LpSearchCalibrator: num_candidates={num_candidates!r} is invalid')
        if not isinstance(step, (int, float)) or step <= 0 or step * (num_candidates - 1) >= 1:
            raise ValueError(f'LpSearchCalibrator: step={step!r} is invalid; need 0 < step and '
                             f'step * (num_candidates - 1) < 1 (num_candidates={num_candidates})')
        self.p = float(p)
        self.num_candidates = num_candidates
        self.step = float(step)
        self.max_samples = max_samples
        self.seed = seed
        super().__init__()

    def reset(self) -> None:
        super().reset()
        self.samples = SampleBuffer(self.max_samples, self.seed)

    def observe(self, x: torch.Tensor) -> None:
        view = self._view(x)
        self.samples.add(view)
        self._update_range(view)

    def candidate_ratios(self, device: Optional[torch.device] = None) -> torch.Tensor:
        """Clip ratios from 1.0 downwards in ``step`` steps (on ``device``, default CPU)."""
        return 1.0 - self.step * torch.arange(self.num_candidates, dtype=torch.float32,
                                              device=device)

    def search(self, quantizer, values: torch.Tensor, lo: torch.Tensor,
               hi: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Errors ``(num_candidates, C)`` and the best (scale, zero_point) per channel."""
        ratios = self.candidate_ratios(values.device)
        per_candidate = max(1, _CHUNK_ELEMENTS // max(values.numel(), 1))
        errors = []
        for start in range(0, len(ratios), per_candidate):
            r = ratios[start:start + per_candidate, None]  # (n, 1)
            scale, zp = range_to_qparams(quantizer, lo[None] * r, hi[None] * r)  # (n, C)
            errors.append(
                lp_error(values[None], scale[..., None], zp[..., None], quantizer.qmin,
                         quantizer.qmax, self.p))
        errors = torch.cat(errors, dim=0)
        # argmin returns the first minimum: ties keep the wider range.
        best = errors.argmin(dim=0)
        best_ratio = ratios[best]
        scale, zp = range_to_qparams(quantizer, lo * best_ratio, hi * best_ratio)
        return errors, scale, zp

    def compute(self, quantizer) -> Tuple[torch.Tensor, torch.Tensor]:
        self._check_has_data()
        _, scale, zp = self.search(quantizer, self.samples.values(), self.min_val, self.max_val)
        return (squeeze_per_tensor(scale,
                                   self.per_channel), squeeze_per_tensor(zp, self.per_channel))
