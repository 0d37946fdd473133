"""Atomic file writers: a reader (or a resumed run) never sees half a file.

Every file goes to a temporary file in the same folder first, is flushed and
fsync'ed, then ``os.replace``d over the target (atomic on POSIX and Windows
when both are on one file system). A kill at any moment leaves either the old
file or the new one, plus at worst a stray ``.<name>.*.tmp`` next to it.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import IO, Any, Iterator


def _fsync_dir(folder: str) -> None:
    """Make the rename itself durable (best effort: not every OS opens folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str, mode: str = 'w') -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success it replaces ``path`` atomically."""
    if mode not in ('w', 'wb'):
        raise ValueError(f'atomic_open: mode must be "w" or "wb", got {mode!r}')
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f'.{os.path.basename(path)}.', suffix='.tmp')
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


def write_json_atomic(obj: Any, path: str, **dump_kwargs: Any) -> None:
    """``json.dump(obj, ...)`` into ``path`` atomically (``dump_kwargs`` go to json.dump)."""
    with atomic_open(path, 'w') as f:
        json.dump(obj, f, **dump_kwargs)


def torch_save_atomic(obj: Any, path: str) -> None:
    """``torch.save(obj, path)`` atomically."""
    import torch
    with atomic_open(path, 'wb') as f:
        torch.save(obj, f)
