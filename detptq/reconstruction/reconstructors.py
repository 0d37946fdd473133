"""Registered reconstruction methods (registry ``RECONSTRUCTORS``), picked by config.

    recon_cfg = dict(type='BlockReconstructor', mode='brecq' | 'qdrop' | 'layer',
                     iters=..., batch_size=..., round_weight=..., warm_up=..., ...)
    recon_cfg = dict(type='DetPTQReconstructor', mode='qdrop',
                     p_search=dict(max_samples=200_000), p_rule='last', ...)
    reconstructor = RECONSTRUCTORS.build(recon_cfg)
    stats = reconstructor(model_q, calib, model_fp=None, forward_fn=None,
                          work_dir='work_dirs/run', dense_fn=None)

``calib`` is the run's ``CalibrationSet`` (or any sequence of model inputs).
Aliases with a fixed mode: ``AdaRoundReconstructor`` (layer-wise),
``BRECQReconstructor``, ``QDropReconstructor``. Every keyword other than the
partition options goes to ``ReconConfig``.
"""
from __future__ import annotations

import logging
import os
from dataclasses import asdict
from typing import Any, Callable, Dict, Iterable, List, Optional

from mmengine.logging import print_log
from torch import nn

from detptq.quantization.bops import default_forward
from detptq.quantization.calibration_set import CalibrationSet
from detptq.registry import RECONSTRUCTORS
from detptq.utils.fingerprint import Fingerprint
from .block_reconstruction import reconstruct
from .loss_history import save_loss_curves
from .p_search import (PSearchConfig, apply_p_search, default_dense_fn, loss_p_keys,
                       search_p, unit_p_map)
from .p_search_report import load_p_search, save_p_search
from .partition import partition_units
from .recon_config import ReconConfig
from .unit_io import trace_execution

P_SEARCH_JSON = 'p_search.json'
P_SEARCH_PNG = 'p_search.png'
LOSS_CURVES_JSON = 'loss_curves.json'
P_RULES = ('last', 'mean')
P_USES = ('scale+loss', 'scale', 'loss')


@RECONSTRUCTORS.register_module()
class BlockReconstructor:
    """Partition a quantized model and run BRECQ / QDrop / layer-wise AdaRound on it."""

    fixed_mode: Optional[str] = None
    results: Optional[Dict[str, Any]] = None  # p search results (DetPTQ only)

    def __init__(self, mode: str = 'brecq', unit_types: Iterable[str] = (),
                 transparent_types: Iterable[str] = (), **recon_kwargs: Any) -> None:
        mode = self.fixed_mode or mode
        self.cfg = ReconConfig(mode=mode, **recon_kwargs)
        self.unit_types = tuple(unit_types)
        self.transparent_types = tuple(transparent_types)

    def units(self, model_q: nn.Module):
        """Reconstruction units: each quant layer in 'layer' mode, blocks otherwise."""
        granularity = 'layer' if self.cfg.mode == 'layer' else 'block'
        return partition_units(model_q, granularity, self.unit_types, self.transparent_types)

    def p_map(self, model_q: nn.Module, units, calib: CalibrationSet,
              forward_fn: Optional[Callable], dense_fn: Optional[Callable],
              work_dir: Optional[str], resume: bool,
              fingerprint: Fingerprint) -> Optional[Dict[str, float]]:
        """Per-unit loss exponents; None means cfg.p everywhere."""
        return None

    def __call__(self, model_q: nn.Module, calib: CalibrationSet,
                 model_fp: Optional[nn.Module] = None, forward_fn: Optional[Callable] = None,
                 work_dir: Optional[str] = None, resume: bool = True,
                 dense_fn: Optional[Callable] = None,
                 fingerprint: Optional[Fingerprint] = None) -> List[Dict[str, Any]]:
        """Reconstruct ``model_q`` in place; returns the per-unit statistics.

        ``fingerprint``: the run's inputs (quant config, checkpoint, calibration
        images...); saved results are reused only when it matches.
        """
        calib = CalibrationSet.of(calib)
        units = self.units(model_q)
        print_log(f'{type(self).__name__}: {len(units)} units, mode={self.cfg.mode}, '
                  f'iters={self.cfg.iters}, batch={self.cfg.batch_size}', logger='current')
        fingerprint = (fingerprint or Fingerprint()).with_parts(
            partition=dict(unit_types=self.unit_types, transparent=self.transparent_types))
        p_map = self.p_map(model_q, units, calib, forward_fn, dense_fn, work_dir, resume,
                           fingerprint)
        if self.results is not None:  # every quantizer's scale comes from the p search
            fingerprint = fingerprint.with_parts(p_search=self.results)
        stats = reconstruct(model_fp, model_q, units, calib, self.cfg, forward_fn=forward_fn,
                            p_map=p_map, work_dir=work_dir, resume=resume,
                            fingerprint=fingerprint)
        if work_dir and self.cfg.loss_curve_every:
            save_loss_curves(stats, os.path.join(work_dir, LOSS_CURVES_JSON))
        return stats


@RECONSTRUCTORS.register_module()
class AdaRoundReconstructor(BlockReconstructor):
    """Layer-wise AdaRound: every quant layer is its own unit."""
    fixed_mode = 'layer'


