"""Speed and memory of block reconstruction and the DetPTQ p search, against bare PyTorch.

    OMP_NUM_THREADS=1 python benchmarks/bench_recon.py                 # demo YOLOv6-N, 320 px
    python benchmarks/bench_recon.py --batch-sizes 4 --iters 10 --units 8
    python benchmarks/bench_recon.py --model yolov6_s --size 640 --batch-sizes 8 --units 6 \\
        --no-p-search                                  # per-iteration cost of the COCO run

For every reconstruction unit (execution order) and batch size it times
``--iters`` training iterations of our ``optimise_unit`` (AdaRound + LSQ +
Adam, BRECQ and QDrop modes) and, in the same process right after, of a bare
PyTorch loop doing the same math on the same unit: the quant layers' forward
replaced by one closure (LSQ fake-quantized input, AdaRound soft weight,
the layer op), rows indexed from one tensor, one Adam with two parameter
groups. The overhead ratio is bare it/s over ours: the cost of our framework
on top of the arithmetic. Interleaving the two per unit makes the ratios
robust to other jobs on the machine; absolute it/s are not.

It also times the DetPTQ p search (candidate runs/s, Lp scale search) and
reports the peak resident memory (``ru_maxrss``) after each stage.

Model: the demo YOLOv6-N (``checkpoints/yolov6n_demo.pth``) quantized as
``configs/demo/yolov6n_demo_detptq_w4a8.py``, calibrated on random images
(speed does not depend on the pixel values); ``--model`` picks a randomly
initialised model of ``configs/_base_/models/`` instead.
"""
from __future__ import annotations

import argparse
import math
import os.path as osp
import resource
import sys
import time
from typing import Any, Dict, List, Tuple

