"""DetPTQ: choose each quantizer's Lp exponent p by the detector's output loss (docs/METHOD.md §7).

Public entry points::

    results = search_p(model_q, calib, dense_fn=default_dense_fn, cfg=PSearchConfig())
    save_p_search(results, 'work_dir/p_search.json', 'work_dir/p_search.png')
    apply_p_search(model_q, results)            # s_p* becomes each quantizer's scale
    p_map = unit_p_map(units, results, layer_order)   # {unit: p} for reconstruct()

For every active weight and input quantizer of every quant layer and every
p in ``PSearchConfig.p_values`` ({1, 1.5, ..., 4.5}): the Lp-optimal scale
s_p (the calibrators' ``LpSearchCalibrator``: weights from the weight,
activations from the layer's FP inputs over ``batches``), then the ODOL of
the detector with only that quantizer on at s_p. p* = argmin ODOL.
CFWS weight quantizers search the scale of the fine residual (the coarse
centre stays as calibrated).

Ablation switches (``PSearchConfig``, docs/detptq_study.md): ``fixed_p``
(no ODOL, one p for all), ``context='cumulative'`` (score each quantizer with
the earlier ones already quantized; no prefix-replay shortcut across
quantizers, so slower), ``cls_weight`` / ``box_weight`` (ODOL terms).

Speed: FP dense outputs are computed once per batch; the module calls that
finish before the layer are replayed from a recording (``utils.forward_replay``),
and the 8 candidates of one quantizer run as one batch of 8*B images.

``dense_fn(model, inputs) -> (cls_prob (B,N,C), ltrb (B,N,4))`` runs the
detector up to its dense outputs on one batch of the ``CalibrationSet``
(input tensors).
"""
from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Callable, Collection, Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.logging import print_log
from torch import nn
from tqdm import tqdm

from detptq.models.dense_outputs import default_dense_fn
from detptq.quantization.calibration_set import CalibrationSet
from detptq.quantization.calibrators.lp_search import LpSearchCalibrator
from detptq.quantization.cfws import is_splittable
from detptq.quantization.quantizer import UniformQuantizer
from detptq.quantization.state import disabled, saved_qparams
from detptq.utils.devices import module_device
from detptq.utils.forward_replay import CallTree, PrefixReplay, _tile
from detptq.utils.memory import release_free_memory
from .odol import ODOL
from .partition import quant_layers, unit_layer_names

P_CANDIDATES = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5)
KINDS = ('weight', 'act')
CONTEXTS = ('alone', 'cumulative')
DenseFn = Callable[[nn.Module, Any], Tuple[torch.Tensor, torch.Tensor]]
Target = Tuple[str, nn.Module, str, UniformQuantizer]  # (layer name, layer, kind, quantizer)
QParams = Tuple[torch.Tensor, torch.Tensor]  # (scale, zero_point)


@dataclass
class PSearchConfig:
    """Settings of the DetPTQ p search."""
    p_values: Tuple[float, ...] = P_CANDIDATES
    num_candidates: int = 100       # clip ratios tried by the Lp search (1% steps)
    step: float = 0.01
    max_samples: int = 200_000      # activation values kept per layer for the Lp search
    batch_candidates: bool = True   # run all p of one quantizer as one K*B batch
    kinds: Tuple[str, ...] = KINDS  # which quantizers to search
    cls_weight: float = 1.0
    box_weight: float = 1.0
    progress: bool = True
    # ablations (docs/detptq_study.md); the defaults are the method as described
    fixed_p: Optional[float] = None  # no ODOL: every quantizer gets p = fixed_p and s_p
    context: str = 'alone'  # 'alone': only the searched quantizer on; 'cumulative': the
    #                         quantizers before it (execution order) on at their chosen s_p*

    def __post_init__(self) -> None:
        if self.context not in CONTEXTS:
            raise ValueError(f'PSearchConfig: context={self.context!r}, expected one of {CONTEXTS}')
        if self.fixed_p is not None and not float(self.fixed_p) > 0:
            raise ValueError(f'PSearchConfig: fixed_p={self.fixed_p!r} must be a positive number')
        if self.cls_weight < 0 or self.box_weight < 0 or self.cls_weight + self.box_weight == 0:
            raise ValueError(f'PSearchConfig: cls_weight={self.cls_weight}, box_weight='
                             f'{self.box_weight}; need >= 0 and not both 0')

    @property
    def searched_p(self) -> Tuple[float, ...]:
        """The p values whose Lp-optimal scales are computed."""
        return (float(self.fixed_p),) if self.fixed_p is not None else tuple(self.p_values)