@RECONSTRUCTORS.register_module()
class BRECQReconstructor(BlockReconstructor):
    """BRECQ: block units, inputs from the already quantized model."""
    fixed_mode = 'brecq'


@RECONSTRUCTORS.register_module()
class QDropReconstructor(BlockReconstructor):
    """QDrop: BRECQ with activations quantized element-wise with probability drop_prob."""
    fixed_mode = 'qdrop'


@RECONSTRUCTORS.register_module()
class DetPTQReconstructor(BlockReconstructor):
    """DetPTQ: ODOL-guided p search per quantizer, then block reconstruction with those p.

    ``p_search``: PSearchConfig keywords; ``p_search_images``: calibration
    images the search uses (whole batches from the start until at least this
    many; None: all). Each image costs ~8 x (number of quantizers) partial
    forwards, hence the small default. ``p_rule``: how a unit gets its p
    from its layers ('last' or 'mean', see ``unit_p_map``). ``p_use``: what
    the searched p* drive: 'scale+loss' (the method: s_p* as each quantizer's
    scale and p* as each unit's loss exponent), 'scale' (s_p* only, loss at
    ``p``) or 'loss' (p* only, scales as calibrated). Ablations of the search
    itself (fixed p, cumulative context, ODOL weights) are ``p_search`` keys.
    Results go to ``work_dir/p_search.json`` and ``.png``; with ``resume`` an
    existing JSON is reused instead of searching again.
    """

    def __init__(self, mode: str = 'qdrop', p_search: Optional[Dict[str, Any]] = None,
                 p_search_images: Optional[int] = 16, p_rule: str = 'last',
                 p_use: str = 'scale+loss', **kwargs: Any) -> None:
        super().__init__(mode=mode, **kwargs)
        self.p_cfg = PSearchConfig(**(p_search or {}))
        self.p_search_images = p_search_images
        if p_rule not in P_RULES:
            raise ValueError(f'DetPTQReconstructor: p_rule={p_rule!r}, expected one of {P_RULES}')
        if p_use not in P_USES:
            raise ValueError(f'DetPTQReconstructor: p_use={p_use!r}, expected one of {P_USES}')
        self.p_rule = p_rule
        self.p_use = p_use
        self.results: Optional[Dict[str, Any]] = None

    def p_map(self, model_q, units, calib, forward_fn, dense_fn, work_dir, resume,
              fingerprint):
        json_path = os.path.join(work_dir, P_SEARCH_JSON) if work_dir else None
        layer_order = only = None
        if self.p_use == 'loss' and self.p_rule == 'last' and self.p_cfg.context == 'alone':
            # only each unit's last layer's p* is read, and searched alone it does not
            # depend on the others: search just those (a fraction of the cost)
            layer_order = self._layer_order(model_q, units, calib, forward_fn)
            only = loss_p_keys(model_q, units, layer_order, self.p_cfg.kinds)
        parts = dict(p_search_cfg={k: v for k, v in asdict(self.p_cfg).items() if k != 'progress'},
                     p_search_images=self.p_search_images)
        if only is not None:  # a part only when set: full searches keep their fingerprint
            parts['p_search_only'] = [list(key) for key in only]
        search_fp = fingerprint.without(['partition']).with_parts(**parts)
        self.results = self._reusable_p_search(json_path, search_fp) if resume else None
        if self.results is None:
            batches = calib.first(self.p_search_images, whole_batches=True)
            report: Dict[str, Any] = {}
            self.results = search_p(model_q, batches, dense_fn or default_dense_fn, self.p_cfg,
                                    report=report, only=only)
            if json_path:
                report.update(fingerprint=search_fp.digest, fingerprint_parts=search_fp.parts)
                save_p_search(self.results, json_path,
                              os.path.join(work_dir, P_SEARCH_PNG), meta=report)
        if self.p_use != 'loss':
            apply_p_search(model_q, self.results)
        if self.p_use == 'scale':
            return None
        if layer_order is None:
            layer_order = self._layer_order(model_q, units, calib, forward_fn)
        return unit_p_map(units, self.results, layer_order, self.p_rule, self.cfg.p)

    @staticmethod
    def _layer_order(model_q, units, calib, forward_fn) -> List[str]:
        """Quant layer names in execution order (one forward of the first batch)."""
        return trace_execution(model_q, units, calib[0], forward_fn or default_forward)[2]

    @staticmethod
    def _reusable_p_search(json_path: Optional[str], search_fp: Fingerprint
                           ) -> Optional[Dict[str, Any]]:
        """Saved p search results made from the same inputs, else None (logged why)."""
        if not json_path or not os.path.isfile(json_path):
            return None
        try:
            saved = load_p_search(json_path)
            meta, layers = saved.get('meta') or {}, saved['layers']
        except (ValueError, KeyError, TypeError, AttributeError, OSError) as err:
            print_log(f'DetPTQ: {json_path} is unreadable ({err}); searching again',
                      logger='current', level=logging.WARNING)
            return None
        if meta.get('fingerprint') != search_fp.digest:
            print_log(f"DetPTQ: {json_path} is stale ({search_fp.explain(meta.get('fingerprint_parts'))}); "
                      'searching again', logger='current', level=logging.WARNING)
            return None
        print_log(f'DetPTQ: reusing p search results from {json_path}', logger='current')
        return layers
