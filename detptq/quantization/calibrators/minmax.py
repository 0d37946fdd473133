"""MinMax calibration: the range is the observed minimum and maximum (METHOD.md §2)."""
from typing import Optional, Tuple

import torch

from detptq.registry import CALIBRATORS
from .base import BaseCalibrator


@CALIBRATORS.register_module()
class MinMaxCalibrator(BaseCalibrator):
    """Running min/max over all observed tensors; symmetric gives ``s = max|x| / (2^(k-1)-1)``."""

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
        else:
            self.min_val = torch.minimum(self.min_val, batch_min)
            self.max_val = torch.maximum(self.max_val, batch_max)

    def compute(self, quantizer) -> Tuple[torch.Tensor, torch.Tensor]:
        self._check_has_data()
        return self._finish(quantizer, self.min_val, self.max_val)
