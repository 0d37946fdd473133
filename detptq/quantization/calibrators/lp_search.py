"""Lp-norm clipping search: pick the range minimising mean |x - Q(x)|^p (docs/METHOD.md §2).

``lp_clip_search`` is the search itself, for one or several p at once; the
``LpSearchCalibrator`` and the DetPTQ p search (detptq.reconstruction.p_search)
both use it.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from detptq.registry import CALIBRATORS
from detptq.quantization.functional import fake_quantize
from .base import RangeCalibrator, range_to_qparams, squeeze_per_tensor
from .sample_buffer import SampleBuffer

#: elements of the (candidates, C, N) error tensor evaluated at once
_CHUNK_ELEMENTS = 4_000_000


QParams = Tuple[torch.Tensor, torch.Tensor]  # (scale, zero_point)


def abs_powers(err: torch.Tensor, p_values: Sequence[float],
               half_powers_by_sqrt: bool = False) -> List[torch.Tensor]:
    """``err ** p`` for each p (``err`` >= 0).

    ``half_powers_by_sqrt``: integer and half-integer p as products of integer
    powers and one ``sqrt`` shared by all p (much cheaper than ``pow`` for
    several p; equal to ``pow`` up to float rounding in the last bit).
    """
    if not half_powers_by_sqrt:
        return [err.pow(p) for p in p_values]
    cache: Dict[float, torch.Tensor] = {1.0: err}
    root = None
    out = []
    for p in p_values:
        whole, half = divmod(float(p), 1.0)
        if half not in (0.0, 0.5) or whole > 8:
            out.append(err.pow(p))
            continue
        if whole not in cache:
            cache[whole] = err.pow(int(whole))
        value = cache[whole]
        if half:
            root = err.sqrt() if root is None else root
            value = root if whole == 0 else value * root
        out.append(value)
    return out


def lp_clip_search(grid, values: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
                   ratios: torch.Tensor, p_values: Sequence[float],
                   half_powers_by_sqrt: bool = False) -> List[QParams]:
    """Per p, the (scale, zero_point) ``(C,)`` of the range with the least error.

    Candidate ranges are ``[r * lo, r * hi]`` for each clip ratio r; the error
    of a candidate is mean ``|x - Q(x)|^p`` over the last axis of ``values``
    (``(C, N)``), each candidate fake-quantizing ``values`` once for all p.
    ``argmin`` returns the first minimum: ties keep the wider range.
    """
    per_chunk = max(1, _CHUNK_ELEMENTS // max(values.numel(), 1))
    errors: List[List[torch.Tensor]] = [[] for _ in p_values]
    for start in range(0, len(ratios), per_chunk):
        r = ratios[start:start + per_chunk, None]  # (n, 1)
        scale, zp = range_to_qparams(grid, lo[None] * r, hi[None] * r)  # (n, C)
        err = (values[None] - fake_quantize(values[None], scale[..., None], zp[..., None],
                                            grid.qmin, grid.qmax)).abs()
        for i, powered in enumerate(abs_powers(err, p_values, half_powers_by_sqrt)):
            errors[i].append(powered.mean(dim=-1))
    params = []
    for per_p in errors:
        best_ratio = ratios[torch.cat(per_p, dim=0).argmin(dim=0)]
        params.append(range_to_qparams(grid, lo * best_ratio, hi * best_ratio))
    return params


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

    def compute_per_p(self, quantizer, p_values: Sequence[float],
                      half_powers_by_sqrt: bool = False) -> List[QParams]:
        """``compute`` for each p in ``p_values`` from one pass over the candidates."""
        self._check_has_data()
        values = self.samples.values()
        params = lp_clip_search(quantizer, values, self.min_val, self.max_val,
                                self.candidate_ratios(values.device), p_values,
                                half_powers_by_sqrt)
        return [(squeeze_per_tensor(scale, self.per_channel),
                 squeeze_per_tensor(zp, self.per_channel)) for scale, zp in params]

    def compute(self, quantizer) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.compute_per_p(quantizer, (self.p,))[0]