def _targets(model: nn.Module, kinds: Sequence[str]) -> List[Target]:
    """(layer name, layer, kind, quantizer) for every active uniform quantizer."""
    found = []
    for name, layer in quant_layers(model):
        for kind in kinds:
            q = layer.weight_quantizer if kind == 'weight' else layer.input_quantizer
            if isinstance(q, UniformQuantizer) and q.enabled and not q.is_pass_through:
                found.append((name, layer, kind, q))
    return found


def _calibrator(q: UniformQuantizer, cfg: PSearchConfig) -> LpSearchCalibrator:
    cal = LpSearchCalibrator(p=2.0, num_candidates=cfg.num_candidates, step=cfg.step,
                             max_samples=cfg.max_samples)
    cal.configure(per_channel=q.per_channel, ch_axis=q.ch_axis)
    return cal


@torch.no_grad()
def lp_optimal_params(model: nn.Module, targets: List[Target], batches: Sequence[Any],
                      dense_fn: DenseFn, cfg: PSearchConfig) -> Dict[Tuple[str, str], List[QParams]]:
    """{(layer, kind): [(scale, zero_point) per p]} from weights and FP layer inputs."""
    cals = {(n, k): _calibrator(q, cfg) for n, _, k, q in targets}
    handles = []
    for name, layer, kind, q in targets:
        if kind == 'weight':
            cals[(name, kind)].observe(_weight_to_search(layer.weight, q))
        else:
            handles.append(layer.register_forward_pre_hook(
                lambda m, args, cal=cals[(name, kind)]: cal.observe(args[0])))
    try:
        if handles:
            for inputs in batches:
                dense_fn(model, inputs)
    finally:
        for h in handles:
            h.remove()
    params = {}
    for name, _, kind, q in targets:
        cal = cals[(name, kind)]
        if cal.has_data:  # a layer that never ran keeps its calibrated scale
            # sqrt products for half-integer p: the p search's numbers since it was written
            params[(name, kind)] = cal.compute_per_p(q, cfg.searched_p, half_powers_by_sqrt=True)
        cal.reset()  # its samples are no longer needed
        release_free_memory()  # see utils.memory: otherwise the heap only grows here
    return params


def _weight_to_search(weight: torch.Tensor, q: UniformQuantizer) -> torch.Tensor:
    """What a weight quantizer's scale applies to: the fine residual for a CFWS split kernel."""
    if getattr(q, 'split', False) and hasattr(q, 'coarse_part') and is_splittable(weight):
        return weight - q.coarse_part(weight, q.coarse_scale)
    return weight


def _unique_params(params: List[QParams]) -> Tuple[List[QParams], torch.Tensor]:
    """Distinct (scale, zero_point) pairs and, per input entry, the index of its pair.

    Compares tensors on their device (a host sync each): call once per quantizer.
    """
    unique: List[QParams] = []
    slot = []
    for scale, zp in params:
        for i, (s, z) in enumerate(unique):
            if torch.equal(s, scale) and torch.equal(z, zp):
                slot.append(i)
                break
        else:
            slot.append(len(unique))
            unique.append((scale, zp))
    return unique, torch.tensor(slot, device=params[0][0].device)


def _candidate_odol(model: nn.Module, replay: PrefixReplay, name: str, layer: nn.Module,
                    q: UniformQuantizer, group: List[Tuple[torch.Tensor, torch.Tensor]],
                    inputs: Any, dense_fn: DenseFn, fp_dense, odol: ODOL) -> List[torch.Tensor]:
    """Per-image ODOL of each (scale, zero_point) in ``group``, run as one batch."""
    k = len(group)
    original = layer.forward

    def forward(x: torch.Tensor) -> torch.Tensor:
        outs = []
        for (scale, zp), chunk in zip(group, x.chunk(k)):
            q.set_params(scale, zp)
            q.enabled = True
            outs.append(original(chunk))
            q.enabled = False
        return torch.cat(outs)

    layer.forward = forward
    try:
        with replay.replaying(name, repeat=k):
            cls_prob, ltrb = dense_fn(model, _tile(inputs, k))
    finally:
        del layer.forward
    return [odol(fp_dense, (c, b), reduction='none')
            for c, b in zip(cls_prob.chunk(k), ltrb.chunk(k))]


def _score_target(model: nn.Module, replay: PrefixReplay, target: Target,
                  grids: Tuple[List[QParams], torch.Tensor], inputs: Any, dense_fn: DenseFn,
                  fp_dense, odol: ODOL, batch_candidates: bool) -> Tuple[torch.Tensor, int]:
    """(summed ODOL over the batch's images per p, distinct grids run); stays on the device.

    ``grids``: ``_unique_params`` of the quantizer's per-p parameters.
    """
    name, layer, _, q = target
    # several p often pick the same clip ratio: evaluate each grid once
    cands, slot = grids
    groups = [cands] if batch_candidates else [[c] for c in cands]
    per_image: List[torch.Tensor] = []
    for group in groups:
        per_image += _candidate_odol(model, replay, name, layer, q, group, inputs, dense_fn,
                                     fp_dense, odol)
    totals = torch.stack([v.sum() for v in per_image]).to(torch.float64)
    return totals[slot], len(cands)


