"""ReconConfig: the settings of a BRECQ/QDrop/AdaRound reconstruction run (docs/METHOD.md §6)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Optional

MODES = ('layer', 'brecq', 'qdrop')


@dataclass
class ReconConfig:
    """Settings of one reconstruction run (defaults: docs/METHOD.md section 6)."""
    mode: str = 'brecq'            # 'layer' (AdaRound per layer), 'brecq', 'qdrop'
    iters: int = 20000             # optimisation steps per unit
    batch_size: int = 32
    round_weight: float = 0.01     # lambda of the rounding regulariser
    warm_up: float = 0.2           # fraction of iters without the regulariser
    b_start: float = 20.0
    b_end: float = 2.0
    lr_round: float = 1e-3         # Adam lr of the AdaRound variables V
    lr_act: float = 4e-5           # Adam lr of the LSQ activation steps (cosine to 0)
    learn_act_scale: bool = True
    drop_prob: float = 0.5         # QDrop: probability an activation is quantized
    p: float = 2.0                 # loss exponent when no p_map entry is given
    l2_units: bool = True          # train on Lp ** (2/p), so lambda weighs the same for all p
    seed: int = 0
    eval_samples: int = 64         # rows used for the before/after loss report
    cache_max_bytes: int = 2 * 1024 ** 3
    cache_dir: Optional[str] = None  # where spilled cache files go (default: system temp)
    progress: bool = True
    log_interval: int = 100        # iterations between progress-bar loss updates
    loss_curve_every: int = 0      # > 0: record the training loss every N iterations
    #                                (stats 'loss_curve', work_dir/loss_curves.json)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f'ReconConfig: mode={self.mode!r}, expected one of {MODES}')
        if not 0 < self.drop_prob <= 1:
            raise ValueError(f'ReconConfig: drop_prob={self.drop_prob} must be in (0, 1]')
        if self.iters < 1 or self.batch_size < 1:
            raise ValueError('ReconConfig: iters and batch_size must be >= 1')

    @property
    def effective_drop_prob(self) -> float:
        """drop_prob in QDrop mode, 1.0 (always quantize) otherwise."""
        return self.drop_prob if self.mode == 'qdrop' else 1.0

    def fingerprint(self, unit_name: str, index: int, p: float) -> str:
        """Hash of everything that changes a unit's result (for safe resuming)."""
        keys = {k: v for k, v in asdict(self).items()
                if k not in ('progress', 'log_interval', 'cache_max_bytes', 'cache_dir',
                             'loss_curve_every')}
        text = json.dumps(dict(cfg=keys, unit=unit_name, index=index, p=p), sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()
