"""Histogram of |x| accumulated over batches whose range grows exactly when needed."""
import math
from typing import Optional

import torch


class AbsHistogram:
    """``bins`` equal bins over ``[0, upper]`` counting ``|x|``.

    When a batch exceeds ``upper``, the range is multiplied by ``2^m`` (the
    smallest power of two that covers it) and every ``2^m`` old bins are merged
    into one new bin. Old bins nest exactly in new ones, so no count is ever
    redistributed by guesswork.
    """

    def __init__(self, bins: int = 2048):
        if not isinstance(bins, int) or bins < 2:
            raise ValueError(f'bins={bins!r} is invalid; expected an int >= 2')
        self.bins = bins
        self.counts: Optional[torch.Tensor] = None  # float64 (bins,)
        self.upper = 0.0
        self.pending_zeros = 0  # all-zero batches seen before the range was known

    @property
    def bin_width(self) -> float:
        """Width of one bin."""
        return self.upper / self.bins

    def _grow(self, needed: float) -> None:
        factor = 2**math.ceil(math.log2(needed / self.upper))
        # Guard against float rounding leaving the maximum just outside.
        while self.upper * factor < needed:
            factor *= 2
        target = torch.div(torch.arange(self.bins), factor, rounding_mode='floor')
        self.counts = torch.zeros_like(self.counts).index_add_(0, target, self.counts)
        self.upper *= factor

    def add(self, x: torch.Tensor) -> None:
        """Count ``|x|`` of a new batch."""
        values = x.detach().abs().flatten().double()
        if values.numel() == 0:
            return
        amax = float(values.max())
        if self.counts is None:
            if amax == 0.0:
                # Nothing to size the range with yet; count the zeros later.
                self.pending_zeros += values.numel()
                return
            self.upper = amax
            self.counts = torch.zeros(self.bins, dtype=torch.float64)
            self.counts[0] += self.pending_zeros
        elif amax > self.upper:
            self._grow(amax)
        self.counts += torch.histc(values, bins=self.bins, min=0.0, max=self.upper)

    @property
    def is_empty(self) -> bool:
        """True while no non-zero value was counted."""
        return self.counts is None
