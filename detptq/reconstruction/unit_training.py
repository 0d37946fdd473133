"""Training one reconstruction unit: AdaRound + LSQ setup, QDrop, the Adam loop, hardening.

``setup_unit`` swaps weight quantizers for AdaRound and unfreezes LSQ steps,
``optimise_unit`` runs the iterations on cached data, ``finish_unit`` freezes
the rounding, writes the on-grid weights into the layer and undoes the setup.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.utils import _pytree as pytree
from tqdm import tqdm

from detptq.quantization.quantizer import MIN_SCALE, UniformQuantizer
from detptq.quantization.state import is_active as _is_active
from .adaround import AdaRoundQuantizer, LinearTempDecay
from .data_cache import UnitDataCache
from .drop_masks import DropMasks
from .lp_loss import LpLoss
from .partition import quant_layers
from .recon_config import ReconConfig
from .unit_io import to_device


# ----------------------------------------------------------------- unit setup
@dataclass
class _UnitSetup:
    """What was swapped/unfrozen in a unit, so it can be undone."""
    rounders: List[Tuple[nn.Module, AdaRoundQuantizer]] = field(default_factory=list)
    act_quantizers: List[Tuple[UniformQuantizer, bool]] = field(default_factory=list)
    grad_flags: List[Tuple[nn.Parameter, bool]] = field(default_factory=list)
    hooks: list = field(default_factory=list)
    drop: DropMasks = field(default_factory=DropMasks)




def setup_unit(unit: nn.Module, cfg: ReconConfig) -> _UnitSetup:
    """Freeze the weights, attach AdaRound to weight quantizers, unfreeze LSQ act steps, add drop hooks."""
    setup = _UnitSetup()
    for p in unit.parameters():
        setup.grad_flags.append((p, p.requires_grad))
        p.requires_grad_(False)
    for _, layer in quant_layers(unit):
        wq = layer.weight_quantizer
        # CFWS and other non-uniform weight quantizers keep nearest rounding
        if isinstance(wq, UniformQuantizer) and _is_active(wq):
            rounder = AdaRoundQuantizer(wq, layer.weight.detach())
            layer.weight_quantizer = rounder
            setup.rounders.append((layer, rounder))
        aq = layer.input_quantizer
        if isinstance(aq, UniformQuantizer) and _is_active(aq):
            if cfg.learn_act_scale:
                setup.act_quantizers.append((aq, aq.learn_scale))
                aq.set_learn_scale(True)
            setup.hooks.append(aq.register_forward_hook(setup.drop.quantizer_hook))
    return setup


def finish_unit(setup: _UnitSetup) -> None:
    """Harden rounding, write on-grid weights back, restore quantizers and grad flags."""
    with torch.no_grad():
        for layer, rounder in setup.rounders:
            rounder.hard()
            layer.weight.copy_(rounder(layer.weight))
            layer.weight_quantizer = rounder.base
        for quantizer, learn in setup.act_quantizers:
            quantizer.scale.data.clamp_(min=MIN_SCALE)  # LSQ must not flip the sign
            quantizer.set_learn_scale(learn)
    for h in setup.hooks:
        h.remove()
    for p, flag in setup.grad_flags:
        p.requires_grad_(flag)


# --------------------------------------------------------------- optimisation
def _unit_inputs(batch: Dict[str, Any], drop: DropMasks) -> Any:
    """The unit's args: the quantized-model input, in QDrop mixed element-wise with the FP input.

    Each mixed leaf carries its mask, so the quantizers that consume it give
    ``where(mask, Q(q_in), fp_in)`` (QDrop's block input).
    """
    q_in = batch['q_in']
    if not drop.active or 'fp_in' not in batch:
        return q_in
    return pytree.tree_map(drop.mix, q_in, batch['fp_in'])


def unit_forward(unit: nn.Module, setup: _UnitSetup, batch: Dict[str, Any], drop_prob: float,
                 gen: torch.Generator) -> Any:
    """One forward of a set-up unit on a cached batch with the given drop probability."""
    setup.drop.begin(drop_prob, gen)
    try:
        return unit(*_unit_inputs(batch, setup.drop))
    finally:
        setup.drop.end()


@torch.no_grad()
def evaluate_unit(unit: nn.Module, cache: UnitDataCache, loss_fn: LpLoss, cfg: ReconConfig,
                  device: Optional[torch.device]) -> float:
    """Mean reconstruction loss over the first ``eval_samples`` rows (all activations quantized)."""
    # float64 on the unit's device: the same sum as Python floats, one host sync at the end
    total, rows = torch.zeros((), dtype=torch.float64, device=device), 0
    for batch in cache.iter_batches(cfg.batch_size, limit=cfg.eval_samples):
        batch = to_device(batch, device)
        out = unit(*batch['q_in'])
        n = pytree.tree_leaves(batch['q_in'])[0].shape[0]
        total += loss_fn(out, batch['fp_out']).double() * n
        rows += n
    return total.item() / max(rows, 1)


def optimise_unit(unit: nn.Module, setup: _UnitSetup, cache: UnitDataCache, loss_fn: LpLoss,
                  cfg: ReconConfig, gen: torch.Generator, device: Optional[torch.device],
                  bar: Optional[tqdm] = None) -> float:
    """Run cfg.iters Adam steps; return the last reconstruction loss."""
    round_params = [r.v for _, r in setup.rounders]
    act_params = [q.scale for q, _ in setup.act_quantizers]
    optimizers, schedulers = [], []
    if round_params:
        optimizers.append(torch.optim.Adam(round_params, lr=cfg.lr_round))
    if act_params:
        opt = torch.optim.Adam(act_params, lr=cfg.lr_act)
        optimizers.append(opt)
        schedulers.append(torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.iters,
                                                                     eta_min=0.0))
    if not optimizers:
        return float('nan')
    decay = LinearTempDecay(cfg.iters, cfg.warm_up, cfg.b_start, cfg.b_end)
    drop_prob = cfg.effective_drop_prob
    rec = torch.full((), float('nan'), device=device)
    for t in range(cfg.iters):
        batch = to_device(cache.sample(cfg.batch_size, gen), device)
        out = unit_forward(unit, setup, batch, drop_prob, gen)
        rec = loss_fn(out, batch['fp_out'])
        loss = rec
        if setup.rounders and not decay.in_warmup(t):
            beta = decay(t)
            loss = loss + cfg.round_weight * sum(r.rounding_loss(beta) for _, r in setup.rounders)
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in optimizers:
            opt.step()
        for sched in schedulers:
            sched.step()
        if bar is not None and (t % cfg.log_interval == 0 or t == cfg.iters - 1):
            bar.set_postfix(iter=t, rec=f'{rec.item():.4g}', total=f'{loss.item():.4g}')
    return rec.item()
