"""Switching a trained model to its deploy (inference) form.

Every module that defines ``switch_to_deploy()`` (RepVGG/QARepVGG blocks,
heads with training-only branches, ...) is converted in place.
"""
from __future__ import annotations

from torch import nn


def switch_to_deploy(model: nn.Module) -> nn.Module:
    """Call ``switch_to_deploy()`` on every sub-module that has it; return model.

    The root itself is skipped (a detector's own ``switch_to_deploy`` calls
    this function). The module list is taken before converting, so modules
    removed by a parent's conversion are harmless to visit.
    """
    for module in list(model.modules()):
        if module is model:
            continue
        fn = getattr(module, 'switch_to_deploy', None)
        if callable(fn):
            fn()
    return model


def is_deployed(model: nn.Module) -> bool:
    """True when no sub-module still holds re-parameterisable branches."""
    return not any(getattr(m, 'deploy', True) is False
                   for m in model.modules())
