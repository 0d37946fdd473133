"""Memory-bounded cache of unit inputs/outputs over the calibration set.

``UnitDataCache`` stores, per recorded unit call, named fields (for example
``q_in`` = the unit's arguments in the quantized model, ``fp_out`` = its FP
output). A field may be any nesting of tuples/lists/dicts of tensors that
share a leading batch dimension. Calls whose tensors have different shapes
(e.g. a head shared by several pyramid levels) land in separate groups; a
sampled batch always comes from one group.

Where a chunk goes, in order, as long as it fits (``UnitDataCache``):

1. the accelerator (``device``, e.g. the model's CUDA device) up to
   ``device_max_bytes`` (default: half of the device's free memory when the
   cache is created), so training batches need no host-to-device copy;
2. host RAM up to ``max_bytes``;
3. a torch file in a temporary directory (under ``spill_dir``), read back
   memory-mapped, so sampling random rows only touches the pages it needs.
   These are scratch files, not checkpoints: they are deleted by ``close()``.

On CPU (``device`` None or ``cpu``) tier 1 is tier 2. Every tier returns the
same rows: only where they are read from changes. Sampled indices are drawn
on the generator's device (``sample``) and moved to each chunk's device.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Dict, Iterator, List, Optional

import torch
from torch.utils import _pytree as pytree

from detptq.utils.devices import DeviceLike, generator_device

DEFAULT_MAX_BYTES = 2 * 1024 ** 3
#: share of an accelerator's free memory the cache may take when no budget is given
DEFAULT_DEVICE_SHARE = 0.5


def _is_mapped(t: torch.Tensor) -> bool:
    """True for a tensor read back memory-mapped from a spill file."""
    return getattr(t, '_detptq_mapped', False)


def default_device_budget(device: torch.device) -> int:
    """Bytes the cache may keep on ``device``: a share of its free memory (0 for CPU)."""
    if device.type == 'cuda':
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * DEFAULT_DEVICE_SHARE)
    return 0  # CPU is the host tier; other accelerators need an explicit budget


def _cat_rows(parts: List[torch.Tensor]) -> torch.Tensor:
    """Concatenate row blocks read from chunks that may sit on different devices.

    Mixed devices (accelerator and host chunks) meet on the accelerator, where
    the batch is used.
    """
    if len(parts) == 1:
        return parts[0]
    devices = {t.device for t in parts}
    if len(devices) > 1:
        target = next((d for d in devices if d.type != 'cpu'), parts[0].device)
        parts = [t.to(target) for t in parts]
    return torch.cat(parts)


class _Group:
    """Chunks whose fields have the same structure and per-row shapes."""

    def __init__(self, specs: Dict[str, Any]) -> None:
        self.specs = specs
        self.chunks: List[Dict[str, List[torch.Tensor]]] = []
        self.offsets: List[int] = [0]  # cumulative row counts

    @property
    def rows(self) -> int:
        return self.offsets[-1]

    @property
    def device(self) -> torch.device:
        """Device of the first chunk (where index tensors for it are made)."""
        return next(iter(self.chunks[0].values()))[0].device

    def consolidate(self) -> None:
        """Merge the chunks into one when all are in RAM (sampling then indexes one tensor).

        Leaf by leaf, so the extra memory is one leaf's worth at a time; the
        rows and their order are unchanged.
        """
        leaves = [t for c in self.chunks for ts in c.values() for t in ts]
        if len(self.chunks) < 2 or any(_is_mapped(t) for t in leaves) \
                or len({t.device for t in leaves}) > 1:
            return
        merged: Dict[str, List[torch.Tensor]] = {}
        for field in self.specs:
            merged[field] = []
            for leaf in range(len(self.chunks[0][field])):
                merged[field].append(torch.cat([c[field][leaf] for c in self.chunks]))
                for c in self.chunks:
                    c[field][leaf] = None  # free each part as soon as it is copied
        self.chunks = [merged]
        self.offsets = [0, self.offsets[-1]]

    def gather(self, rows: torch.Tensor) -> Dict[str, Any]:
        """Rows (global indices in this group) of every field, re-nested."""
        rows, _ = rows.sort()  # sorted reads are kinder to memory-mapped files
        if len(self.chunks) == 1:
            chunk = self.chunks[0]
            # index_select copies the same rows as t[rows], several times faster on CPU
            return {field: pytree.tree_unflatten(
                [t.index_select(0, rows.to(t.device)) for t in chunk[field]], spec)
                for field, spec in self.specs.items()}
        offsets = torch.tensor(self.offsets, device=rows.device)
        chunk_ids = torch.bucketize(rows, offsets[1:], right=True)
        # which chunks and which of their rows: read back once, shared by every leaf
        local_rows = [(cid, rows[chunk_ids == cid] - self.offsets[cid])
                      for cid in chunk_ids.unique().tolist()]
        out: Dict[str, Any] = {}
        for field, spec in self.specs.items():
            n_leaves = len(self.chunks[0][field])
            leaves = []
            for leaf in range(n_leaves):
                parts = []
                for cid, local in local_rows:
                    stored = self.chunks[cid][field][leaf]
                    parts.append(stored[local.to(stored.device)])
                leaves.append(_cat_rows(parts))
            out[field] = pytree.tree_unflatten(leaves, spec)
        return out


class UnitDataCache:
    """Named per-call tensors over the calibration set: accelerator, then host RAM, then disk.

    Args:
        max_bytes: host RAM budget.
        spill_dir: parent of the temporary directory for spilled chunks.
        device: accelerator to keep chunks on first (None or CPU: host RAM only).
        device_max_bytes: budget on ``device``; None: ``default_device_budget``.
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES,
                 spill_dir: Optional[str] = None, device: DeviceLike = None,
                 device_max_bytes: Optional[int] = None) -> None:
        self.max_bytes = int(max_bytes)
        self.spill_dir = spill_dir
        self.device = None if device is None else torch.device(device)
        if self.device is None or self.device.type == 'cpu':
            self.device, self.device_max_bytes = None, 0
        elif device_max_bytes is None:
            self.device_max_bytes = default_device_budget(self.device)
        else:
            self.device_max_bytes = int(device_max_bytes)
        self._tmp_dir: Optional[str] = None
        self._groups: Dict[str, _Group] = {}
        self.bytes_on_device = 0  # on the accelerator (tier 1)
        self.bytes_in_memory = 0  # host RAM (tier 2)
        self.bytes_on_disk = 0
        self._n_files = 0

    # ----------------------------------------------------------------- adding
    def add(self, **fields: Any) -> None:
        """Add one call's fields (pytrees of tensors with a common batch size)."""
        flat, specs, rows = {}, {}, None
        for name, value in fields.items():
            leaves, spec = pytree.tree_flatten(value)
            if not leaves or not all(isinstance(t, torch.Tensor) for t in leaves):
                raise TypeError(f'field {name!r} must hold tensors only')
            for t in leaves:
                if rows is None:
                    rows = t.shape[0]
                if t.dim() == 0 or t.shape[0] != rows:
                    raise ValueError(f'field {name!r}: all tensors need batch size {rows}')
            flat[name] = [t.detach() for t in leaves]
            specs[name] = spec
        key = repr([(n, str(specs[n]), [tuple(t.shape[1:]) + (t.dtype,) for t in flat[n]])
                    for n in sorted(flat)])
        group = self._groups.setdefault(key, _Group(specs))
        group.chunks.append(self._store(flat))
        group.offsets.append(group.offsets[-1] + rows)

    def _store(self, flat: Dict[str, List[torch.Tensor]]) -> Dict[str, List[torch.Tensor]]:
        nbytes = sum(t.numel() * t.element_size() for ts in flat.values() for t in ts)
        if self.device is not None and self.bytes_on_device + nbytes <= self.device_max_bytes:
            self.bytes_on_device += nbytes
            return {k: [t.to(self.device, copy=True) for t in ts] for k, ts in flat.items()}
        if self.bytes_in_memory + nbytes <= self.max_bytes:
            self.bytes_in_memory += nbytes
            # clone: a view would keep a larger storage (the whole feature map) alive;
            # .to('cpu') of an accelerator tensor is already a fresh copy
            return {k: [t.clone() if t.device.type == 'cpu' else t.to('cpu') for t in ts]
                    for k, ts in flat.items()}
        if self._tmp_dir is None:
            if self.spill_dir:
                os.makedirs(self.spill_dir, exist_ok=True)
            self._tmp_dir = tempfile.mkdtemp(prefix='unit_cache_', dir=self.spill_dir)
        path = os.path.join(self._tmp_dir, f'chunk_{self._n_files:05d}.pt')
        self._n_files += 1
        torch.save({k: [t.contiguous().cpu() for t in ts] for k, ts in flat.items()}, path)
        self.bytes_on_disk += nbytes
        # scratch file written above by this process: mmap keeps it out of RAM
        chunk = torch.load(path, mmap=True, weights_only=True)
        for ts in chunk.values():
            for t in ts:
                t._detptq_mapped = True
        return chunk

    def consolidate(self) -> None:
        """Merge each group's in-RAM chunks into one tensor per leaf (faster sampling)."""
        for group in self._groups.values():
            group.consolidate()

    # --------------------------------------------------------------- reading
    def __len__(self) -> int:
        return sum(g.rows for g in self._groups.values())

    @property
    def spilled(self) -> bool:
        """True when part of the cache lives on disk."""
        return self.bytes_on_disk > 0

    def sample(self, batch_size: int, generator: Optional[torch.Generator] = None
               ) -> Dict[str, Any]:
        """A random batch (rows without replacement) from one group chosen by size.

        Drawn on the generator's device (CPU for None); with several groups the
        chosen group is read back to the host (one sync per batch).
        """
        if not self._groups:
            raise RuntimeError('the cache is empty')
        device = generator_device(generator)
        groups = list(self._groups.values())
        if len(groups) == 1:
            group = groups[0]
        else:
            weights = torch.tensor([g.rows for g in groups], dtype=torch.float, device=device)
            group = groups[int(torch.multinomial(weights, 1, generator=generator))]
        rows = torch.randperm(group.rows, generator=generator, device=device)[:batch_size]
        return group.gather(rows)

    def iter_batches(self, batch_size: int, limit: Optional[int] = None
                     ) -> Iterator[Dict[str, Any]]:
        """Every row in order (up to ``limit`` rows per group), ``batch_size`` rows at a time."""
        for group in self._groups.values():
            total = group.rows if limit is None else min(group.rows, limit)
            for start in range(0, total, batch_size):
                yield group.gather(torch.arange(start, min(start + batch_size, total),
                                                device=group.device))

    # -------------------------------------------------------------- clean-up
    def close(self) -> None:
        """Drop all data and delete the spill files."""
        self._groups.clear()
        self.bytes_on_device = self.bytes_in_memory = self.bytes_on_disk = 0
        if self._tmp_dir is not None:
            shutil.rmtree(self._tmp_dir, ignore_errors=True)
            self._tmp_dir = None

    def __enter__(self) -> 'UnitDataCache':
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing left to clean safely
            pass