import torch
from torch import nn
from torch.utils import _pytree as pytree

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIG = osp.join(REPO, 'configs', 'demo', 'yolov6n_demo_detptq_w4a8.py')
DEMO_CHECKPOINT = osp.join(REPO, 'checkpoints', 'yolov6n_demo.pth')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Reconstruction / p search speed and memory.')
    parser.add_argument('--model', help='a configs/_base_/models/ name with random weights '
                        '(default: the demo YOLOv6-N checkpoint)')
    parser.add_argument('--size', type=int, default=320, help='input height = width')
    parser.add_argument('--images', type=int, default=32, help='calibration images')
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[4, 16])
    parser.add_argument('--iters', type=int, default=12, help='timed iterations per unit')
    parser.add_argument('--warmup', type=int, default=2, help='untimed iterations first')
    parser.add_argument('--units', type=int, help='only the first N units (execution order)')
    parser.add_argument('--positions', type=int, nargs='+',
                        help='only these unit positions (execution order), e.g. a sample')
    parser.add_argument('--modes', nargs='+', default=['brecq', 'qdrop'])
    parser.add_argument('--schedule-iters', type=int, default=300,
                        help='iterations per unit of the schedule whose time is reported '
                        '(300: the demo; 20000: the COCO configs)')
    parser.add_argument('--no-bare', action='store_true', help='skip the bare PyTorch loop')
    parser.add_argument('--no-p-search', action='store_true')
    parser.add_argument('--no-main-fill', action='store_true',
                        help="skip timing main's cache fill (slow on large models)")
    parser.add_argument('--p-search-images', type=int, default=4)
    parser.add_argument('--minmax', action='store_true',
                        help='MinMax calibration instead of the config\'s Lp search (faster set-up)')
    parser.add_argument('--json', help='also write the figures to this file')
    return parser.parse_args()


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------ model setup
def build_quantized(args) -> Tuple[nn.Module, List[torch.Tensor], str, Dict[str, Any]]:
    """(calibrated quantized model, calibration batches, description, quant_cfg)."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import detptq.models  # noqa: F401  (registers the models)
    from detptq.models.deploy import switch_to_deploy
    from detptq.quantization import calibrate, quantize_model
    from detptq.registry import MODELS
    from detptq.utils.checkpoint import (is_deploy_checkpoint, load_checkpoint_file,
                                         state_dict_of)
    init_default_scope('detptq')
    cfg = Config.fromfile(DEMO_CONFIG)
    quant_cfg = dict(cfg.quant_cfg)
    if args.minmax:  # same layers and bits, much faster calibration; speed is unchanged
        quant_cfg = dict(w_bits=quant_cfg['w_bits'], a_bits=quant_cfg['a_bits'],
                         first_last_bits=quant_cfg.get('first_last_bits', 8))
    torch.manual_seed(0)
    if args.model:
        model_cfg = Config.fromfile(osp.join(REPO, 'configs', '_base_', 'models',
                                             args.model + '.py')).model
        model = MODELS.build(model_cfg).eval()
        desc = f'{args.model}, random weights'
    else:
        model = MODELS.build(cfg.model).eval()
        if is_deploy_checkpoint(DEMO_CHECKPOINT):
            switch_to_deploy(model)
        model.load_state_dict(state_dict_of(load_checkpoint_file(DEMO_CHECKPOINT)))
        desc = f'demo YOLOv6-N ({osp.relpath(DEMO_CHECKPOINT, REPO)})'
    gen = torch.Generator().manual_seed(0)
    calib = [torch.randn(min(8, args.images - i), 3, args.size, args.size, generator=gen)
             for i in range(0, args.images, 8)]
    q = quantize_model(model, quant_cfg)
    calibrate(q, calib, num_batches=len(calib), progress=False)
    return q.eval(), calib, desc, quant_cfg


# ------------------------------------------------------------------ bare loop
class _BareLayer:
    """Replaces a quant layer's forward by one closure doing the same arithmetic."""

    def __init__(self, layer: nn.Module, rounder, act_q, drop: Dict[str, Any]) -> None:
        self.layer, self.rounder, self.act_q, self.drop = layer, rounder, act_q, drop
        base = rounder.base if rounder is not None else None
        with torch.no_grad():
            if base is not None:
                self.w_scale, self.w_zp = [t.detach() for t in base.broadcast_params(layer.weight)]
                self.w_floor = torch.floor(layer.weight / self.w_scale)
                self.w_range = (base.qmin, base.qmax)
        self.act = None
        if act_q is not None:
            self.act = (act_q.zero_point.detach(), act_q.qmin, act_q.qmax)

    def weight(self) -> torch.Tensor:
        if self.rounder is None:
            return self.layer.weight
        h = torch.clamp(torch.sigmoid(self.rounder.v) * 1.2 - 0.1, 0, 1)
        codes = torch.clamp(self.w_floor + h + self.w_zp, *self.w_range)
        return (codes - self.w_zp) * self.w_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act is not None:
            zp, qmin, qmax = self.act
            q = self.act_q
            factor = 1.0 / math.sqrt(x.numel() * qmax)
            s = q.scale * factor
            s = (q.scale - s).detach() + s
            u = x / s
            codes = torch.clamp((u.round() - u).detach() + u + zp, qmin, qmax)
            xq = (codes - zp) * s
            if self.drop['prob'] < 1.0:
                xq = torch.where(torch.rand(x.shape) < self.drop['prob'], xq, x)
            x = xq
        return self.layer._layer_op(x, self.weight())


