"""MinMax calibration: the range is the observed minimum and maximum (docs/METHOD.md §2)."""
from detptq.registry import CALIBRATORS
from .base import RangeCalibrator


@CALIBRATORS.register_module()
class MinMaxCalibrator(RangeCalibrator):
    """Running min/max over all observed tensors; symmetric gives ``s = max|x| / (2^(k-1)-1)``."""
