"""Running a model up to a unit and catching the unit's inputs/outputs with hooks.

``trace_execution`` finds the order in which units first run (BRECQ must
reconstruct them in execution order, which can differ from registration
order, e.g. in the YOLOv6 neck) and how often each runs per forward.
``capture_unit_io`` runs one batch and stops the forward as soon as the
unit's last call is seen, so nothing after the unit is computed.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils import _pytree as pytree

from .partition import quant_layers, unit_members

ForwardFn = Callable[[nn.Module, Any], Any]


class _StopForward(Exception):
    """Raised by a hook to abandon the rest of a forward pass."""


def detach_tree(tree: Any) -> Any:
    """The same nesting with every tensor detached."""
    return pytree.tree_map(lambda t: t.detach() if isinstance(t, torch.Tensor) else t, tree)


def run_forward(model: nn.Module, batch: Any, forward_fn: ForwardFn) -> None:
    """forward_fn(model, batch), treating an early stop raised by a hook as success."""
    try:
        forward_fn(model, batch)
    except _StopForward:
        pass


def member_modules(model: nn.Module, name: str, unit: nn.Module) -> Tuple[nn.Module, nn.Module]:
    """(first, last) modules of a unit inside ``model`` (looked up by name)."""
    names = unit_members(name, unit)
    try:
        return model.get_submodule(names[0]), model.get_submodule(names[-1])
    except AttributeError as err:
        raise KeyError(f'unit {name!r}: module {names[0]!r}/{names[-1]!r} not found in '
                       f'{type(model).__name__}; FP and quantized models must share names') from err


@torch.no_grad()
def trace_execution(model: nn.Module, units: Sequence[Tuple[str, nn.Module]], batch: Any,
                    forward_fn: ForwardFn) -> Tuple[List[int], List[int], List[str]]:
    """(unit indices in first-call order, calls per forward of each unit, quant layers in call order)."""
    first_call: Dict[int, int] = {}
    calls = [0] * len(units)
    layer_order: List[str] = []
    seen: set = set()
    handles = []

    def unit_hook(idx: int):
        def hook(module, args):
            first_call.setdefault(idx, len(first_call))
            calls[idx] += 1
        return hook

    def layer_hook(lname: str):
        def hook(module, args):
            if lname not in seen:
                seen.add(lname)
                layer_order.append(lname)
        return hook

    try:
        for idx, (name, unit) in enumerate(units):
            first, _ = member_modules(model, name, unit)
            handles.append(first.register_forward_pre_hook(unit_hook(idx)))
        for lname, layer in quant_layers(model):
            handles.append(layer.register_forward_pre_hook(layer_hook(lname)))
        was_training = model.training
        model.eval()
        try:
            run_forward(model, batch, forward_fn)
        finally:
            model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    never = [i for i in range(len(units)) if i not in first_call]
    order = sorted(first_call, key=first_call.get) + never
    return order, calls, layer_order


@torch.no_grad()
def capture_unit_io(model: nn.Module, first: nn.Module, last: nn.Module, batch: Any,
                    forward_fn: ForwardFn, n_calls: int, want_in: bool = True,
                    want_out: bool = True) -> Tuple[List[Any], List[Any]]:
    """Inputs (args of ``first``) and outputs (of ``last``) of the unit's ``n_calls`` calls on one batch."""
    ins: List[Any] = []
    outs: List[Any] = []

    def pre_hook(module, args):
        if want_in:
            ins.append(detach_tree(args))
            if not want_out and len(ins) >= n_calls:
                raise _StopForward
        return None

    def post_hook(module, args, output):
        if want_out:
            outs.append(detach_tree(output))
            if len(outs) >= n_calls:
                raise _StopForward
        return None

    handles = [first.register_forward_pre_hook(pre_hook),
               last.register_forward_hook(post_hook)]
    try:
        run_forward(model, batch, forward_fn)
    finally:
        for h in handles:
            h.remove()
    if (want_in and len(ins) < n_calls) or (want_out and len(outs) < n_calls):
        raise RuntimeError(f'unit ran {max(len(ins), len(outs))} times, expected {n_calls}')
    return ins, outs


@torch.no_grad()
def fill_unit_cache(cache, model_q: nn.Module, model_fp: nn.Module, name: str, unit: nn.Module,
                    calib_data: Sequence[Any], forward_fn: ForwardFn, n_calls: int,
                    with_fp_input: bool = False, prefix=None, unit_index: int = -1) -> None:
    """Add every calibration batch's (q_in, fp_out[, fp_in]) of one unit to ``cache``.

    ``prefix`` (a ``prefix_cache.UnitPrefixReplay``, optional): replay the module
    calls that earlier units' forwards already computed (``unit_index``: this
    unit's index in ``units``); the cached values are the same.
    """
    q_first, _ = member_modules(model_q, name, unit)
    fp_first, fp_last = member_modules(model_fp, name, unit)
    for b, batch in enumerate(calib_data):
        with prefix.fp_session(unit_index, b) if prefix else nullcontext():
            fp_in, fp_out = capture_unit_io(model_fp, fp_first, fp_last, batch, forward_fn,
                                            n_calls, want_in=with_fp_input, want_out=True)
        with prefix.q_session(unit_index, b) if prefix else nullcontext():
            q_in, _ = capture_unit_io(model_q, q_first, q_first, batch, forward_fn, n_calls,
                                      want_in=True, want_out=False)
        for k in range(n_calls):
            fields = dict(q_in=q_in[k], fp_out=fp_out[k])
            if with_fp_input:
                fields['fp_in'] = fp_in[k]
            cache.add(**fields)
    cache.consolidate()


def to_device(tree: Any, device: Optional[torch.device]) -> Any:
    """Move every tensor of a nesting to ``device`` (no-op for None)."""
    if device is None:
        return tree
    return pytree.tree_map(lambda t: t.to(device) if isinstance(t, torch.Tensor) else t, tree)