def bare_loop(unit: nn.Module, setup, rows: Dict[str, torch.Tensor], batch: int, iters: int,
              warmup: int, drop_prob: float, lr_round: float, lr_act: float) -> float:
    """Seconds per iteration of the same math with no framework around it."""
    from detptq.reconstruction.partition import quant_layers
    rounders = {id(layer): r for layer, r in setup.rounders}
    acts = {id(q) for q, _ in setup.act_quantizers}
    drop = {'prob': drop_prob}
    patched = []
    for _, layer in quant_layers(unit):
        aq = layer.input_quantizer if id(layer.input_quantizer) in acts else None
        bare = _BareLayer(layer, rounders.get(id(layer)), aq, drop)
        layer.forward = bare.forward
        patched.append(layer)
    groups = [dict(params=[r.v for _, r in setup.rounders], lr=lr_round),
              dict(params=[q.scale for q, _ in setup.act_quantizers], lr=lr_act)]
    opt = torch.optim.Adam([g for g in groups if g['params']])
    x_all, y_all = rows['q_in'], rows['fp_out']  # unit args (a tensor or a list each)
    n = pytree.tree_leaves(x_all)[0].shape[0]
    x_fp = rows.get('fp_in')
    try:
        for t in range(warmup + iters):
            if t == warmup:
                start = time.perf_counter()
            idx = torch.randperm(n)[:batch]
            xs = pytree.tree_map(lambda x: x[idx], x_all)
            if drop_prob < 1.0 and x_fp is not None:
                xs = pytree.tree_map(lambda x, f: torch.where(torch.rand(x.shape) < drop_prob,
                                                              x, f[idx]), xs, x_fp)
            out = unit(*xs)
            y = pytree.tree_map(lambda v: v[idx], y_all)
            outs = out if isinstance(out, (list, tuple)) else [out]
            ys = y if isinstance(y, (list, tuple)) else [y]
            loss = sum((o - v).pow(2).sum(1).mean() for o, v in zip(outs, ys))
            if t > 0.2 * (warmup + iters):
                beta = 10.0
                loss = loss + 0.01 * sum((1 - (2 * torch.clamp(torch.sigmoid(r.v) * 1.2 - 0.1,
                                                                0, 1) - 1).abs().pow(beta)).sum()
                                         for _, r in setup.rounders)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return (time.perf_counter() - start) / iters
    finally:
        for layer in patched:
            del layer.forward


# ------------------------------------------------------------------ our loop
def unit_rows(cache) -> Dict[str, Any]:
    """All rows of a (single-group) unit cache as tensors, for the bare loop."""
    rows = next(cache.iter_batches(10 ** 9))
    return rows


def time_ours(unit, setup, cache, cfg, gen, iters: int, warmup: int) -> Tuple[float, float]:
    """(wall, CPU) seconds per iteration of ``optimise_unit`` after ``warmup`` untimed ones.

    CPU time of this process hardly depends on other jobs on the machine
    (one thread): it estimates the wall time on a quiet machine."""
    from detptq.reconstruction.lp_loss import LpLoss
    from detptq.reconstruction.unit_training import optimise_unit
    loss_fn = LpLoss(2.0, l2_units=cfg.l2_units)
    if warmup:
        cfg.iters = warmup
        optimise_unit(unit, setup, cache, loss_fn, cfg, gen, None)
    cfg.iters = iters
    start, cpu = time.perf_counter(), time.process_time()
    optimise_unit(unit, setup, cache, loss_fn, cfg, gen, None)
    return (time.perf_counter() - start) / iters, (time.process_time() - cpu) / iters


