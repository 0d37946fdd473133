"""Read official YOLOv6 / YOLOv7 ``.pt`` files without their packages and without running their code.

Those releases pickle whole ``nn.Module`` trees whose classes live in the
``yolov6`` package (YOLOv6) or in the top-level ``models`` package (YOLOv7,
``models.yolo.Model``, ``models.common.Conv`` ...). ``torch.load`` would
import those packages; ``weights_only=True`` refuses the file.

Here a :class:`RestrictedUnpickler` (a ``pickle.Unpickler`` subclass, passed
to ``torch.load`` as its ``pickle_module`` so torch keeps handling storages
and persistent ids) resolves globals as follows:

* ``yolov6.*`` and ``models.*`` classes -> generated :class:`StandInModule`
  subclasses with the same name (no code of theirs is imported or run; the
  instance ``__dict__`` is restored as data, as for any ``nn.Module``);
* torch's own weights-only allow-list (tensor rebuilders, storages, dtypes,
  ``torch.Size``, ``OrderedDict`` ...), ``torch.nn`` module classes and
  ``Parameter``;
* plain data: safe builtins, numpy arrays/scalars/dtypes, ``argparse.Namespace``;
* anything else -> :class:`RestrictedUnpicklingError` naming the global.

The weights are then read by walking ``_parameters`` / ``_buffers`` /
``_modules`` of the restored tree (no method of the loaded objects is called).
"""
from __future__ import annotations

import _compat_pickle
import argparse
import pickle
import types
from collections import OrderedDict
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from torch import nn

#: top-level packages whose classes are replaced by stand-ins
STANDIN_PACKAGES = ('yolov6', 'models')

_SAFE_BUILTINS = frozenset({
    'set', 'frozenset', 'list', 'dict', 'tuple', 'slice', 'range', 'complex',
    'bytearray', 'bytes', 'int', 'float', 'bool', 'str', 'object',
})


class RestrictedUnpicklingError(pickle.UnpicklingError):
    """The file references a global that is neither data nor an allowed class."""


class StandInModule(nn.Module):
    """Placeholder for an official model class: holds its state, cannot run."""

    official_path: str = ''

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Refuse: a stand-in only carries weights."""
        raise RuntimeError(f'{self.official_path} is a weights-only stand-in '
                           'restored by detptq; it cannot run')


_STANDIN_CACHE: Dict[Tuple[str, str], type] = {}


def standin_class(module: str, name: str) -> type:
    """The (cached) stand-in class for ``module.name``."""
    key = (module, name)
    if key not in _STANDIN_CACHE:
        _STANDIN_CACHE[key] = type(name, (StandInModule,), {
            '__module__': f'detptq_standin.{module}',
            '__qualname__': name,
            'official_path': f'{module}.{name}',
        })
    return _STANDIN_CACHE[key]


def _torch_allowed_globals() -> Dict[str, Any]:
    """torch's weights-only allow-list as {'module.name': obj}."""
    try:
        from torch import _weights_only_unpickler
        return dict(_weights_only_unpickler._get_allowed_globals())
    except (ImportError, AttributeError):  # private API moved: minimal set
        return {f'torch._utils.{n}': getattr(torch._utils, n)
                for n in ('_rebuild_tensor', '_rebuild_tensor_v2',
                          '_rebuild_parameter',
                          '_rebuild_parameter_with_state')
                if hasattr(torch._utils, n)}


