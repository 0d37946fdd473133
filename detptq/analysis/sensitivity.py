"""Per-layer quantization sensitivity: the detector's output error with one layer (not) quantized.

Two views of a quantized, calibrated model (``quantize_model`` + ``calibrate``):

* ``one``: only layer L is quantized, every other layer runs in float. The
  error says how much L alone hurts.
* ``all-but-one``: every layer is quantized except L. The lower the error,
  the more keeping L in float helps, so these rank *ascending*; the JSON also
  gives ``recovered = error(all quantized) - error(all but L)``.

The error compares the dense head outputs (``bbox_head.dense_outputs``:
class probabilities and ltrb distances) with the float model's on the same
images: ODOL (KL + L1, docs/METHOD.md section 7) or the MSE of both tensors. It is
the mean over images. Float outputs are computed once per batch.

Speed: every module call that finishes before L starts gives the same output
for all settings of L (float in ``one``, all-quantized in ``all-but-one``), so
those calls are recorded once per batch and replayed
(``detptq.utils.forward_replay``); only the rest of the network runs.

    results = layer_sensitivity(model_q, calib, metric='odol', mode='both')
    save_sensitivity(results, 'work/sensitivity.json', 'work/sensitivity.png', meta)
    print(format_top_table(results, top=10))
"""
from __future__ import annotations

import os
from contextlib import ExitStack
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from tqdm import tqdm

from detptq.models.dense_outputs import default_dense_fn
from detptq.quantization.calibration_set import CalibrationSet
from detptq.quantization.quant_modules import QUANT_MODULES
from detptq.quantization.state import disabled
from detptq.reconstruction.odol import ODOL
from detptq.utils.devices import module_device
from detptq.utils.forward_replay import CallTree, PrefixReplay
from detptq.utils.io import write_json_atomic

MODES = ('one', 'all-but-one', 'both')
METRICS = ('odol', 'mse')
Dense = Tuple[torch.Tensor, torch.Tensor]
DenseFn = Callable[[nn.Module, torch.Tensor], Dense]


def dense_mse(fp: Dense, q: Dense) -> torch.Tensor:
    """Per-image (B,) MSE of the class probabilities plus MSE of the ltrb distances."""
    terms = [(a.double() - b.double()).pow(2).flatten(1).mean(1) for a, b in zip(fp, q)]
    return terms[0] + terms[1]


def error_fn(metric: str) -> Callable[[Dense, Dense], torch.Tensor]:
    """The per-image error function named ``metric`` ('odol' or 'mse')."""
    if metric == 'odol':
        odol = ODOL()
        return lambda fp, q: odol(fp, q, reduction='none')
    if metric == 'mse':
        return dense_mse
    raise ValueError(f'sensitivity: metric={metric!r} is invalid; use one of {METRICS}')


def layer_bits(model: nn.Module, name: str, layer: nn.Module) -> Tuple[Any, Any]:
    """(w_bits, a_bits) of a quant layer, from the resolved config when ``quantize_model`` kept it."""
    cfg = getattr(model, 'quant_layer_cfgs', {}).get(name)
    if cfg is not None:
        return cfg['weight']['bits'], cfg['act']['bits']
    return (getattr(layer.weight_quantizer, 'bits', None),
            getattr(layer.input_quantizer, 'bits', None))


def _set_layer(layer: nn.Module, flags: Dict[nn.Module, bool], on: bool) -> None:
    """Switch a layer's quantizers on (to their calibrated flag) or off."""
    for q in (layer.weight_quantizer, layer.input_quantizer):
        q.enabled = flags[q] if on else False


def _set_all(flags: Dict[nn.Module, bool], on: bool) -> None:
    for q, flag in flags.items():
        q.enabled = flag if on else False


