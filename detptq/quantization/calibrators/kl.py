"""KL / entropy calibration, TensorRT style, with the CFWS paper's two switchable improvements.

For each candidate threshold ``i`` bins (``levels .. bins``) of the |x|
histogram: the reference distribution P is ``hist[:i]`` with all counts beyond
the threshold added to its last bin; Q merges ``hist[:i]`` into ``levels``
groups and spreads each group's mass evenly over its non-empty bins.
The threshold minimising KL(P || Q) wins.

CFWS improvements (METHOD.md §2):

- ``log_diff=True`` evaluates ``sum P * (log P - log Q)`` over bins with P > 0,
  flooring Q at ``1e-10``. The default TensorRT-style path evaluates
  ``sum P * log(P / Q)`` after smoothing both distributions (zero bins get
  ``eps``, taken from the non-zero ones), which is how the classic
  implementation avoids dividing by an empty Q bin (the last P bin holds the
  outliers while its Q bin may be empty). The two agree except where such
  zero handling matters.
- ``relu_fusion=True`` builds the histogram on ``relu(x)`` when the observed
  tensor passes a ReLU before it is used (``followed_by_relu=True``). detptq
  quantizes activations at module inputs, which are already the outputs of
  the previous layer's activation: in a ReLU network those tensors are
  post-ReLU, so the fusion is inherent there and the flag changes nothing.
  Set ``followed_by_relu=True`` (per layer via the wrapper's ``overrides``)
  for a quantization point that sits before a ReLU; otherwise it is ignored.
"""
from typing import Optional, Tuple

import torch

from detptq.registry import CALIBRATORS
from .base import BaseCalibrator
from .histogram import AbsHistogram

_CANDIDATES_PER_CHUNK = 256
_LOG_FLOOR = 1e-10


def smooth_distribution(p: torch.Tensor, eps: float) -> torch.Tensor:
    """Give each empty bin ``eps`` mass, taken evenly from the non-empty bins (rows of ``p``)."""
    zeros = p == 0
    n_zero = zeros.sum(dim=-1, keepdim=True).double()
    n_nonzero = (p.shape[-1] - n_zero).clamp_min(1)
    taken = eps * n_zero / n_nonzero
    return torch.where(zeros, torch.full_like(p, eps), (p - taken).clamp_min(eps * 1e-3))