def bench_units(q: nn.Module, calib, args) -> List[Dict[str, Any]]:
    """Per unit, batch size and mode: our and the bare loop's seconds per iteration."""
    from detptq.reconstruction import ReconConfig, UnitDataCache, float_reference, partition_units
    from detptq.reconstruction.prefix_cache import UnitPrefixReplay
    from detptq.reconstruction.unit_io import fill_unit_cache, trace_execution
    from detptq.reconstruction.unit_training import finish_unit, setup_unit
    from detptq.quantization.bops import default_forward

    fp = float_reference(q)
    units = partition_units(q, 'block')
    order, calls, _ = trace_execution(q, units, calib[0], default_forward)
    print(f'{len(order)} reconstruction units', flush=True)
    picked = set(args.positions) if args.positions else set(range(args.units or len(order)))
    prefix = UnitPrefixReplay(fp, q, units, [i for i in order if calls[i] > 0],
                              lambda: default_forward(fp, calib[0]),
                              lambda: default_forward(q, calib[0]))
    rows = []
    for position, idx in enumerate(order):
        name, unit = units[idx]
        if calls[idx] == 0 or position not in picked:
            continue
        fill_full_s = math.nan
        if not args.no_main_fill:
            with UnitDataCache() as cache:
                # main's path: every unit re-runs both models from the input
                t0 = time.perf_counter()
                fill_unit_cache(cache, q, fp, name, unit, calib, default_forward,
                                calls[idx], with_fp_input=True)
                fill_full_s = time.perf_counter() - t0
        with UnitDataCache() as cache:
            # ours: calls earlier units' forwards computed are replayed (same values)
            t0 = time.perf_counter()
            fill_unit_cache(cache, q, fp, name, unit, calib, default_forward, calls[idx],
                            with_fp_input=True, prefix=prefix, unit_index=idx)
            fill_s = time.perf_counter() - t0
            all_rows = unit_rows(cache)
            for batch in args.batch_sizes:
                for mode in args.modes:
                    cfg = ReconConfig(mode=mode, iters=args.iters, batch_size=batch,
                                      progress=False, lr_round=1e-2)
                    gen = torch.Generator().manual_seed(position)
                    # a fresh copy of the unit: timing runs must not harden the model
                    work = _fresh_copy(unit)
                    setup = setup_unit(work, cfg)
                    try:
                        ours, ours_cpu = time_ours(work, setup, cache, cfg, gen, args.iters,
                                                   args.warmup)
                        bare = math.nan if args.no_bare else bare_loop(
                            work, setup, all_rows, batch, args.iters, args.warmup,
                            cfg.effective_drop_prob, cfg.lr_round, cfg.lr_act)
                    finally:
                        finish_unit(setup)
                    rows.append(dict(unit=name, position=position, batch=batch, mode=mode,
                                     ours_it_s=1.0 / ours, bare_it_s=1.0 / bare,
                                     ours_cpu_s_per_it=ours_cpu,
                                     overhead=ours / bare, fill_s=fill_s,
                                     fill_full_s=fill_full_s, total_units=len(order)))
                    print(f'{position:3d} {name[:34]:34s} b={batch:<3d} {mode:6s} '
                          f'ours {1 / ours:8.3f} it/s ({ours:.3f} s/it)  bare {1 / bare:8.3f} '
                          f'it/s  overhead x{ours / bare:5.2f}  CPU {ours_cpu:.3f} s/it  '
                          f'(cache fill {fill_s:.2f}s, '
                          f'main {fill_full_s:.2f}s)',
                          flush=True)
    return rows


def _fresh_copy(unit: nn.Module) -> nn.Module:
    import copy
    return copy.deepcopy(unit)


# ------------------------------------------------------------------ p search
def bench_p_search(q: nn.Module, calib, args) -> Dict[str, Any]:
    """The DetPTQ p search on the first ``--p-search-images`` images."""
    from detptq.reconstruction import PSearchConfig, search_p
    images = torch.cat(calib)[:args.p_search_images]
    report: Dict[str, Any] = {}
    start = time.perf_counter()
    search_p(q, [images], cfg=PSearchConfig(progress=False), report=report)
    total = time.perf_counter() - start
    odol_s = total - report['lp_search_seconds']
    out = dict(seconds=total, lp_search_seconds=report['lp_search_seconds'],
               candidate_seconds=odol_s, candidates=report['evaluated_candidates'],
               candidates_per_s=report['evaluated_candidates'] / odol_s,
               quantizers=report['quantizers'], images=report['images'])
    # reference: one plain FP forward of the whole model on the same images, 8x batched
    from detptq.quantization.state import disabled as quantization_disabled
    from detptq.reconstruction.p_search import default_dense_fn
    with torch.no_grad(), quantization_disabled(q):
        tiled = images.repeat(8, 1, 1, 1)
        default_dense_fn(q, tiled)
        t0 = time.perf_counter()
        default_dense_fn(q, tiled)
        out['full_forward_8x_s'] = time.perf_counter() - t0
    return out


