"""Layer-wise AdaRound, BRECQ and QDrop reconstruction (docs/METHOD.md sections 5-6).

Public entry point::

    stats = reconstruct(model_fp, model_q, units, calib, ReconConfig(mode='qdrop'),
                        forward_fn=None, p_map=None, work_dir='work_dirs/x')

- ``model_q``: a calibrated model from ``quantize_model``; reconstructed in place.
- ``model_fp``: the float reference with the same module names, or None
  (a deep copy of ``model_q`` with quantization off is used: recommended, it
  is the exact same fused graph).
- ``units``: ``partition_units(model_q, 'block' | 'layer')``.
- ``calib``: the ``CalibrationSet`` (or any sequence of model inputs),
  re-iterated once per unit; each batch goes to ``forward_fn(model, batch)``
  (default: ``model(batch)``).
- ``p_map``: optional ``{unit name: p}`` (DetPTQ); otherwise ``cfg.p``.

Per unit (in execution order): cache the quantized model's unit input and the
FP unit output over ``calib`` (QDrop also the FP input); swap each
weight quantizer for an ``AdaRoundQuantizer`` (Adam, lr 1e-3) and, with
``learn_act_scale``, train the input quantizers' steps with LSQ (Adam, lr
4e-5, cosine to 0); minimise ``LpLoss(p) + lambda * rounding loss``; then
freeze the rounding and write the hard-rounded weights back into the layer
(they lie on the grid, so the plain UniformQuantizer reproduces them and
export needs no AdaRound). QDrop quantizes each activation element with
probability ``drop_prob`` during training only; ``drop_prob=1`` is BRECQ.

Resumable: with ``work_dir`` each finished unit's state dict goes to
``work_dir/recon_state/unit_XXX.pth`` with a fingerprint of everything that
determines it: the caller's run fingerprint (quant config, checkpoint,
calibration images, ... see detptq.utils.fingerprint), the reconstruction
settings, the unit's p and the states of all units before it. A rerun loads a
unit only when every part matches; otherwise it logs which part changed and
recomputes it (an unreadable file is recomputed with a warning). Every unit
draws its random numbers from its own generator seeded with ``seed`` and its
index, so a resumed run equals an uninterrupted one.

Devices: the generator, the QDrop masks and the unit cache follow the unit's
device (``recon_cfg.cache_device``: the cache fills the accelerator up to
``cache_device_max_bytes``, then host RAM up to ``cache_max_bytes``, then
disk). CPU runs draw exactly the numbers they always did; CUDA runs use a
CUDA generator with the same seed, whose stream differs (``utils.devices``).
"""
from __future__ import annotations

import copy
import logging
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from mmengine.logging import print_log
from torch import nn
from tqdm import tqdm

from detptq.quantization.bops import default_forward
from detptq.quantization.calibration_set import CalibrationSet
from detptq.quantization.quant_modules import iter_quantizers
from detptq.utils.checkpoint import load_checkpoint_file, save_checkpoint_file
from detptq.utils.devices import module_device, seeded_generator
from detptq.utils.fingerprint import Fingerprint, digest_of, tensors_digest
from .data_cache import UnitDataCache
from .loss_history import LossRecorder
from .lp_loss import LpLoss
from .recon_config import ReconConfig
from .unit_io import fill_unit_cache, trace_execution
from .unit_training import evaluate_unit, finish_unit, optimise_unit, setup_unit

STATE_DIR = 'recon_state'


def float_reference(model_q: nn.Module) -> nn.Module:
    """A deep copy of a quantized model with every quantizer disabled (the FP target)."""
    model_fp = copy.deepcopy(model_q)
    for _, quantizer in iter_quantizers(model_fp):
        quantizer.enabled = False
    return model_fp


def state_path(work_dir: str, position: int) -> str:
    """File holding the state of the unit reconstructed at ``position`` (execution order)."""
    return os.path.join(work_dir, STATE_DIR, f'unit_{position:03d}.pth')


def _load_finished(path: str, fingerprint: Fingerprint) -> Optional[Dict[str, Any]]:
    """The saved record of a finished unit, or None (logged) if absent, unreadable or stale."""
    if not os.path.isfile(path):
        return None
    try:
        record = load_checkpoint_file(path)
        state_ok = tensors_digest(record['state']) == record['state_digest']
    except Exception as err:  # truncated / corrupt / foreign file: recompute, never crash
        reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        print_log(f'recon: {path} is unreadable ({reason}); recomputing this unit',
                  logger='current', level=logging.WARNING)
        return None
    if not state_ok:
        print_log(f'recon: {path} is corrupt (its tensors do not match their digest); '
                  'recomputing this unit', logger='current', level=logging.WARNING)
        return None
    if record.get('fingerprint') != fingerprint.digest:
        print_log(f"recon: {path} is stale ({fingerprint.explain(record.get('fingerprint_parts'))}); "
                  'recomputing this unit', logger='current', level=logging.WARNING)
        return None
    return record


