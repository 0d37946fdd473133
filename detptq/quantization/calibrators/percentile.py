"""Percentile calibration: clip the range at a high percentile of the observed values."""
from typing import Tuple

import torch

from detptq.registry import CALIBRATORS
from .base import BaseCalibrator
from .sample_buffer import SampleBuffer

#: torch.quantile refuses inputs above 2^24 elements: evaluate rows in chunks
_QUANTILE_MAX_ELEMENTS = 2**24


def row_quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """Quantile ``q`` of each row of a ``(C, N)`` tensor (linear interpolation, as numpy)."""
    rows = max(1, _QUANTILE_MAX_ELEMENTS // max(values.shape[1], 1))
    return torch.cat([torch.quantile(chunk, q, dim=1) for chunk in values.split(rows, dim=0)])


@CALIBRATORS.register_module()
class PercentileCalibrator(BaseCalibrator):
    """Range from percentiles of a bounded random sample of the observed values.

    ``max_samples`` bounds the kept values per channel (per tensor: in total).

    Symmetric quantizers use the ``percentile`` of ``|x|``; asymmetric ones use
    the ``100 - percentile`` and ``percentile`` percentiles of ``x``.
    Percentiles use linear interpolation (numpy's default).
    """

    def __init__(self, percentile: float = 99.99, max_samples: int = 1_000_000, seed: int = 0):
        if not isinstance(percentile, (int, float)) or not 50.0 < percentile <= 100.0:
            raise ValueError(
                f'PercentileCalibrator: percentile={percentile!r} is invalid; use 50 < p <= 100')
        self.percentile = float(percentile)
        self.max_samples = max_samples
        self.seed = seed
        super().__init__()

    def reset(self) -> None:
        self.samples = SampleBuffer(self.max_samples, self.seed)

    @property
    def has_data(self) -> bool:
        return self.samples.values() is not None

    def observe(self, x: torch.Tensor) -> None:
        self.samples.add(self._view(x))

    def compute(self, quantizer) -> Tuple[torch.Tensor, torch.Tensor]:
        self._check_has_data()
        values = self.samples.values()
        q = self.percentile / 100.0
        if quantizer.symmetric:
            hi = row_quantile(values.abs(), q)
            return self._finish(quantizer, -hi, hi)
        lo = row_quantile(values, 1.0 - q)
        hi = row_quantile(values, q)
        return self._finish(quantizer, lo, hi)
