"""Calibrator base classes; ranges become (scale, zero_point) through ``functional.range_to_qparams``."""
from typing import Optional, Tuple

import torch

from detptq.quantization.functional import range_to_qparams  # noqa: F401  (also exported here)


def channel_view(x: torch.Tensor, per_channel: bool, ch_axis: int) -> torch.Tensor:
    """View ``x`` as ``(C, N)`` (per channel along ``ch_axis``) or ``(1, N)`` (per tensor)."""
    x = x.detach().float()
    if not per_channel:
        return x.reshape(1, -1)
    return x.transpose(0, ch_axis).reshape(x.shape[ch_axis], -1)


def squeeze_per_tensor(values: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """Per-tensor statistics are computed as shape ``(1,)``; quantizers want ``()``."""
    return values if per_channel else values.reshape(())


class BaseCalibrator:
    """Accumulates statistics with ``observe(x)``; ``compute(quantizer)`` gives (scale, zero_point).

    Granularity (``per_channel``, ``ch_axis``) belongs to the quantizer, which
    calls ``configure()`` when it builds its calibrator.
    """

    supports_per_channel = True

    def __init__(self) -> None:
        self.per_channel = False
        self.ch_axis = 0
        self.reset()

    def configure(self, per_channel: bool, ch_axis: int) -> None:
        """Set the granularity of the statistics (called by the owning quantizer)."""
        if per_channel and not self.supports_per_channel:
            raise ValueError(f'{type(self).__name__} supports per-tensor calibration only '
                             '(per_channel=True given)')
        self.per_channel = per_channel
        self.ch_axis = ch_axis
        self.reset()

    def reset(self) -> None:
        """Forget all observed statistics."""

    @property
    def has_data(self) -> bool:
        """True once at least one tensor was observed."""
        raise NotImplementedError

    def observe(self, x: torch.Tensor) -> None:
        """Accumulate statistics of ``x``."""
        raise NotImplementedError

    def compute(self, quantizer) -> Tuple[torch.Tensor, torch.Tensor]:
        """Scale and zero point for ``quantizer`` from the accumulated statistics."""
        raise NotImplementedError

    def _check_has_data(self) -> None:
        if not self.has_data:
            raise RuntimeError(f'{type(self).__name__}.compute() called before any observe()')

    def _view(self, x: torch.Tensor) -> torch.Tensor:
        return channel_view(x, self.per_channel, self.ch_axis)

    def _finish(self, quantizer, lo: torch.Tensor,
                hi: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        scale, zero_point = range_to_qparams(quantizer, lo, hi)
        return (squeeze_per_tensor(scale, self.per_channel),
                squeeze_per_tensor(zero_point, self.per_channel))


class RangeCalibrator(BaseCalibrator):
    """Tracks the observed range ``min_val``/``max_val`` (shape ``(C,)`` per channel, ``(1,)`` per tensor).

    A running min/max by default; subclasses change how a batch's range is
    merged (``_merge_range``) or what ``compute`` does with the range.
    """

    def reset(self) -> None:
        self.min_val: Optional[torch.Tensor] = None
        self.max_val: Optional[torch.Tensor] = None

    @property
    def has_data(self) -> bool:
        return self.min_val is not None

    def observe(self, x: torch.Tensor) -> None:
        self._update_range(self._view(x))

    def _update_range(self, view: torch.Tensor) -> None:
        """Fold the row-wise min/max of a ``(C, N)`` view into the tracked range."""
        batch_min, batch_max = view.min(dim=1).values, view.max(dim=1).values
        if self.min_val is None:
            self.min_val, self.max_val = batch_min, batch_max
        else:
            self.min_val, self.max_val = self._merge_range(batch_min, batch_max)

    def _merge_range(self, batch_min: torch.Tensor,
                     batch_max: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The new range from the tracked one and a later batch's (running min / max)."""
        return torch.minimum(self.min_val, batch_min), torch.maximum(self.max_val, batch_max)

    def compute(self, quantizer) -> Tuple[torch.Tensor, torch.Tensor]:
        self._check_has_data()
        return self._finish(quantizer, self.min_val, self.max_val)
