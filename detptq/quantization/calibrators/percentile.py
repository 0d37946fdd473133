"""Percentile calibration: clip the range at a high percentile of the observed values."""
from typing import Tuple

import torch

from detptq.registry import CALIBRATORS
from .base import BaseCalibrator
from .sample_buffer import SampleBuffer


@CALIBRATORS.register_module()
class PercentileCalibrator(BaseCalibrator):
    """Range from percentiles of a bounded random sample of the observed values.

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
            hi = torch.quantile(values.abs(), q, dim=1)
            return self._finish(quantizer, -hi, hi)
        lo = torch.quantile(values, 1.0 - q, dim=1)
        hi = torch.quantile(values, q, dim=1)
        return self._finish(quantizer, lo, hi)
