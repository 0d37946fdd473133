"""Which re-parameterisable block a checkpoint holds, read from the class names in its pickle.

QARepVGG v1 (``QARepVGGBlock``) and v2 (``QARepVGGBlockV2``, an extra
weight-free 3x3 average-pool branch) have identical state-dict keys, so the
keys alone cannot tell them apart, yet their outputs differ by hundreds of
pixels. Official releases are pickled whole models: the restricted unpickler
sees each module's class name, which names the block exactly.
"""
from __future__ import annotations

from typing import Iterable, Optional, Set

from torch import nn

from .read_source import ConversionError

#: official block class name -> the detptq class that reproduces it
OFFICIAL_TO_OURS = {
    'RepVGGBlock': 'RepVGGBlock',            # YOLOv6
    'QARepVGGBlock': 'QARepVGGBlock',        # YOLOv6 training_mode='qarepvgg'
    'QARepVGGBlockV2': 'QARepVGGBlockV2',    # YOLOv6 training_mode='qarepvggv2'
    'RepConv': 'RepVGGBlock',                # YOLOv7 (SiLU RepVGG block)
}
OUR_REP_BLOCKS = frozenset(OFFICIAL_TO_OURS.values())


def file_block_types(source_classes: Optional[Iterable[str]]) -> Optional[Set[str]]:
    """detptq block classes the file's official classes map to; None if the file names none."""
    if source_classes is None:
        return None  # a plain state dict: no class names at all
    return {OFFICIAL_TO_OURS[c] for c in source_classes if c in OFFICIAL_TO_OURS}


def model_block_types(model: nn.Module) -> Set[str]:
    """Re-parameterisable block classes a built detptq model contains."""
    return {type(m).__name__ for m in model.modules()
            if type(m).__name__ in OUR_REP_BLOCKS}


def check_block_types(src_path: str, source_classes: Optional[Iterable[str]],
                      model: nn.Module, config: str,
                      suggestion: Optional[str]) -> None:
    """Raise when the file's block classes contradict the blocks ``config`` builds."""
    expected = file_block_types(source_classes)
    if not expected:
        return
    built = model_block_types(model)
    if built == expected:
        return
    hint = f'; use {suggestion}' if suggestion else ''
    raise ConversionError(
        f'{src_path!r} holds {"/".join(sorted(expected))} blocks (class names '
        f'in the pickle) but {config!r} builds '
        f'{"/".join(sorted(built)) or "no re-parameterisable"} blocks{hint}.')
