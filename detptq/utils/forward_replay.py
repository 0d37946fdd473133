"""Re-run only the part of a forward pass that follows one layer.

The DetPTQ p search quantizes one layer at a time, so every module call that
*finished before that layer started* produces exactly its FP output. This
file records the module call tree of one forward (``CallTree``), keeps the
outputs of the calls that are ever needed (``PrefixReplay.record``), and
during a later forward makes those calls return their recorded outputs
instead of computing (``PrefixReplay.replaying``). Only the outermost such
calls are replaced (e.g. the whole backbone when the layer is in the neck).

With ``repeat=K`` recorded tensors are tiled K times along the batch axis,
so K candidate quantizations of the layer run as one batch of K*B images.
Works with any forward made of module calls; modules called several times
per forward (shared heads) are handled per call.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

import torch
from torch import nn
from torch.utils import _pytree as pytree

CallId = Tuple[str, int]  # (module name, k-th call of that module in the forward)


@dataclass
class _Call:
    parent: Optional[CallId]
    start: int
    end: int = -1


class CallTree:
    """Which module call ran inside which, and in what order, for one forward."""

    def __init__(self, model: nn.Module, run: Callable[[], Any]) -> None:
        self.calls: Dict[CallId, _Call] = {}
        stack: List[CallId] = []
        counts: Dict[str, int] = {}
        clock = [0]
        handles = []

        def pre(name: str):
            def hook(module, args):
                cid = (name, counts.get(name, 0))
                counts[name] = cid[1] + 1
                self.calls[cid] = _Call(parent=stack[-1] if stack else None, start=clock[0])
                clock[0] += 1
                stack.append(cid)
            return hook

        def post(name: str):
            def hook(module, args, output):
                cid = stack.pop()
                assert cid[0] == name, f'unbalanced module calls: {cid} vs {name}'
                self.calls[cid].end = clock[0]
                clock[0] += 1
            return hook

        for name, module in model.named_modules():
            if name:  # the root is never replaced, so it needs no record
                handles.append(module.register_forward_pre_hook(pre(name)))
                handles.append(module.register_forward_hook(post(name)))
        try:
            with torch.no_grad():
                run()
        finally:
            for h in handles:
                h.remove()

    def finished_before(self, name: str) -> List[CallId]:
        """Outermost calls that ended before the first call of ``name`` started."""
        target = self.calls.get((name, 0))
        if target is None:
            raise KeyError(f'{name!r} is not called in the forward pass')
        done = {cid for cid, c in self.calls.items() if 0 <= c.end < target.start}
        return sorted((cid for cid in done if self.calls[cid].parent not in done),
                      key=lambda cid: self.calls[cid].start)


def _tile(tree: Any, repeat: int) -> Any:
    if repeat == 1:
        return tree
    return pytree.tree_map(
        lambda t: t.repeat(repeat, *([1] * (t.dim() - 1)))
        if isinstance(t, torch.Tensor) and t.dim() > 0 else t, tree)


class PrefixReplay:
    """Record FP outputs of the calls preceding each target layer; replay them later."""

    def __init__(self, model: nn.Module, tree: CallTree, targets: List[str]) -> None:
        self.model = model
        self.modules = dict(model.named_modules())
        self.replaced: Dict[str, List[CallId]] = {t: tree.finished_before(t) for t in targets}
        self.needed: Set[CallId] = {cid for cids in self.replaced.values() for cid in cids}
        self.outputs: Dict[CallId, Any] = {}

    @torch.no_grad()
    def record(self, run: Callable[[], Any]) -> Any:
        """Run the FP forward once, keeping the outputs of every needed call; return run()'s result."""
        self.outputs = {}
        counts: Dict[str, int] = {}
        handles = []

        def post(name: str):
            def hook(module, args, output):
                cid = (name, counts.get(name, 0))
                counts[name] = cid[1] + 1
                if cid in self.needed:
                    self.outputs[cid] = pytree.tree_map(
                        lambda t: t.detach() if isinstance(t, torch.Tensor) else t, output)
            return hook

        for name in {cid[0] for cid in self.needed}:
            handles.append(self.modules[name].register_forward_hook(post(name)))
        try:
            return run()
        finally:
            for h in handles:
                h.remove()

    @contextmanager
    def replaying(self, target: str, repeat: int = 1) -> Iterator[None]:
        """Inside the block, the calls preceding ``target`` return their recorded outputs."""
        by_module: Dict[str, Set[int]] = {}
        for name, k in self.replaced[target]:
            by_module.setdefault(name, set()).add(k)
        patched = []
        for name, ks in by_module.items():
            module = self.modules[name]
            module.forward = self._replay_forward(name, ks, module.forward, repeat)
            patched.append(module)
        try:
            yield
        finally:
            for module in patched:
                del module.forward  # back to the class's forward

    def _replay_forward(self, name: str, ks: Set[int], original: Callable, repeat: int):
        counter = [0]

        def forward(*args, **kwargs):
            k = counter[0]
            counter[0] += 1
            if k in ks:
                return _tile(self.outputs[(name, k)], repeat)
            return original(*args, **kwargs)
        return forward
