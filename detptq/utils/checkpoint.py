"""The one place where detptq reads and writes checkpoint files.

torch >= 2.6 loads with ``weights_only=True`` by default, which refuses any
pickled object that is not a tensor or a plain Python container. Rather than
switching that safety off, we keep it on and allow-list exactly the classes
that mmengine's own Runner checkpoints contain (its ``HistoryBuffer`` and
``ConfigDict`` plus numpy arrays and scalars). Anything else is refused with an
error that names the file and the class, and says how to convert the file.
Our own files are written with plain tensors and Python scalars only.
"""
from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from typing import Any

import numpy as np
import torch


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read safely or does not exist."""


def _allowed_globals() -> list:
    """Classes a trusted mmengine/detptq checkpoint may contain besides tensors."""
    allowed: list = [np.ndarray, np.dtype, OrderedDict]
    reconstruct = getattr(getattr(np, '_core', np.core), 'multiarray')
    allowed.append(reconstruct._reconstruct)
    allowed.append(getattr(reconstruct, 'scalar'))
    # numpy >= 1.25 pickles dtypes as classes of numpy.dtypes
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        allowed += [getattr(dtypes, n) for n in dir(dtypes)
                    if n.endswith('DType')]
    try:
        from mmengine.config import ConfigDict
        allowed.append(ConfigDict)
    except ImportError:  # mmengine is optional for plain state dicts
        pass
    return allowed


_TRUSTED_DIRS: set = set()


def trust_directory(path: str) -> None:
    """Allow full unpickling of checkpoints below ``path`` (a run's own work dir)."""
    _TRUSTED_DIRS.add(os.path.realpath(path))


def _is_trusted(path: str) -> bool:
    real = os.path.realpath(path)
    return any(real.startswith(d + os.sep) for d in _TRUSTED_DIRS)


def _unsupported_global(err: Exception) -> str:
    """The 'Unsupported global: GLOBAL x' sentence of torch's long message."""
    for line in str(err).splitlines():
        if 'GLOBAL' in line:
            return line.strip().split('. Please')[0]
    return str(err).splitlines()[0]


def load_checkpoint_file(path: str, map_location: Any = 'cpu') -> Any:
    """Load a checkpoint with weights_only=True plus mmengine's own classes."""
    if not os.path.isfile(path):
        raise CheckpointError(f'checkpoint file not found: {path!r}')
    if _is_trusted(path):
        return torch.load(path, map_location=map_location, weights_only=False)
    try:
        with torch.serialization.safe_globals(_allowed_globals()):
            return torch.load(path, map_location=map_location,
                              weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f'{path!r} holds pickled objects that are not tensors, so it is '
            'not loaded (it could run arbitrary code). If it is an official '
            'YOLOv6/YOLOv7 release or an mmyolo file, convert it first: '
            f'`python tools/convert_ckpt.py {path} OUT.pth`. '
            f'torch said: {_unsupported_global(err)}') from err


def _to_plain(obj: Any) -> Any:
    """Recursively turn numpy scalars/arrays into Python scalars/tensors."""
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return type(obj)((k, _to_plain(v)) for k, v in obj.items()) \
            if isinstance(obj, OrderedDict) else {k: _to_plain(v)
                                                  for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_plain(v) for v in obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise CheckpointError(
        f'cannot save object of type {type(obj).__name__} in a plain '
        'checkpoint: only tensors, Python scalars, strings and containers')


def save_checkpoint_file(obj: Any, path: str) -> None:
    """Save tensors and Python scalars only, so any torch loads it with weights_only."""
    plain = _to_plain(obj)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f'{path}.tmp'
    torch.save(plain, tmp)
    os.replace(tmp, path)  # atomic: an interrupted save never leaves half a file


def install_mmengine_loader() -> None:
    """Route mmengine's local-file checkpoint loading through load_checkpoint_file."""
    from mmengine.runner.checkpoint import CheckpointLoader

    @CheckpointLoader.register_scheme(prefixes='', force=True)
    def _load_local(filename: str, map_location: Any = None) -> Any:
        return load_checkpoint_file(os.path.expanduser(filename),
                                    map_location=map_location)


def state_dict_of(checkpoint: Any) -> dict:
    """The model state dict inside a loaded checkpoint (mmengine or bare)."""
    if isinstance(checkpoint, dict) and isinstance(
            checkpoint.get('state_dict'), dict):
        return checkpoint['state_dict']
    if isinstance(checkpoint, dict):
        return checkpoint
    raise CheckpointError(
        f'expected a dict checkpoint, got {type(checkpoint).__name__}')


def is_deploy_checkpoint(path: str) -> bool:
    """True when the file holds fused (deploy-form) RepVGG weights."""
    return any('rbr_reparam' in k
               for k in state_dict_of(load_checkpoint_file(path)))
