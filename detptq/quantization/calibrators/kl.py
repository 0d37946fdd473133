"""KL / entropy calibration, TensorRT style, with the CFWS paper's two switchable improvements.

For each candidate threshold ``i`` bins (``start_bin .. bins``, TensorRT:
from bin 128 for every bit width, so unsigned int8 with 256 levels may clip
below 256 bins too) of the |x| histogram: the reference distribution P is
``hist[:i]`` with all counts beyond the threshold added to its last bin; Q
merges ``hist[:i]`` into ``levels`` groups and spreads each group's mass
evenly over its non-empty bins. The threshold minimising KL(P || Q) wins; on
exact ties the largest one (TensorRT's last argmin). Over several batches
the histogram keeps its bin width and grows in bins (``AbsHistogram``).

CFWS improvements (docs/METHOD.md §2):

- ``log_diff=True`` evaluates ``sum P * (log P - log Q)`` over bins with P > 0,
  flooring Q at ``LOG_FLOOR`` inside the logarithm. The default TensorRT-style
  path evaluates ``sum P * log(P / Q)`` (as ``scipy.stats.entropy`` does in
  NVIDIA's reference calibrator), which is infinite whenever P > 0 meets an
  empty Q bin: that happens when the outliers are added to a last bin that is
  itself empty, and such thresholds are then never chosen. Everywhere else the
  two forms are equal.
- ``relu_fusion=True`` builds the histogram on ``relu(x)`` when the observed
  tensor passes a ReLU before it is used (``followed_by_relu=True``). detptq
  quantizes activations at module inputs, which are already the outputs of
  the previous layer's activation: in a ReLU network those tensors are
  post-ReLU, so the fusion is inherent there and the flag changes nothing.
  Set ``followed_by_relu=True`` (per layer via the wrapper's ``overrides``)
  for a quantization point that sits before a ReLU; otherwise it is ignored.
"""
import math
from typing import Optional, Tuple

import torch

from detptq.registry import CALIBRATORS
from .base import BaseCalibrator
from .histogram import AbsHistogram

#: floor of Q inside the logarithm on the log-difference path
LOG_FLOOR = 1e-10
#: first candidate threshold bin (TensorRT's ``start_bin``, for every bit width)
START_BIN = 128
#: elements of the (candidates, levels) work arrays evaluated at once
_CHUNK_ELEMENTS = 2_000_000