def _best_index(mean: Sequence[float], p_values: Sequence[float]) -> int:
    """argmin of the mean ODOL; exact ties (e.g. an output-independent layer) go to p nearest 2."""
    return min(range(len(mean)), key=lambda i: (mean[i], abs(p_values[i] - 2.0)))


@torch.no_grad()
def search_p(model_q: nn.Module, calib: CalibrationSet, dense_fn: DenseFn = default_dense_fn,
             cfg: Optional[PSearchConfig] = None, report: Optional[Dict[str, Any]] = None,
             only: Optional[Collection[Tuple[str, str]]] = None
             ) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """{layer: {'weight'|'act': {'p', 'scale', 'zero_point', 'odol': {p: value}}}}; model unchanged.

    ``cfg.fixed_p`` skips the ODOL runs (``odol`` is then empty); with
    ``cfg.context='cumulative'`` each quantizer is scored with all quantizers
    before it (execution order) already on at their chosen scale.
    ``only`` ((layer, kind) pairs) limits the search to those quantizers;
    with context 'alone' their results equal a full search's.
    ``report`` (a dict), if given, receives timing and counts.
    """
    cfg = cfg or PSearchConfig()
    start = time.time()
    p_values = cfg.searched_p
    was_training = model_q.training
    model_q.eval()
    batches = list(CalibrationSet.of(calib))  # the few images of the search, preprocessed once
    targets = _targets(model_q, cfg.kinds)
    if only is not None:
        wanted = set(only)
        targets = [t for t in targets if (t[0], t[2]) in wanted]
    # FP everywhere; each candidate switches on exactly one quantizer. Closing the
    # stack restores every grid, then every flag.
    state = ExitStack()
    state.enter_context(disabled(model_q))
    state.enter_context(saved_qparams(model_q))
    odol = ODOL(cfg.cls_weight, cfg.box_weight)
    sums: Dict[Tuple[str, str], torch.Tensor] = {}
    images = evaluated = 0
    try:
        params = lp_optimal_params(model_q, targets, batches, dense_fn, cfg)
        t_lp = time.time() - start
        targets = [t for t in targets if (t[0], t[2]) in params]
        if cfg.fixed_p is None and targets:
            tree = CallTree(model_q, lambda: dense_fn(model_q, batches[0]))
            replay = PrefixReplay(model_q, tree, sorted({t[0] for t in targets}))
            grids = {key: _unique_params(per_p) for key, per_p in params.items()}
            # per-p ODOL sums stay on the model's device: read back once per quantizer
            device = module_device(model_q)
            sums = {(n, k): torch.zeros(len(p_values), dtype=torch.float64, device=device)
                    for n, _, k, _ in targets}
            bar = tqdm(total=len(batches) * len(targets), desc='DetPTQ p search',
                       disable=not cfg.progress)
            if cfg.context == 'alone':
                for inputs in batches:
                    fp_dense = replay.record(lambda: dense_fn(model_q, inputs))
                    images += fp_dense[0].shape[0]
                    for target in targets:
                        totals, runs = _score_target(model_q, replay, target,
                                                     grids[(target[0], target[2])], inputs,
                                                     dense_fn, fp_dense, odol,
                                                     cfg.batch_candidates)
                        sums[(target[0], target[2])] += totals
                        evaluated += runs
                        release_free_memory()
                        bar.update()
            else:
                fp_all = [dense_fn(model_q, inputs) for inputs in batches]
                images = sum(d[0].shape[0] for d in fp_all)
                # execution order, a layer's weight before its input quantizer
                rank = {cid[0]: c.start for cid, c in tree.calls.items() if cid[1] == 0}
                targets.sort(key=lambda t: (rank.get(t[0], float('inf')), KINDS.index(t[2])))
                for target in targets:
                    key = (target[0], target[2])
                    for inputs, fp_dense in zip(batches, fp_all):
                        # the prefix now includes the earlier quantizers: record it again
                        replay.record(lambda: dense_fn(model_q, inputs))
                        totals, runs = _score_target(model_q, replay, target, grids[key],
                                                     inputs, dense_fn, fp_dense, odol,
                                                     cfg.batch_candidates)
                        sums[key] += totals
                        evaluated += runs
                        bar.update()
                    best = _best_index((sums[key] / max(images, 1)).tolist(), p_values)
                    target[3].set_params(*params[key][best])
                    target[3].enabled = True
            bar.close()
    finally:
        state.close()
        model_q.train(was_training)
    results: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for name, _, kind, _ in targets:
        if (name, kind) in sums:
            mean = (sums[(name, kind)] / max(images, 1)).tolist()
            best = _best_index(mean, p_values)
            odol_by_p = {str(float(p)): v for p, v in zip(p_values, mean)}
        else:  # fixed p: nothing to compare
            best, odol_by_p = 0, {}
        scale, zp = params[(name, kind)][best]
        results.setdefault(name, {})[kind] = dict(
            p=float(p_values[best]), scale=scale.tolist(), zero_point=zp.tolist(),
            odol=odol_by_p)
    total = time.time() - start
    if report is not None:
        report.update(seconds=total, lp_search_seconds=t_lp, quantizers=len(targets),
                      images=images, p_values=[float(p) for p in p_values],
                      evaluated_candidates=evaluated,
                      batch_candidates=cfg.batch_candidates, context=cfg.context,
                      fixed_p=cfg.fixed_p, cls_weight=cfg.cls_weight,
                      box_weight=cfg.box_weight)
    print_log(f'DetPTQ p search ({cfg.context}, fixed_p={cfg.fixed_p}): {len(targets)} '
              f'quantizers x {len(p_values)} p ({evaluated} candidate runs over all batches, '
              f'equal grids shared) on {images} images in {total:.1f}s '
              f'(Lp scale search {t_lp:.1f}s)', logger='current')
    return results


