"""ReconConfig: the settings of a BRECQ/QDrop/AdaRound reconstruction run (docs/METHOD.md §6)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Optional

MODES = ('layer', 'brecq', 'qdrop')
CACHE_DEVICES = ('auto', 'cpu')


def _check_number(key: str, value, integer: bool = False, low: Optional[float] = None,
                  high: Optional[float] = None, low_open: bool = False,
                  high_open: bool = False) -> None:
    """ValueError naming ``key`` unless ``value`` is a number in the given range."""
    kinds = (int,) if integer else (int, float)
    ok = not isinstance(value, bool) and isinstance(value, kinds) and value == value  # not NaN
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = '' if low is None else f'{"(" if low_open else "["}{low}, '
        hi = '' if high is None else f'{high}{")" if high_open else "]"}'
        span = f'in {lo}{hi}' if low is not None and high is not None else \
            f'{">" if low_open else ">="} {low}'
        raise ValueError(f'ReconConfig: {key}={value!r} is invalid; expected '
                         f'{"an integer" if integer else "a number"} {span}')


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
    cache_max_bytes: int = 2 * 1024 ** 3  # host RAM for the unit cache, then disk
    cache_dir: Optional[str] = None  # where spilled cache files go (default: system temp)
    cache_device: str = 'auto'     # 'auto': keep the unit cache on the model's accelerator
    #                                first; 'cpu': host RAM (then disk) only
    cache_device_max_bytes: Optional[int] = None  # accelerator budget of the unit cache
    #                                (None: half of the device's free memory)
    progress: bool = True
    log_interval: int = 100        # iterations between progress-bar loss updates
    loss_curve_every: int = 0      # > 0: record the training loss every N iterations
    #                                (stats 'loss_curve', work_dir/loss_curves.json)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f'ReconConfig: mode={self.mode!r}, expected one of {MODES}')
        for key in ('iters', 'batch_size', 'eval_samples', 'log_interval'):
            _check_number(key, getattr(self, key), integer=True, low=1)
        _check_number('cache_max_bytes', self.cache_max_bytes, integer=True, low=0)
        if self.cache_device_max_bytes is not None:
            _check_number('cache_device_max_bytes', self.cache_device_max_bytes, integer=True,
                          low=0)
        if self.cache_device not in CACHE_DEVICES:
            raise ValueError(f'ReconConfig: cache_device={self.cache_device!r} is invalid; '
                             f'expected one of {CACHE_DEVICES}')
        _check_number('seed', self.seed, integer=True, low=0)
        # drop_prob is the probability an activation IS quantized: 0 would never quantize
        _check_number('drop_prob', self.drop_prob, low=0, high=1, low_open=True)
        _check_number('warm_up', self.warm_up, low=0, high=1)
        for key in ('round_weight', 'lr_act'):
            _check_number(key, getattr(self, key), low=0)
        for key in ('lr_round', 'p', 'b_start', 'b_end'):
            _check_number(key, getattr(self, key), low=0, low_open=True)
        for key in ('learn_act_scale', 'l2_units', 'progress'):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f'ReconConfig: {key}={getattr(self, key)!r} must be True or False')

    @property
    def effective_drop_prob(self) -> float:
        """drop_prob in QDrop mode, 1.0 (always quantize) otherwise."""
        return self.drop_prob if self.mode == 'qdrop' else 1.0

    def fingerprint(self, unit_name: str, index: int, p: float) -> str:
        """Hash of everything that changes a unit's result (for safe resuming)."""
        keys = {k: v for k, v in asdict(self).items()
                if k not in ('progress', 'log_interval', 'cache_max_bytes', 'cache_dir',
                             'cache_device', 'cache_device_max_bytes',
                             'loss_curve_every')}
        text = json.dumps(dict(cfg=keys, unit=unit_name, index=index, p=p), sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()
