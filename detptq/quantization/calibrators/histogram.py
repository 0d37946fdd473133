"""Histogram of |x| over batches: fixed bin width, more bins when a batch exceeds the range.

TensorRT's ``HistogramCalibrator`` semantics: the first batch with a non-zero
value spreads ``bins`` bins over ``[0, max|x|]``; that bin width stays. A
later batch whose maximum lies beyond the range appends bins of the same
width until it is covered (``ceil(max / width)`` bins in all), so earlier
counts never move and the entropy search sees more candidate thresholds.

The counts live on the device of the observed values (no per-batch copy to
the host); each batch reads its maximum back once, since the bin layout is
decided on the host.
"""
import math
from typing import Optional

import torch

#: bin count beyond which the histogram is coarsened (guards against absurd range jumps)
DEFAULT_MAX_BINS = 1 << 17


class AbsHistogram:
    """Counts of ``|x|`` in bins of one width; ``num_bins`` grows with the observed range.

    Args:
        bins: bins over the first batch's range (TensorRT: 2048).
        max_bins: if extending would exceed this many bins, adjacent bins are
            first merged in pairs (the width doubles; old bins nest exactly in
            new ones). Only a later batch over 64x the first one's maximum
            (default) gets there; TensorRT has no such guard.
    """

    def __init__(self, bins: int = 2048, max_bins: int = DEFAULT_MAX_BINS):
        if not isinstance(bins, int) or bins < 2:
            raise ValueError(f'bins={bins!r} is invalid; expected an int >= 2')
        if not isinstance(max_bins, int) or max_bins < bins:
            raise ValueError(f'max_bins={max_bins!r} is invalid; expected an int >= bins ({bins})')
        self.bins = bins
        self.max_bins = max_bins
        self.counts: Optional[torch.Tensor] = None  # float64 (num_bins,)
        self.width = 0.0
        self._upper = 0.0
        self.pending_zeros = 0  # all-zero batches seen before the range was known

    @property
    def num_bins(self) -> int:
        """Current number of bins (``bins`` until a batch exceeded the first range)."""
        return 0 if self.counts is None else self.counts.numel()

    @property
    def bin_width(self) -> float:
        """Width of one bin."""
        return self.width

    @property
    def upper(self) -> float:
        """Upper edge of the last bin."""
        return self._upper

    def _extend(self, needed: float) -> None:
        """Append empty bins of the current width until ``needed`` is inside the range."""
        n = math.ceil(needed / self.width)
        while n * self.width < needed:  # float rounding may leave the maximum just outside
            n += 1
        while n > self.max_bins:
            self._merge_pairs()
            n = math.ceil(needed / self.width)
            while n * self.width < needed:
                n += 1
        self.counts = torch.cat([self.counts, self.counts.new_zeros(n - self.num_bins)])
        self._upper = n * self.width

    def _merge_pairs(self) -> None:
        """Double the bin width: bins 2k and 2k + 1 become bin k."""
        counts = self.counts
        if counts.numel() % 2:
            counts = torch.cat([counts, counts.new_zeros(1)])
        self.counts = counts.view(-1, 2).sum(1)
        self.width *= 2
        self._upper = self.width * self.counts.numel()

    def add(self, x: torch.Tensor, amax: Optional[float] = None) -> None:
        """Count ``|x|`` of a new batch (``amax``: ``max|x|`` if the caller already has it)."""
        values = x.detach().abs().flatten().double()
        if values.numel() == 0:
            return
        if amax is None:
            amax = float(values.max())
        if self.counts is None:
            if amax == 0.0:
                # Nothing to size the range with yet; count the zeros later.
                self.pending_zeros += values.numel()
                return
            self.width = amax / self.bins
            self.counts = torch.zeros(self.bins, dtype=torch.float64, device=values.device)
            self.counts[0] += self.pending_zeros
            self._upper = amax  # exactly the first maximum, as TensorRT's first histc
        elif amax > self._upper:
            self._extend(amax)
        self.counts += torch.histc(values.to(self.counts.device), bins=self.num_bins, min=0.0,
                                   max=self._upper)

    @property
    def is_empty(self) -> bool:
        """True while no non-zero value was counted."""
        return self.counts is None