def reconstruct_unit(model_fp: nn.Module, model_q: nn.Module, name: str, unit: nn.Module,
                     position: int, n_calls: int, calib: CalibrationSet,
                     forward_fn: Callable, p: float, cfg: ReconConfig,
                     bar: Optional[tqdm] = None) -> Dict[str, Any]:
    """Cache one unit's data, optimise it, harden it in place; return its statistics."""
    start = time.time()
    device = module_device(unit)
    gen = seeded_generator(cfg.seed * 1_000_003 + position, device)
    loss_fn = LpLoss(p, l2_units=cfg.l2_units)
    if cfg.loss_curve_every:
        loss_fn = LossRecorder(loss_fn, cfg.loss_curve_every, cfg.iters)
    cache_device = device if cfg.cache_device == 'auto' else None
    with UnitDataCache(cfg.cache_max_bytes, cfg.cache_dir, cache_device,
                       cfg.cache_device_max_bytes) as cache:
        fill_unit_cache(cache, model_q, model_fp, name, unit, calib, forward_fn, n_calls,
                        with_fp_input=cfg.mode == 'qdrop' and cfg.drop_prob < 1.0)
        before = evaluate_unit(unit, cache, loss_fn, cfg, device)
        setup = setup_unit(unit, cfg)
        try:
            last = optimise_unit(unit, setup, cache, loss_fn, cfg, gen, device, bar)
        finally:
            finish_unit(setup)
        after = evaluate_unit(unit, cache, loss_fn, cfg, device)
        rows, spilled = len(cache), cache.bytes_on_disk
    stats = dict(unit=name, position=position, p=float(p), loss_before=before, loss_after=after,
                 last_train_loss=last, rows=rows, spilled_bytes=spilled,
                 rounders=len(setup.rounders), act_steps=len(setup.act_quantizers),
                 seconds=time.time() - start)
    if isinstance(loss_fn, LossRecorder):
        stats['loss_curve'] = loss_fn.history
    return stats


def reconstruct(model_fp: Optional[nn.Module], model_q: nn.Module,
                units: Sequence[Tuple[str, nn.Module]], calib: CalibrationSet,
                cfg: Union[ReconConfig, Dict[str, Any], None] = None,
                forward_fn: Optional[Callable[[nn.Module, Any], Any]] = None,
                p_map: Optional[Dict[str, float]] = None, work_dir: Optional[str] = None,
                resume: bool = True, fingerprint: Optional[Fingerprint] = None
                ) -> List[Dict[str, Any]]:
    """Reconstruct every unit of ``model_q`` in execution order (in place); return per-unit stats.

    ``fingerprint``: what else determines the result (the run's inputs); it is
    stored with every unit state and must match for the state to be reused.
    """
    if cfg is None:
        cfg = ReconConfig()
    elif isinstance(cfg, dict):
        cfg = ReconConfig(**cfg)
    forward_fn = forward_fn or default_forward
    calib = CalibrationSet.of(calib)
    if not len(calib):
        raise ValueError('reconstruct: the calibration set is empty')
    if model_fp is None:
        model_fp = float_reference(model_q)
    modes = (model_fp.training, model_q.training)
    model_fp.eval()
    model_q.eval()
    order, calls, _ = trace_execution(model_q, units, calib[0], forward_fn)
    stats: List[Dict[str, Any]] = []
    base = (fingerprint or Fingerprint()).with_parts(recon_cfg=cfg.fingerprint('', -1, -1.0))
    chain = digest_of('start')  # digest of the states of all units done so far
    bar = tqdm(order, desc=f'reconstruct[{cfg.mode}]', disable=not cfg.progress)
    try:
        for position, idx in enumerate(bar):
            name, unit = units[idx]
            p = float((p_map or {}).get(name, cfg.p))
            unit_fp = base.with_parts(unit=dict(name=name, position=position), p=p,
                                      previous_units=chain)
            path = state_path(work_dir, position) if work_dir else None
            record = _load_finished(path, unit_fp) if resume and path else None
            if record is not None:
                unit.load_state_dict(record['state'])
                stats.append(record['stats'])
                chain = digest_of([chain, record['state_digest']])
                print_log(f'recon [{position + 1}/{len(order)}] {name}: resumed from {path}',
                          logger='current')
                continue
            bar.set_description(f'reconstruct[{cfg.mode}] {name}')
            if calls[idx] == 0:
                st = dict(unit=name, position=position, p=p, skipped='never runs')
                print_log(f'recon: unit {name} never runs in forward; skipped',
                          logger='current', level=logging.WARNING)
            else:
                st = reconstruct_unit(model_fp, model_q, name, unit, position, calls[idx],
                                      calib, forward_fn, p, cfg, bar)
                print_log(f"recon [{position + 1}/{len(order)}] {name}: p={p:g} loss "
                          f"{st['loss_before']:.5g} -> {st['loss_after']:.5g} "
                          f"({st['seconds']:.1f}s, {st['rows']} rows)", logger='current')
            bar.set_postfix(loss=f"{st.get('loss_after', float('nan')):.4g}")
            stats.append(st)
            state = unit.state_dict()
            state_digest = tensors_digest(state)
            chain = digest_of([chain, state_digest])
            if path is not None:
                save_checkpoint_file(dict(unit=name, fingerprint=unit_fp.digest,
                                          fingerprint_parts=unit_fp.parts, state=state,
                                          state_digest=state_digest, stats=st), path)
    finally:
        bar.close()
        model_fp.train(modes[0])
        model_q.train(modes[1])
    return stats