def _sweep(layers: List[Tuple[str, nn.Module]], flags: Dict[nn.Module, bool],
           mode: str, run: Callable[[], Dense], prefix: Optional[PrefixReplay], fp: Dense,
           compute: Callable[[Dense, Dense], torch.Tensor],
           sums: Dict[Tuple[str, str], torch.Tensor], bar: tqdm) -> None:
    """Add each layer's summed per-image error on one batch to ``sums[(mode, name)]``.

    The model enters with every layer off ('one') or on ('all-but-one'); each
    layer in turn is flipped, run, and flipped back.
    """
    one = mode == 'one'
    for name, layer in layers:
        _set_layer(layer, flags, on=one)
        try:
            if prefix is not None and name in prefix.replaced:
                with prefix.replaying(name):
                    out = run()
            else:
                out = run()
        finally:
            _set_layer(layer, flags, on=not one)
        sums[(mode, name)] += compute(fp, out).sum().double()  # on the device: no sync
        bar.update()


@torch.no_grad()
def layer_sensitivity(model: nn.Module, calib: CalibrationSet, metric: str = 'odol',
                      mode: str = 'both', dense_fn: DenseFn = default_dense_fn,
                      replay: bool = True, progress: bool = True) -> Dict[str, Any]:
    """Errors of every quant layer in ``mode`` on ``calib``; quantizer flags are restored after.

    Returns ``{'layers': [dict(name, type, w_bits, a_bits, error_one, error_all_but_one,
    recovered, rank_one, rank_all_but_one, rank)], 'error_all_quantized', 'images',
    'metric', 'mode'}``, layers sorted by ``rank`` (1 = most sensitive; the ``one`` rank
    when computed, else the ``all-but-one`` rank). ``replay=False`` runs every forward
    in full (slower; the same numbers).
    """
    if mode not in MODES:
        raise ValueError(f'sensitivity: mode={mode!r} is invalid; use one of {MODES}')
    compute = error_fn(metric)
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, QUANT_MODULES)]
    if not layers:
        raise ValueError('sensitivity: the model has no quant layers; call quantize_model and '
                         'calibrate first')
    inputs = CalibrationSet.of(calib)
    if not len(inputs):
        raise ValueError('sensitivity: no batches given')
    modes = ['one', 'all-but-one'] if mode == 'both' else [mode]
    was_training = model.training
    model.eval()
    # float64 sums on the model's device (the same additions as Python floats), read once
    device = module_device(model)
    sums = {(m, n): torch.zeros((), dtype=torch.float64, device=device)
            for m in modes for n, _ in layers}
    all_quantized, images = torch.zeros((), dtype=torch.float64, device=device), 0
    bar = tqdm(total=len(inputs) * len(layers) * len(modes), desc=f'sensitivity ({metric})',
               unit='layer', disable=not progress)
    state = ExitStack()
    flags = state.enter_context(disabled(model))  # the calibrated flags, restored at the end
    try:
        prefix = None
        if replay:
            tree = CallTree(model, lambda: dense_fn(model, inputs[0]))
            # a layer the dense outputs never call is simply run in full (its error is exact)
            called = [n for n, _ in layers if (n, 0) in tree.calls]
            prefix = PrefixReplay(model, tree, called)
        for x in inputs:
            run = lambda: dense_fn(model, x)  # noqa: E731
            # record = plain run, plus (with replay) keeping the outputs every layer's prefix shares
            record = (lambda: prefix.record(run)) if prefix else run
            _set_all(flags, on=False)
            fp = record()
            images += x.shape[0]
            if 'one' in modes:
                _sweep(layers, flags, 'one', run, prefix, fp, compute, sums, bar)
            _set_all(flags, on=True)
            quantized = record() if 'all-but-one' in modes else run()
            all_quantized += compute(fp, quantized).sum().double()
            if 'all-but-one' in modes:
                _sweep(layers, flags, 'all-but-one', run, prefix, fp, compute, sums, bar)
    finally:
        bar.close()
        state.close()
        model.train(was_training)
    keys = list(sums)
    sums = dict(zip(keys, torch.stack([sums[k] for k in keys]).tolist()))
    all_quantized = all_quantized.item()
    rows = []
    for name, layer in layers:
        w_bits, a_bits = layer_bits(model, name, layer)
        row = dict(name=name, type=type(layer).__name__, w_bits=w_bits, a_bits=a_bits)
        for m in modes:
            # float round-off can give -1e-17 for an unchanged output; errors are >= 0
            row['error_' + m.replace('-', '_')] = max(0.0, sums[(m, name)] / images)
        if 'all-but-one' in modes:
            row['recovered'] = all_quantized / images - row['error_all_but_one']
        rows.append(row)
    _rank(rows, modes)
    return dict(layers=rows, error_all_quantized=max(0.0, all_quantized / images),
                images=images, metric=metric, mode=mode)