def kl_per_threshold(hist: torch.Tensor, levels: int, log_diff: bool,
                     start: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """KL(P || Q) for every candidate threshold ``i`` in ``start .. bins`` (default start: ``levels``).

    P: ``hist[:i]`` plus all counts beyond the threshold in bin ``i - 1``.
    Q: bin ``j < i`` joins group ``floor(j * levels / i)``; each group's mass is
    spread evenly over its non-empty bins. Within a group Q is constant, so the
    sum decomposes into cumulative sums of ``h``, ``h log h`` and the
    non-empty-bin count: O(levels) per candidate instead of O(bins).
    A threshold below ``levels`` bins leaves some groups empty (each bin is
    then its own group). Returns ``(candidates, kl)``; ``kl`` is ``inf`` where
    the ratio form meets an empty Q bin under a non-empty P bin.
    """
    bins = hist.numel()
    start = levels if start is None else start
    if not 1 <= start <= bins:
        raise ValueError(f'kl_per_threshold: start={start} must be in 1..{bins} (bins)')
    cand = torch.arange(start, bins + 1, device=hist.device)
    # bounded memory: (candidates, levels) work arrays, a chunk of candidates at a time
    per_chunk = max(1, _CHUNK_ELEMENTS // (levels + 1))
    kl = torch.cat([_kl_for(hist, levels, log_diff, c) for c in cand.split(per_chunk)])
    return cand, kl


def _kl_for(hist: torch.Tensor, levels: int, log_diff: bool,
            cand: torch.Tensor) -> torch.Tensor:
    """KL(P || Q) of ``kl_per_threshold`` for the candidate thresholds ``cand``."""
    h = hist.double()
    total = h.sum()
    zero = torch.zeros(1, dtype=torch.float64, device=h.device)
    cum = torch.cat([zero, torch.cumsum(h, 0)])  # cum[k] = sum h[:k]
    cum_hlogh = torch.cat([zero, torch.cumsum(torch.xlogy(h, h), 0)])
    cum_nz = torch.cat([zero, torch.cumsum((h > 0).double(), 0)])
    g = torch.arange(levels + 1, device=h.device)
    # Group g covers bins [ceil(g * i / levels), ceil((g + 1) * i / levels)).
    edges = torch.div(g[None] * cand[:, None] + levels - 1, levels,
                      rounding_mode='floor')  # (n, L+1)
    group_sum = cum[edges[:, 1:]] - cum[edges[:, :-1]]
    group_nz = cum_nz[edges[:, 1:]] - cum_nz[edges[:, :-1]]
    inside = cum[cand]  # Q's normaliser
    outliers = total - inside
    last = h[cand - 1]
    # log q of each group (valid where the group has non-empty bins).
    log_q = torch.log(group_sum.clamp_min(1e-300)) - torch.log(group_nz.clamp_min(1)) \
        - torch.log(inside)[:, None]
    has_mass = group_nz > 0
    # sum_j P_j log P_j, with the last bin holding the outliers.
    p_last = (last + outliers) / total
    neg_entropy = cum_hlogh[cand - 1] / total \
        - math.log(float(total)) * (inside - last) / total + torch.xlogy(p_last, p_last)
    # sum_j P_j log Q_j over bins inside the range (their P mass is h_j / total).
    cross = torch.where(has_mass, group_sum * log_q, torch.zeros_like(log_q)).sum(1) / total
    # The outlier mass sits in bin i-1: its Q is its group's value if that bin is
    # non-empty, otherwise zero (ratio form: infinite; log form: floored). Bin i-1
    # is in group floor((i-1) * levels / i): the last group unless i < levels.
    last_empty = last == 0
    last_group = torch.div((cand - 1) * levels, cand, rounding_mode='floor')
    log_q_of_last = log_q.gather(1, last_group[:, None])[:, 0]
    log_q_last = torch.where(last_empty, torch.full_like(last, math.log(LOG_FLOOR)), log_q_of_last)
    cross = cross + outliers / total * log_q_last
    kl = neg_entropy - cross
    if not log_diff:
        kl = torch.where(last_empty & (outliers > 0), torch.full_like(kl, math.inf), kl)
    return kl


@CALIBRATORS.register_module()
@CALIBRATORS.register_module(name='EntropyCalibrator')
class KLCalibrator(BaseCalibrator):
    """Threshold minimising KL(P_fp || P_q) on a ``bins``-bin |x| histogram (per tensor).

    Args:
        bins: histogram bins (TensorRT: 2048).
        num_quantized_bins: levels Q is folded into; default ``2^(k-1)``
            (128 for int8), or ``2^k`` for unsigned quantizers and for
            asymmetric ones on non-negative data (their grid spends every code on [0, T]).
        log_diff, relu_fusion, followed_by_relu: see the module docstring.
        flatten_zero_bin: replace the count of bin 0 by that of bin 1 before the
            search, as NVIDIA's reference entropy calibrator does: exact zeros
            (ReLU outputs, padding) form a spike that Q spreads over a whole
            group, and that artefact alone would pull the threshold down.
        start_bin: first candidate threshold, in bins (TensorRT: 128).
    """

    supports_per_channel = False

    def __init__(self,
                 bins: int = 2048,
                 num_quantized_bins: Optional[int] = None,
                 log_diff: bool = False,
                 relu_fusion: bool = False,
                 followed_by_relu: bool = False,
                 flatten_zero_bin: bool = True,
                 start_bin: int = START_BIN):
        for key, value in (('log_diff', log_diff), ('relu_fusion', relu_fusion),
                           ('followed_by_relu', followed_by_relu), ('flatten_zero_bin',
                                                                    flatten_zero_bin)):
            if not isinstance(value, bool):
                raise ValueError(
                    f'{type(self).__name__}: {key}={value!r} is invalid; expected True or False')
        if num_quantized_bins is not None and (not isinstance(num_quantized_bins, int)
                                               or not 2 <= num_quantized_bins <= bins):
            raise ValueError(f'{type(self).__name__}: num_quantized_bins={num_quantized_bins!r} '
                             f'is invalid; expected an int in 2..bins ({bins})')
        if isinstance(start_bin, bool) or not isinstance(start_bin, int) or start_bin < 1:
            raise ValueError(f'{type(self).__name__}: start_bin={start_bin!r} is invalid; '
                             'expected an int >= 1')
        self.start_bin = start_bin
        self.bins = bins
        self.num_quantized_bins = num_quantized_bins
        self.log_diff = log_diff
        self.relu_fusion = relu_fusion
        self.followed_by_relu = followed_by_relu
        self.flatten_zero_bin = flatten_zero_bin
        AbsHistogram(bins)  # validates ``bins`` now rather than at the first batch
        super().__init__()

    def reset(self) -> None:
        self.histogram = AbsHistogram(self.bins)
        self.min_val: Optional[float] = None
        self.max_val: Optional[float] = None

    @property
    def has_data(self) -> bool:
        return self.min_val is not None

    def observe(self, x: torch.Tensor) -> None:
        x = x.detach().float()
        if self.relu_fusion and self.followed_by_relu:
            x = torch.relu(x)
        if x.numel() == 0:
            return
        lo, hi = torch.aminmax(x)
        lo, hi = torch.stack([lo, hi]).tolist()  # one host sync per batch for range and bins
        self.min_val = lo if self.min_val is None else min(self.min_val, lo)
        self.max_val = hi if self.max_val is None else max(self.max_val, hi)
        self.histogram.add(x, amax=max(-lo, hi))

    def quantized_levels(self, quantizer) -> int:
        """Number of levels Q is folded into for this quantizer (see class docstring)."""
        if self.num_quantized_bins is not None:
            return self.num_quantized_bins
        non_negative = self.min_val is not None and self.min_val >= 0
        if quantizer.unsigned or (not quantizer.symmetric and non_negative):
            return 2**quantizer.bits
        return 2**(quantizer.bits - 1)

    def kl_per_candidate(self, levels: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Candidate threshold bin counts and their KL divergences."""
        hist = self.histogram.counts.clone()
        if self.flatten_zero_bin:
            hist[0] = hist[1]
        return kl_per_threshold(hist, levels, self.log_diff,
                                start=min(self.start_bin, hist.numel()))

    def threshold(self, quantizer) -> float:
        """The |x| clipping threshold minimising KL."""
        if self.histogram.is_empty:
            return 0.0
        levels = self.quantized_levels(quantizer)
        if levels > self.histogram.num_bins:  # e.g. pass-through bit widths: no clipping
            return self.histogram.upper
        candidates, kls = self.kl_per_candidate(levels)
        last_best = len(kls) - 1 - int(torch.argmin(kls.flip(0)))  # ties: the widest
        return float(candidates[last_best]) * self.histogram.bin_width

    def compute(self, quantizer) -> Tuple[torch.Tensor, torch.Tensor]:
        self._check_has_data()
        t = self.threshold(quantizer)
        if quantizer.symmetric:
            lo, hi = -t, t
        else:
            lo, hi = max(self.min_val, -t), min(self.max_val, t)
        device = self.histogram.counts.device if not self.histogram.is_empty else None
        return self._finish(quantizer, torch.tensor([lo], device=device),
                            torch.tensor([hi], device=device))


@CALIBRATORS.register_module()
class ImprovedKLCalibrator(KLCalibrator):
    """KL calibration with both CFWS improvements on by default (log difference, ReLU fusion)."""

    def __init__(self,
                 bins: int = 2048,
                 num_quantized_bins: Optional[int] = None,
                 log_diff: bool = True,
                 relu_fusion: bool = True,
                 followed_by_relu: bool = False,
                 flatten_zero_bin: bool = True,
                 start_bin: int = START_BIN):
        super().__init__(bins=bins,
                         num_quantized_bins=num_quantized_bins,
                         log_diff=log_diff,
                         relu_fusion=relu_fusion,
                         followed_by_relu=followed_by_relu,
                         flatten_zero_bin=flatten_zero_bin,
                         start_bin=start_bin)
