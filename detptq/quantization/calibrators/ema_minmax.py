"""EMA MinMax calibration (QAT whitepaper, Krishnamoorthi 2018): smoothed running range."""
from typing import Tuple

import torch

from detptq.registry import CALIBRATORS
from .base import RangeCalibrator


@CALIBRATORS.register_module()
class EMAMinMaxCalibrator(RangeCalibrator):
    """Exponential moving average of per-batch min/max.

    The first batch initialises the range; each later batch updates
    ``running = momentum * running + (1 - momentum) * batch``.
    """

    def __init__(self, momentum: float = 0.9):
        if not isinstance(momentum, (int, float)) or not 0.0 <= momentum < 1.0:
            raise ValueError(
                f'EMAMinMaxCalibrator: momentum={momentum!r} is invalid; use 0 <= momentum < 1')
        self.momentum = float(momentum)
        super().__init__()

    def _merge_range(self, batch_min: torch.Tensor,
                     batch_max: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        m = self.momentum
        return (m * self.min_val + (1.0 - m) * batch_min, m * self.max_val + (1.0 - m) * batch_max)
