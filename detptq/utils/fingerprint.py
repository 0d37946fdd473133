"""Fingerprints of everything that determines a reusable result (unit states, p search, FP metrics).

A :class:`Fingerprint` is a set of named parts (``quant_cfg``, ``checkpoint``,
``calib_images``, ...), each the sha256 of a canonical form: configs as JSON
with sorted keys, files by their bytes, tensors by their bytes. A stored
result is reused only when every part matches; otherwise ``changes`` names the
parts that differ, so the log can say *why* it is recomputed.

File digests are cached per process by (path, size, mtime), so a large
checkpoint is read once however many artefacts use it.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

_FILE_DIGESTS: Dict[Tuple[str, int, int], str] = {}


def _plain(obj: Any) -> Any:
    """Config objects (mmengine ConfigDict, tuples, dataclasses) as plain JSON values."""
    if hasattr(obj, 'to_dict'):
        obj = obj.to_dict()
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def canonical_json(obj: Any) -> str:
    """One text per value: sorted keys, no spaces, unknown objects by ``str``."""
    return json.dumps(_plain(obj), sort_keys=True, separators=(',', ':'), default=str)


def digest_of(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj``."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def file_digest(path: str) -> str:
    """sha256 of a file's bytes (cached within the process by path, size and mtime)."""
    real = os.path.realpath(path)
    st = os.stat(real)
    key = (real, st.st_size, st.st_mtime_ns)
    if key not in _FILE_DIGESTS:
        digest = hashlib.sha256()
        with open(real, 'rb') as f:
            for chunk in iter(lambda: f.read(1 << 20), b''):
                digest.update(chunk)
        _FILE_DIGESTS[key] = digest.hexdigest()
    return _FILE_DIGESTS[key]


def tensors_digest(tensors: Mapping[str, Any]) -> str:
    """sha256 of a state dict's names, dtypes, shapes and bytes."""
    import torch
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        if hasattr(t, 'detach'):
            t = t.detach().cpu().contiguous()
            digest.update(f'{name}|{t.dtype}|{tuple(t.shape)}|'.encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            digest.update(f'{name}|{canonical_json(t)}|'.encode())
    return digest.hexdigest()


class Fingerprint:
    """Named digests of the inputs of one result; equal fingerprints mean a reusable result."""

    def __init__(self, parts: Optional[Mapping[str, str]] = None) -> None:
        self.parts: Dict[str, str] = dict(parts or {})

    def with_parts(self, **parts: Any) -> 'Fingerprint':
        """A copy with more parts; values that are not digests yet are hashed."""
        new = dict(self.parts)
        for name, value in parts.items():
            new[name] = value if _is_digest(value) else digest_of(value)
        return Fingerprint(new)

    def without(self, names: Iterable[str]) -> 'Fingerprint':
        """A copy without the named parts (for results they do not influence)."""
        drop = set(names)
        return Fingerprint({k: v for k, v in self.parts.items() if k not in drop})

    @property
    def digest(self) -> str:
        """One digest over all parts."""
        return digest_of(self.parts)

    def changes(self, stored: Optional[Mapping[str, str]]) -> List[str]:
        """Names of the parts that differ from ``stored`` (a saved ``parts`` dict)."""
        stored = stored or {}
        names = sorted(set(self.parts) | set(stored))
        return [n for n in names if self.parts.get(n) != stored.get(n)]

    def explain(self, stored: Optional[Mapping[str, str]]) -> str:
        """'quant_cfg, checkpoint changed' (or why the comparison failed)."""
        if not stored:
            return 'it has no fingerprint (written by an older detptq)'
        changed = self.changes(stored)
        return (', '.join(changed) + ' changed') if changed else 'nothing changed'

    def matches(self, stored: Optional[Mapping[str, str]]) -> bool:
        """True when ``stored`` has exactly these parts."""
        return bool(stored) and not self.changes(stored)


def _is_digest(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(
        c in '0123456789abcdef' for c in value)
