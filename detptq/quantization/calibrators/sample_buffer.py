"""Memory-bounded random sample of observed values, per channel or per tensor."""
from typing import List, Optional

import torch

from detptq.utils.devices import seeded_generator


class SampleBuffer:
    """Keeps at most ``max_samples`` values per channel (per tensor: in total).

    Per channel the budget applies to each channel, so conv weights
    (Cin x k x k values per output channel) are always kept whole.

    While the budget is not exceeded every value is kept, so small data give
    exact statistics; beyond it, uniformly random columns are kept (the same
    positions for all channels), which preserves quantiles in expectation.
    The random generator is made on the device of the first values that need
    subsampling (CPU: the same stream as ever; see ``detptq.utils.devices``).
    """

    def __init__(self, max_samples: int = 1_000_000, seed: int = 0):
        if not isinstance(max_samples, int) or max_samples < 1:
            raise ValueError(f'max_samples={max_samples!r} is invalid; expected a positive int')
        self.max_samples = max_samples
        self.seed = seed
        self.generator: Optional[torch.Generator] = None  # made on the data's device
        self.chunks: List[torch.Tensor] = []
        self.seen = 0  # values observed per channel, kept or not

    def _subsample(self, view: torch.Tensor, keep: int) -> torch.Tensor:
        if view.shape[1] <= keep:
            return view
        if self.generator is None:
            self.generator = seeded_generator(self.seed, view.device)
        idx = torch.randperm(view.shape[1], generator=self.generator,
                             device=self.generator.device)[:keep]
        return view[:, idx.to(view.device)]

    def add(self, view: torch.Tensor) -> None:
        """Add a ``(C, N)`` view of new values."""
        budget = self.max_samples
        seen_before, new_count = self.seen, view.shape[1]
        self.seen += new_count
        if seen_before + new_count <= budget:
            self.chunks.append(view)
            return
        # Keep old and new values in proportion to how many of each were seen,
        # so the kept set stays a uniform sample of everything observed.
        keep_old = round(budget * seen_before / self.seen)
        old = self.values()
        parts = [] if old is None else [self._subsample(old, keep_old)]
        parts.append(self._subsample(view, budget - sum(p.shape[1] for p in parts)))
        self.chunks = [torch.cat(parts, dim=1)]

    def values(self) -> Optional[torch.Tensor]:
        """All kept values as ``(C, N)``, or None before the first ``add``."""
        if not self.chunks:
            return None
        if len(self.chunks) > 1:
            self.chunks = [torch.cat(self.chunks, dim=1)]
        return self.chunks[0]