def apply_p_search(model_q: nn.Module, results: Dict[str, Dict[str, Dict[str, Any]]]) -> int:
    """Set every searched quantizer's scale/zero point to its s_p*; return how many were set."""
    modules = dict(model_q.named_modules())
    count = 0
    for name, kinds in results.items():
        layer = modules.get(name)
        if layer is None:
            raise KeyError(f'p-search result for {name!r}, which the model does not have')
        for kind, entry in kinds.items():
            q = layer.weight_quantizer if kind == 'weight' else layer.input_quantizer
            device = q.scale.device
            q.set_params(torch.tensor(entry['scale'], device=device),
                         torch.tensor(entry['zero_point'], device=device))
            count += 1
    return count


def loss_p_keys(model_q: nn.Module, units: Sequence[Tuple[str, nn.Module]],
                layer_order: Sequence[str], kinds: Sequence[str] = KINDS) -> List[Tuple[str, str]]:
    """The (layer, kind) quantizers whose p* ``unit_p_map(rule='last')`` reads: one per unit.

    Searching only these (context 'alone') gives the same unit p as a full
    search at a fraction of its cost, when p* sets nothing else (p_use='loss').
    """
    searchable: Dict[str, List[str]] = {}
    for name, _, kind, _ in _targets(model_q, kinds):
        searchable.setdefault(name, []).append(kind)
    rank = {n: i for i, n in enumerate(layer_order)}
    keys = []
    for uname, unit in units:
        layers = [n for n in unit_layer_names(uname, unit) if n in searchable]
        if layers:  # the same choice as unit_p_map: last by execution, its weight else its act
            last = max(layers, key=lambda n: (rank.get(n, -1), layers.index(n)))
            keys.append((last, 'weight' if 'weight' in searchable[last] else 'act'))
    return keys


def unit_p_map(units: Sequence[Tuple[str, nn.Module]], results: Dict[str, Dict[str, Dict[str, Any]]],
               layer_order: Sequence[str] = (), rule: str = 'last',
               default: float = 2.0) -> Dict[str, float]:
    """p of each unit's reconstruction loss from the per-layer p*.

    'last': the weight p* of the unit's last quant layer in execution order
    (``layer_order``; registration order for layers not in it), else its
    act p*; this layer produces the unit output the loss compares.
    'mean': the mean of all p* (weights and acts) of the unit's layers.
    Units without any searched layer get ``default``.
    """
    if rule not in ('last', 'mean'):
        raise ValueError(f"rule must be 'last' or 'mean', got {rule!r}")
    rank = {n: i for i, n in enumerate(layer_order)}
    p_map = {}
    for uname, unit in units:
        layers = [n for n in unit_layer_names(uname, unit) if n in results]
        if not layers:
            p_map[uname] = default
        elif rule == 'mean':
            ps = [e['p'] for n in layers for e in results[n].values()]
            p_map[uname] = float(sum(ps) / len(ps))
        else:
            last = max(layers, key=lambda n: (rank.get(n, -1), layers.index(n)))
            entry = results[last].get('weight') or results[last].get('act')
            p_map[uname] = float(entry['p'])
    return p_map