def summarise(rows: List[Dict[str, Any]], schedule_iters: int) -> List[Dict[str, Any]]:
    """Totals per (batch, mode) over the measured units: seconds per iteration of every unit,
    and a schedule of ``schedule_iters`` iterations per unit (cache fill included) with our
    code and with main's (every unit's fill re-runs both models from the input)."""
    out = []
    keys = sorted({(r['batch'], r['mode']) for r in rows})
    for batch, mode in keys:
        sel = [r for r in rows if r['batch'] == batch and r['mode'] == mode]
        ours = sum(1 / r['ours_it_s'] for r in sel)
        ours_cpu = sum(r['ours_cpu_s_per_it'] for r in sel)
        bare = sum(1 / r['bare_it_s'] for r in sel)
        fill, fill_main = sum(r['fill_s'] for r in sel), sum(r['fill_full_s'] for r in sel)
        run, run_main = fill + schedule_iters * ours, fill_main + schedule_iters * ours
        total_units = sel[0]['total_units']
        out.append(dict(batch=batch, mode=mode, units=len(sel), total_units=total_units,
                        ours_s_per_iter_all_units=ours, bare_s_per_iter_all_units=bare,
                        overhead=ours / bare, fill_s=fill, fill_main_s=fill_main,
                        schedule_iters=schedule_iters, schedule_s=run, schedule_main_s=run_main,
                        speedup_vs_main=run_main / run,
                        # measured units stand for all units in proportion (a sample)
                        schedule_all_units_s=run * total_units / len(sel),
                        # the same from CPU time (a quiet machine), iterations only
                        schedule_all_units_cpu_s=schedule_iters * ours_cpu * total_units
                        / len(sel)))
    return out


def main() -> None:
    args = parse_args()
    sys.path.insert(0, REPO)
    import detptq
    print(f'detptq from {osp.dirname(detptq.__file__)}; torch {torch.__version__}, '
          f'{torch.get_num_threads()} thread(s)')
    t0 = time.perf_counter()
    q, calib, desc, quant_cfg = build_quantized(args)
    print(f'model: {desc}; {args.images} random images at {args.size} px; '
          f'quant_cfg {quant_cfg}; built + calibrated in {time.perf_counter() - t0:.1f}s; '
          f'peak RSS {peak_rss_mb():.0f} MiB')
    result: Dict[str, Any] = dict(model=desc, size=args.size, images=args.images)
    rows = bench_units(q, calib, args)
    result['units'] = rows
    result['totals'] = summarise(rows, args.schedule_iters)
    for tot in result['totals']:
        print(f"{tot['units']} of {tot['total_units']} units, batch {tot['batch']}, {tot['mode']}: "
              f"one iteration of every unit {tot['ours_s_per_iter_all_units']:.3f}s (bare "
              f"{tot['bare_s_per_iter_all_units']:.3f}s, overhead x{tot['overhead']:.2f}); "
              f"cache fill {tot['fill_s']:.1f}s (main {tot['fill_main_s']:.1f}s); "
              f"{tot['schedule_iters']} iterations per unit: {tot['schedule_s']:.0f}s (main "
              f"{tot['schedule_main_s']:.0f}s, speed-up x{tot['speedup_vs_main']:.2f}); "
              f"all units: {tot['schedule_all_units_s'] / 3600:.2f} h (iterations from CPU "
              f"time: {tot['schedule_all_units_cpu_s'] / 3600:.2f} h)")
    if not args.no_p_search:
        ps = bench_p_search(q, calib, args)
        result['p_search'] = ps
        print(f"p search: {ps['quantizers']} quantizers, {ps['images']} images: "
              f"{ps['seconds']:.1f}s (Lp scale search {ps['lp_search_seconds']:.1f}s, "
              f"{ps['candidates']} candidate runs in {ps['candidate_seconds']:.1f}s = "
              f"{ps['candidates_per_s']:.2f}/s; one full FP forward of 8x{ps['images']} "
              f"images {ps['full_forward_8x_s']:.2f}s); peak RSS {peak_rss_mb():.0f} MiB",
              flush=True)
    result['peak_rss_mb'] = peak_rss_mb()
    print(f'peak RSS {result["peak_rss_mb"]:.0f} MiB')
    if args.json:
        from detptq.utils.io import write_json_atomic
        write_json_atomic(result, args.json, indent=2)


if __name__ == '__main__':
    main()
