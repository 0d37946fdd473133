"""Replay, per calibration batch, the module calls that finished before a unit (cache fill speed).

Filling a unit's data cache runs the FP and the quantized model up to the
unit on every calibration batch. Without this, unit i re-runs the whole
prefix of the network (units 0..i-1) in both models: the cost of the fill
grows with depth and dominated short reconstruction schedules.

``PrefixCache`` keeps, per batch, the outputs of the outermost module calls
that finished before the current unit started and replays them in the next
unit's forward, so each forward computes only what is new since the last
unit. Replayed values are the exact tensors an earlier forward of the same
batch produced, so the cached unit data are bit-identical to a full forward.

Validity: the FP model never changes, so any finished call of it may be
replayed. In the quantized model, reconstruction changes unit i after its
data are cached, so a call is recorded only if it ended before every call
of units i, i+1, ... (``safe_end``); such a call contains no unit that is
still to be changed. Recorded outputs must not be modified in place by the
model (detptq's models never do); call ids count module calls as
``forward_replay.CallTree`` does, descendants of a replayed call included.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from torch import nn

from detptq.utils.forward_replay import CallId, CallTree
from .unit_io import detach_tree
from .partition import unit_members


def unit_start_times(tree: CallTree, member_names: Sequence[Sequence[str]]) -> List[float]:
    """Per unit (given by its member module names): the start of its earliest call in ``tree``."""
    starts = []
    for names in member_names:
        prefixes = tuple(n + '.' for n in names)
        times = [c.start for (name, _), c in tree.calls.items()
                 if name in names or name.startswith(prefixes)]
        starts.append(min(times) if times else float('inf'))
    return starts


class PrefixCache:
    """Recorded outputs of finished module calls of one model, per calibration batch."""

    def __init__(self, model: nn.Module, tree: CallTree) -> None:
        self.model = model
        self.tree = tree
        self.modules = dict(model.named_modules())
        self.children: Dict[Optional[CallId], List[CallId]] = {}
        for cid, call in tree.calls.items():
            self.children.setdefault(call.parent, []).append(cid)
        self.store: Dict[int, Dict[CallId, Any]] = {}

    def _descendants(self, cid: CallId) -> Iterator[CallId]:
        for child in self.children.get(cid, ()):
            yield child
            yield from self._descendants(child)

    def discard(self) -> None:
        """Forget every recording."""
        self.store.clear()

    @contextmanager
    def session(self, batch_index: int, replay_before: float, record_before: float
                ) -> Iterator[None]:
        """One forward of batch ``batch_index``: replay recorded calls that ended before
        ``replay_before``; record calls that end before ``record_before`` (tree clock)."""
        calls = self.tree.calls
        recorded = self.store.setdefault(batch_index, {})
        # keep what the next units can still use; replay the outermost of those
        for cid in [c for c in recorded if calls[c].end >= record_before]:
            del recorded[cid]
        replay = {cid for cid in recorded if calls[cid].end < replay_before}
        counts: Dict[str, int] = {}
        stack: List[CallId] = []
        handles, patched = [], []

        def pre(name: str):
            def hook(module, args):
                cid = (name, counts.get(name, 0))
                counts[name] = cid[1] + 1
                stack.append(cid)
            return hook

        def post(name: str):
            def hook(module, args, output):
                cid = stack.pop() if stack else None
                if cid is None or cid not in calls or calls[cid].end >= record_before:
                    return None
                if cid not in recorded:
                    recorded[cid] = detach_tree(output)
                for sub in self._descendants(cid):  # the parent's record covers them
                    recorded.pop(sub, None)
                return None
            return hook

        def replaying(name: str, original):
            def forward(*args, **kwargs):
                cid = stack[-1] if stack else None
                if cid in replay:
                    for sub in self._descendants(cid):  # keep the call counts aligned
                        counts[sub[0]] = counts.get(sub[0], 0) + 1
                    return recorded[cid]
                return original(*args, **kwargs)
            return forward

        for name, module in self.modules.items():
            if name:
                handles.append(module.register_forward_pre_hook(pre(name)))
                handles.append(module.register_forward_hook(post(name)))
        for name in {cid[0] for cid in replay}:
            module = self.modules[name]
            module.forward = replaying(name, module.forward)
            patched.append(module)
        try:
            yield
        finally:
            for h in handles:
                h.remove()
            for module in patched:
                del module.forward


class UnitPrefixReplay:
    """The FP and quantized models' ``PrefixCache`` for units reconstructed in execution order."""

    def __init__(self, model_fp: nn.Module, model_q: nn.Module,
                 units: Sequence[Tuple[str, nn.Module]], order: Sequence[int], run_fp, run_q
                 ) -> None:
        """``run_fp`` / ``run_q``: a full forward of each model (to build its call tree)."""
        self.fp = PrefixCache(model_fp, CallTree(model_fp, run_fp))
        self.q = PrefixCache(model_q, CallTree(model_q, run_q))
        names = [unit_members(*units[idx]) for idx in order]
        starts = {id(c): unit_start_times(c.tree, names) for c in (self.fp, self.q)}
        self._start = {idx: (starts[id(self.fp)][k], starts[id(self.q)][k])
                       for k, idx in enumerate(order)}
        # quantized model: a record is safe while no later unit has started
        q_starts = starts[id(self.q)]
        suffix_min, running = {}, float('inf')
        for k in range(len(order) - 1, -1, -1):
            running = min(running, q_starts[k])
            suffix_min[order[k]] = running
        self._q_safe_end = suffix_min

    @contextmanager
    def fp_session(self, unit_index: int, batch_index: int) -> Iterator[None]:
        """FP forward of a batch for unit ``unit_index``: every finished call stays valid."""
        start = self._start[unit_index][0]
        with self.fp.session(batch_index, replay_before=start, record_before=float('inf')):
            yield

    @contextmanager
    def q_session(self, unit_index: int, batch_index: int) -> Iterator[None]:
        """Quantized forward for unit ``unit_index``: only calls before all units still to change."""
        safe = self._q_safe_end[unit_index]
        with self.q.session(batch_index, replay_before=safe, record_before=safe):
            yield

    def discard(self) -> None:
        """Free all recordings."""
        self.fp.discard()
        self.q.discard()