def _rank(rows: List[Dict[str, Any]], modes: Sequence[str]) -> None:
    """Add rank_one / rank_all_but_one / rank (1 = most sensitive) and sort ``rows`` by rank."""
    if 'one' in modes:
        for i, row in enumerate(sorted(rows, key=lambda r: -r['error_one'])):
            row['rank_one'] = i + 1
    if 'all-but-one' in modes:
        for i, row in enumerate(sorted(rows, key=lambda r: r['error_all_but_one'])):
            row['rank_all_but_one'] = i + 1
    key = 'rank_one' if 'one' in modes else 'rank_all_but_one'
    for row in rows:
        row['rank'] = row[key]
    rows.sort(key=lambda r: r['rank'])


def save_sensitivity(results: Dict[str, Any], json_path: str, png_path: Optional[str] = None,
                     meta: Optional[Dict[str, Any]] = None) -> None:
    """Write ``{'meta': ..., **results}`` as JSON and, optionally, the bar chart."""
    write_json_atomic(dict(meta=meta or {}, **results), json_path, indent=1)
    if png_path:
        plot_sensitivity(results, png_path)


def plot_sensitivity(results: Dict[str, Any], png_path: str) -> None:
    """Horizontal bars per layer, most sensitive on top; one panel per computed mode."""
    import matplotlib
    matplotlib.use('Agg')  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    rows = results['layers']
    panels = [(k, t) for k, t in (
        ('error_one', f'only this layer quantized: {results["metric"].upper()}'),
        ('recovered', 'all but this layer quantized:\nerror recovered by keeping it float'))
        if k in rows[0]]
    labels = [f'{r["name"]}  W{r["w_bits"]}A{r["a_bits"]}' for r in rows]
    ys = range(len(rows))
    fig, axes = plt.subplots(1, len(panels), sharey=True, squeeze=False,
                             figsize=(5.0 * len(panels) + 3.0, max(3.0, 0.17 * len(rows) + 1.2)))
    for ax, (key, title) in zip(axes[0], panels):
        values = [r[key] for r in rows]
        ax.barh(ys, values, color='tab:red' if key == 'error_one' else 'tab:blue')
        if key == 'error_one' and min(values) > 0 and max(values) > 100 * min(values):
            ax.set_xscale('log')  # errors of single layers span decades
        ax.set_title(title, fontsize=9)
        ax.grid(axis='x', alpha=0.3)
    axes[0][0].set_yticks(list(ys))
    axes[0][0].set_yticklabels(labels, fontsize=6)
    axes[0][0].invert_yaxis()  # rank 1 on top
    fig.suptitle(f'Per-layer quantization sensitivity ({results["images"]} images, '
                 f'all quantized: {results["error_all_quantized"]:.4g})', fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(png_path)), exist_ok=True)
    fig.savefig(png_path, dpi=120)
    plt.close(fig)


def format_top_table(results: Dict[str, Any], top: int = 10) -> str:
    """The ``top`` most sensitive layers as a plain-text table."""
    rows = results['layers'][:top]
    width = max([len('layer')] + [len(r['name']) for r in rows])
    cols = [c for c in ('error_one', 'error_all_but_one', 'recovered') if rows and c in rows[0]]
    head = f'{"rank":>4}  {"layer":<{width}}  {"W/A":>5}' + ''.join(f'  {c:>17}' for c in cols)
    lines = [head, '-' * len(head)]
    for r in rows:
        bits = f'{r["w_bits"]}/{r["a_bits"]}'
        lines.append(f'{r["rank"]:>4}  {r["name"]:<{width}}  {bits:>5}'
                     + ''.join(f'  {r[c]:>17.6g}' for c in cols))
    lines.append(f'all layers quantized: {results["metric"]} = '
                 f'{results["error_all_quantized"]:.6g} on {results["images"]} images')
    return '\n'.join(lines)
