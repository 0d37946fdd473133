"""EMA MinMax calibration (QAT whitepaper, Krishnamoorthi 2018): smoothed running range."""
from typing import Optional, Tuple

import torch

from detptq.registry import CALIBRATORS
from .base import BaseCalibrator


@CALIBRATORS.register_module()
class EMAMinMaxCalibrator(BaseCalibrator):
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

    def reset(self) -> None:
        self.min_val: Optional[torch.Tensor] = None
        self.max_val: Optional[torch.Tensor] = None

    @property
    def has_data(self) -> bool:
        return self.min_val is not None

    def observe(self, x: torch.Tensor) -> None:
        view = self._view(x)
        batch_min, batch_max = view.min(dim=1).values, view.max(dim=1).values
        if self.min_val is None:
            self.min_val, self.max_val = batch_min, batch_max
            return
        m = self.momentum
        self.min_val = m * self.min_val + (1.0 - m) * batch_min
        self.max_val = m * self.max_val + (1.0 - m) * batch_max

    def compute(self, quantizer) -> Tuple[torch.Tensor, torch.Tensor]:
        self._check_has_data()
        return self._finish(quantizer, self.min_val, self.max_val)
