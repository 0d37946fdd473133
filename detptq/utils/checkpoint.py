"""The one place where detptq reads and writes checkpoint files.

Trust rule: NO file is ever fully unpickled, whatever folder it sits in.
torch >= 2.6 loads with ``weights_only=True``, which refuses any pickled
object that is not a tensor or a plain Python container; we keep that on and
allow-list exactly the classes that mmengine's own Runner checkpoints contain
(its ``HistoryBuffer`` in the MessageHub, ``ConfigDict``, numpy arrays and
scalars), so ``tools/train.py --resume`` works without trusting anything.
Anything else is refused with an error that names the file and the class, and
says how to convert the file (official releases go through the converter's
restricted unpickler). Our own files hold plain tensors and Python scalars only.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from detptq.utils.io import torch_save_atomic


class CheckpointError(RuntimeError):
    """A checkpoint file that is missing, unreadable, unsafe or does not fit the model."""


def _allowed_globals() -> list:
    """Classes an mmengine/detptq checkpoint may contain besides tensors (nothing runs code)."""
    allowed: list = [np.ndarray, np.dtype, OrderedDict]
    reconstruct = getattr(getattr(np, '_core', np.core), 'multiarray')
    allowed.append(reconstruct._reconstruct)
    allowed.append(getattr(reconstruct, 'scalar'))
    # numpy >= 1.25 pickles dtypes as classes of numpy.dtypes
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        allowed += [getattr(dtypes, n) for n in dir(dtypes)
                    if n.endswith('DType')]
    try:  # a Runner checkpoint's MessageHub and config (mmengine is optional here)
        from mmengine.config import ConfigDict
        from mmengine.logging import HistoryBuffer
        allowed += [ConfigDict, HistoryBuffer, (_history_buffer_method, 'builtins.getattr')]
    except ImportError:
        pass
    return allowed


def _history_buffer_method(owner: Any, name: str) -> Any:
    """The only ``getattr`` a checkpoint may pickle: a HistoryBuffer statistics method.

    A MessageHub's HistoryBuffer keeps ``{'mean': HistoryBuffer.mean, ...}``,
    which pickle stores as ``getattr(HistoryBuffer, 'mean')``; any other
    getattr in a file is refused.
    """
    from mmengine.logging import HistoryBuffer
    if owner is HistoryBuffer and name in ('min', 'max', 'current', 'mean'):
        return getattr(owner, name)
    raise pickle.UnpicklingError(
        f'Unsupported global: GLOBAL getattr({getattr(owner, "__name__", type(owner).__name__)}, '
        f'{name!r}) is not a HistoryBuffer statistics method')


def _unsupported_global(err: Exception) -> str:
    """The 'Unsupported global: GLOBAL x' sentence of torch's long message."""
    for line in str(err).splitlines():
        if 'GLOBAL' in line:
            return line.strip().split('. Please')[0]
    return str(err).splitlines()[0]


def _first_line(err: Exception) -> str:
    """The informative line of an error (torch's weights-only reason, else the first line)."""
    text = str(err).strip()
    if 'WeightsUnpickler error:' in text:
        text = text.split('WeightsUnpickler error:', 1)[1].strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def load_checkpoint_file(path: str, map_location: Any = 'cpu') -> Any:
    """Load a checkpoint with weights_only=True plus mmengine's own classes.

    Raises CheckpointError naming the file when it is missing, not a PyTorch
    file (truncated, random bytes, another format) or holds unsafe objects.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f'checkpoint file not found: {path!r}')
    try:
        with torch.serialization.safe_globals(_allowed_globals()):
            return torch.load(path, map_location=map_location,
                              weights_only=True)
    except pickle.UnpicklingError as err:
        if 'GLOBAL' not in str(err):  # a damaged stream or a pickle torch never writes
            raise CheckpointError(
                f'{path!r} is not a readable PyTorch checkpoint (truncated, corrupt, or a '
                f'pickle of something else; torch said: {_first_line(err)})') from err
        raise CheckpointError(
            f'{path!r} holds pickled objects that are not tensors, so it is '
            'not loaded (it could run arbitrary code). If it is an official '
            'YOLOv6/YOLOv7 release or an mmyolo file, convert it first: '
            f'`python tools/convert_ckpt.py {path} OUT.pth`. '
            f'torch said: {_unsupported_global(err)}') from err
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile,
            UnicodeDecodeError, AttributeError, IndexError, KeyError) as err:
        raise CheckpointError(
            f'{path!r} is not a readable PyTorch checkpoint (truncated, corrupt or another '
            f'format; {os.path.getsize(path)} bytes): {_first_line(err)}') from err


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
    torch_save_atomic(_to_plain(obj), path)  # an interrupted save never leaves half a file


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
