"""Give freed heap memory back to the operating system (glibc ``malloc_trim``).

PyTorch's CPU tensors come from ``malloc``. glibc raises its mmap threshold
after the first large free, so later tensors of tens of MB are carved from
the heap, and small long-lived allocations between them keep the freed
space from being returned: the DetPTQ p search's Lp scale search alone left
the demo run at ~3.5 GB resident while it used ~0.5 GB. ``malloc_trim(0)``
releases every free page, also in the middle of the heap. It only changes
where memory lives, never a value; elsewhere than glibc it does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
from typing import Optional

_libc: Optional[ctypes.CDLL] = None
_looked_up = False


def _malloc_trim():
    global _libc, _looked_up
    if not _looked_up:
        _looked_up = True
        name = ctypes.util.find_library('c')
        try:
            lib = ctypes.CDLL(name) if name else None
            _libc = lib if lib is not None and hasattr(lib, 'malloc_trim') else None
        except OSError:  # no C library to load: nothing to trim
            _libc = None
    return None if _libc is None else _libc.malloc_trim


def release_free_memory() -> bool:
    """Return free heap pages to the OS; True if glibc did it (cheap: call between phases)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