def _numpy_global(module: str, name: str) -> Optional[Any]:
    """numpy reconstructors of arrays, scalars and dtypes (data only)."""
    if module in ('numpy.core.multiarray', 'numpy._core.multiarray') and \
            name in ('_reconstruct', 'scalar'):
        core = getattr(np, '_core', None) or np.core
        return getattr(core.multiarray, name)
    if module == 'numpy' and name in ('ndarray', 'dtype'):
        return getattr(np, name)
    if module == 'numpy.dtypes' and name.endswith('DType'):
        return getattr(getattr(np, 'dtypes', None), name, None)
    return None


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that maps official model classes to stand-ins and refuses code."""

    _torch_globals: Optional[Dict[str, Any]] = None

    def find_class(self, module: str, name: str) -> Any:
        """Resolve a global per the policy in the module docstring."""
        # protocol-2 pickles name Python 2 modules (__builtin__, copy_reg)
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if module.split('.')[0] in STANDIN_PACKAGES:
            return standin_class(module, name)
        if RestrictedUnpickler._torch_globals is None:
            RestrictedUnpickler._torch_globals = _torch_allowed_globals()
        full = f'{module}.{name}'
        if full in RestrictedUnpickler._torch_globals:
            return RestrictedUnpickler._torch_globals[full]
        if module.startswith('torch.nn.modules.'):
            obj = super().find_class(module, name)
            if isinstance(obj, type) and issubclass(obj, nn.Module):
                return obj
        if full == 'torch.nn.parameter.Parameter':
            return nn.Parameter
        if module == 'torch' and isinstance(getattr(torch, name, None),
                                            torch.dtype):
            return getattr(torch, name)
        if module == 'builtins' and name in _SAFE_BUILTINS:
            return super().find_class(module, name)
        if full == 'collections.OrderedDict':
            return OrderedDict
        if full == 'argparse.Namespace':
            return argparse.Namespace
        if full == 'copyreg._reconstructor':  # protocol 0/1 object rebuild
            return super().find_class(module, name)
        np_obj = _numpy_global(module, name)
        if np_obj is not None:
            return np_obj
        raise RestrictedUnpicklingError(
            f'refusing to load global {full!r}: only tensors, plain data, '
            f'torch.nn modules and classes of {STANDIN_PACKAGES} (replaced by '
            'weights-only stand-ins) are allowed')


def _restricted_pickle_module() -> types.ModuleType:
    """A module object torch.load accepts as ``pickle_module``."""
    mod = types.ModuleType('detptq_restricted_pickle')
    mod.Unpickler = RestrictedUnpickler  # type: ignore[attr-defined]

    def load(file: Any, **kwargs: Any) -> Any:
        return RestrictedUnpickler(file, **kwargs).load()

    mod.load = load  # type: ignore[attr-defined]
    mod.__version__ = '1'  # type: ignore[attr-defined]
    return mod


def load_pickled_checkpoint(path: str) -> Any:
    """torch.load ``path`` through :class:`RestrictedUnpickler` (CPU)."""
    return torch.load(path, map_location='cpu', weights_only=False,
                      pickle_module=_restricted_pickle_module())


def official_class_path(obj: Any) -> str:
    """'yolov6.models.yolo.Model' for a stand-in, else the Python class path."""
    if isinstance(obj, StandInModule):
        return obj.official_path
    cls = type(obj)
    return f'{cls.__module__}.{cls.__qualname__}'


def module_tensors(module: nn.Module, prefix: str = ''
                   ) -> 'OrderedDict[str, torch.Tensor]':
    """Flat state dict of a restored module tree, read from its ``__dict__`` only.

    Same keys as ``state_dict()`` (non-persistent buffers skipped, ``None``
    entries skipped), without calling any method of the restored objects.
    """
    out: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
    state = vars(module)
    non_persistent = state.get('_non_persistent_buffers_set', set()) or set()
    for name, param in (state.get('_parameters') or {}).items():
        if param is not None:
            out[prefix + name] = param.detach()
    for name, buf in (state.get('_buffers') or {}).items():
        if buf is not None and name not in non_persistent:
            out[prefix + name] = buf.detach()
    for name, child in (state.get('_modules') or {}).items():
        if child is not None:
            out.update(module_tensors(child, f'{prefix}{name}.'))
    return out


def standin_class_names(module: nn.Module) -> set:
    """Names of the official classes (stand-ins) anywhere in a restored tree."""
    names = set()
    stack = [module]
    while stack:
        m = stack.pop()
        if isinstance(m, StandInModule):
            names.add(type(m).__name__)
        stack.extend(c for c in (vars(m).get('_modules') or {}).values()
                     if c is not None)
    return names


def batchnorm_eps_values(module: nn.Module) -> set:
    """Distinct ``eps`` of the BatchNorm layers in a restored tree."""
    values = set()
    stack = [module]
    while stack:
        m = stack.pop()
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            values.add(float(vars(m).get('eps', 1e-5)))
        stack.extend(c for c in (vars(m).get('_modules') or {}).values()
                     if c is not None)
    return values
