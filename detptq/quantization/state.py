"""Quantizer state in one place: switch quantizers off, let them observe, keep their grids.

Calibration, the DetPTQ p search, sensitivity analysis and export all
temporarily change the ``enabled`` / ``observing`` flags or the scales of a
model's quantizers and must put them back, also when a forward fails::

    with disabled(model) as flags:        # float model; flags = {quantizer: saved flag}
        ...
    with observing(model) as observed:    # float model, input quantizers feed their calibrators
        ...
    with saved_qparams(model):            # scales / zero points restored on exit
        ...
    with only(model, [layer], flags):     # just that layer quantized (at its saved flags)
        ...
"""
from contextlib import contextmanager
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

from torch import nn

from .quant_modules import QUANT_MODULES, iter_quantizers
from .quantizer import UniformQuantizer


def is_active(quantizer: nn.Module) -> bool:
    """True when ``quantizer`` changes its input: enabled and not a pass-through (bits >= 16).

    A quantizer without an ``is_pass_through`` attribute counts as quantizing
    when enabled: treating it as float would let export drop its Q/DQ silently.
    """
    return bool(getattr(quantizer, 'enabled', False)) and not getattr(
        quantizer, 'is_pass_through', False)


@contextmanager
def disabled(model: nn.Module) -> Iterator[Dict[nn.Module, bool]]:
    """Every quantizer of ``model`` off inside the block; yields the saved flags, restores them after."""
    flags = {q: q.enabled for _, q in iter_quantizers(model)}
    for quantizer in flags:
        quantizer.enabled = False
    try:
        yield flags
    finally:
        for quantizer, flag in flags.items():
            quantizer.enabled = flag


#: the name the package exported before ``state`` existed
quantization_disabled = disabled


@contextmanager
def observing(model: nn.Module) -> Iterator[List[Tuple[str, nn.Module]]]:
    """Float model whose input quantizers feed fresh calibrators; yields ``[(layer name, quantizer)]``.

    Pass-through (>= 16 bit) quantizers do not observe. Flags are restored on exit.
    """
    observed = [(n, m.input_quantizer) for n, m in model.named_modules()
                if isinstance(m, QUANT_MODULES) and hasattr(m.input_quantizer, 'calibrator')]
    with disabled(model):
        for _, quantizer in observed:
            quantizer.calibrator.reset()
            quantizer.observing = not quantizer.is_pass_through
        try:
            yield observed
        finally:
            for _, quantizer in observed:
                quantizer.observing = False


@contextmanager
def saved_qparams(model: nn.Module) -> Iterator[None]:
    """Every uniform quantizer's scale and zero point are put back on exit."""
    grids = [(q, q.scale.detach().clone(), q.zero_point.clone())
             for _, q in iter_quantizers(model) if isinstance(q, UniformQuantizer)]
    try:
        yield
    finally:
        for quantizer, scale, zero_point in grids:
            quantizer.set_params(scale, zero_point)


@contextmanager
def layers_switched(layers: Iterable[nn.Module], on: bool,
                    flags: Optional[Dict[nn.Module, bool]] = None) -> Iterator[None]:
    """The quantizers of ``layers`` on (each at ``flags[q]``, default True) or off inside the
    block; the flags they had before come back on exit."""
    quantizers = [q for layer in layers for q in (layer.weight_quantizer, layer.input_quantizer)]
    before = [q.enabled for q in quantizers]
    for quantizer in quantizers:
        quantizer.enabled = (flags.get(quantizer, True) if flags is not None else True) if on \
            else False
    try:
        yield
    finally:
        for quantizer, flag in zip(quantizers, before):
            quantizer.enabled = flag


@contextmanager
def only(model: nn.Module, layers: Iterable[nn.Module],
         flags: Optional[Dict[nn.Module, bool]] = None) -> Iterator[None]:
    """Every quantizer of ``model`` off except those of ``layers`` (on, at ``flags``); restored after."""
    with disabled(model) as saved:
        with layers_switched(layers, True, saved if flags is None else flags):
            yield
