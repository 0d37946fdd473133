"""Calibrators (registry ``CALIBRATORS``): ``observe(x)``, ``compute(quantizer) -> (scale, zp)``."""
from .base import BaseCalibrator, RangeCalibrator, channel_view, range_to_qparams
from .ema_minmax import EMAMinMaxCalibrator
from .kl import ImprovedKLCalibrator, KLCalibrator
from .lp_search import LpSearchCalibrator
from .minmax import MinMaxCalibrator
from .percentile import PercentileCalibrator

__all__ = [
    'BaseCalibrator', 'RangeCalibrator', 'channel_view', 'range_to_qparams', 'MinMaxCalibrator',
    'EMAMinMaxCalibrator', 'PercentileCalibrator', 'LpSearchCalibrator', 'KLCalibrator', 'ImprovedKLCalibrator'
]