def candidate_distributions(hist: torch.Tensor, candidates: torch.Tensor, levels: int
                            ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Normalised P (with outliers) and Q (``levels`` quantized) for each candidate, ``(n, bins)``."""
    bins = hist.numel()
    n = candidates.numel()
    j = torch.arange(bins)
    inside = j[None] < candidates[:, None]
    ref = hist[None] * inside
    outliers = hist.sum() - torch.cumsum(hist, 0)[candidates - 1]
    p = ref.clone()
    p[torch.arange(n), candidates - 1] += outliers
    group = torch.where(inside, (j[None] * levels) // candidates[:, None], torch.zeros_like(j[None]))
    group_sum = torch.zeros(n, levels, dtype=hist.dtype).scatter_add_(1, group, ref)
    group_count = torch.zeros(n, levels, dtype=hist.dtype).scatter_add_(1, group, (ref > 0).to(hist.dtype))
    per_bin = torch.gather(group_sum / group_count.clamp_min(1), 1, group)
    q = torch.where(ref > 0, per_bin, torch.zeros_like(per_bin))
    p = p / p.sum(dim=1, keepdim=True)
    q = q / q.sum(dim=1, keepdim=True).clamp_min(1e-300)
    return p, q


def kl_divergence(p: torch.Tensor, q: torch.Tensor, log_diff: bool, eps: float) -> torch.Tensor:
    """KL(P || Q) per row, either as ``log P - log Q`` (CFWS) or ``log(P / Q)`` after smoothing (TensorRT)."""
    if log_diff:
        terms = p * (torch.log(p.clamp_min(_LOG_FLOOR)) - torch.log(q.clamp_min(_LOG_FLOOR)))
        return torch.where(p > 0, terms, torch.zeros_like(terms)).sum(dim=1)
    p, q = smooth_distribution(p, eps), smooth_distribution(q, eps)
    return (p * torch.log(p / q)).sum(dim=1)


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
        eps: smoothing mass of the TensorRT-style path.
    """

    supports_per_channel = False

    def __init__(self, bins: int = 2048, num_quantized_bins: Optional[int] = None,
                 log_diff: bool = False, relu_fusion: bool = False,
                 followed_by_relu: bool = False, eps: float = 1e-4):
        for key, value in (('log_diff', log_diff), ('relu_fusion', relu_fusion),
                           ('followed_by_relu', followed_by_relu)):
            if not isinstance(value, bool):
                raise ValueError(f'{type(self).__name__}: {key}={value!r} is invalid; expected True or False')
        if num_quantized_bins is not None and (not isinstance(num_quantized_bins, int)
                                               or not 2 <= num_quantized_bins <= bins):
            raise ValueError(f'{type(self).__name__}: num_quantized_bins={num_quantized_bins!r} '
                             f'is invalid; expected an int in 2..bins ({bins})')
        self.bins = bins
        self.num_quantized_bins = num_quantized_bins
        self.log_diff = log_diff
        self.relu_fusion = relu_fusion
        self.followed_by_relu = followed_by_relu
        self.eps = float(eps)
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
        lo, hi = float(x.min()), float(x.max())
        self.min_val = lo if self.min_val is None else min(self.min_val, lo)
        self.max_val = hi if self.max_val is None else max(self.max_val, hi)
        self.histogram.add(x)

    def quantized_levels(self, quantizer) -> int:
        """Number of levels Q is folded into for this quantizer (see class docstring)."""
        if self.num_quantized_bins is not None:
            return self.num_quantized_bins
        non_negative = self.min_val is not None and self.min_val >= 0
        if quantizer.unsigned or (not quantizer.symmetric and non_negative):
            return 2 ** quantizer.bits
        return 2 ** (quantizer.bits - 1)

    def kl_per_candidate(self, levels: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Candidate threshold bin counts and their KL divergences."""
        hist = self.histogram.counts
        candidates = torch.arange(levels, self.bins + 1)
        kls = []
        for start in range(0, candidates.numel(), _CANDIDATES_PER_CHUNK):
            chunk = candidates[start:start + _CANDIDATES_PER_CHUNK]
            p, q = candidate_distributions(hist, chunk, levels)
            kls.append(kl_divergence(p, q, self.log_diff, self.eps))
        return candidates, torch.cat(kls)

    def threshold(self, quantizer) -> float:
        """The |x| clipping threshold minimising KL."""
        if self.histogram.is_empty:
            return 0.0
        levels = self.quantized_levels(quantizer)
        if levels > self.bins:  # e.g. pass-through bit widths: no clipping
            return self.histogram.upper
        candidates, kls = self.kl_per_candidate(levels)
        return float(candidates[int(torch.argmin(kls))]) * self.histogram.bin_width

    def compute(self, quantizer) -> Tuple[torch.Tensor, torch.Tensor]:
        self._check_has_data()
        t = self.threshold(quantizer)
        if quantizer.symmetric:
            lo, hi = -t, t
        else:
            lo, hi = max(self.min_val, -t), min(self.max_val, t)
        return self._finish(quantizer, torch.tensor([lo]), torch.tensor([hi]))


@CALIBRATORS.register_module()
class ImprovedKLCalibrator(KLCalibrator):
    """KL calibration with both CFWS improvements on by default (log difference, ReLU fusion)."""

    def __init__(self, bins: int = 2048, num_quantized_bins: Optional[int] = None,
                 log_diff: bool = True, relu_fusion: bool = True,
                 followed_by_relu: bool = False, eps: float = 1e-4):
        super().__init__(bins=bins, num_quantized_bins=num_quantized_bins, log_diff=log_diff,
                         relu_fusion=relu_fusion, followed_by_relu=followed_by_relu, eps=eps)
