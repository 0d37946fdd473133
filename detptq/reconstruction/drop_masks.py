"""QDrop's random activation dropping with the reference semantics (docs/METHOD.md section 6).

QDrop draws one keep-mask per activation element **where the tensor is
produced**: every consumer of a tensor sees the same mix of quantized and FP
elements, and the unit's input is ``where(mask, Q(x_q_in), x_fp_in)``.
detptq quantizes at layer inputs instead (each consumer has its own input
quantizer), so ``DropMasks`` keys the mask by the tensor object a quantizer
receives: the first quantizer to see a tensor draws its mask, the others
reuse it, and each returns ``where(mask, Q(x), x)``.

The unit input is mixed once (``mix``) and registered with its mask, so its
consumers return ``where(mask, Q(mix), mix) = where(mask, Q(q_in), fp_in)``:
Q(q_in) with probability p, fp_in otherwise, never a second, independent
drop.

Masks are drawn on the generator's device (the model's, see
``reconstruct_unit``), so no mask crosses from CPU to an accelerator; the
CUDA stream differs from the CPU one (``detptq.utils.devices``).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

from detptq.utils.devices import generator_device

_BIT_SHIFTS = torch.arange(8, dtype=torch.uint8)  # CPU copy; other devices: _bit_shifts()


def _bit_shifts(device: torch.device) -> torch.Tensor:
    """0..7 as uint8 on ``device`` (the CPU tensor is built once)."""
    return _BIT_SHIFTS if device.type == 'cpu' else _BIT_SHIFTS.to(device)


def bernoulli_mask(shape: torch.Size, prob: float, gen: Optional[torch.Generator],
                   device: Optional[torch.device] = None) -> torch.Tensor:
    """Independent booleans, True with probability ``prob``.

    ``prob = 0.5`` (QDrop's default) unpacks random 64-bit words, one fair
    bit per element (one draw per 64 elements instead of one float per
    element: about 8x cheaper); other values compare uniform floats with ``prob``.
    The numbers are drawn where ``gen`` lives (``device`` for the global
    generator) and the mask ends on ``device``.
    """
    numel = 1
    for n in shape:
        numel *= n
    draw_on = generator_device(gen, 'cpu' if device is None else device)
    if prob == 0.5:
        words = torch.randint(-2**63, 2**63 - 1, ((numel + 63) // 64,), dtype=torch.int64,
                              generator=gen, device=draw_on)
        bits = words.view(torch.uint8).view(-1, 1).bitwise_right_shift(_bit_shifts(draw_on))
        # every byte is now 0 or 1: a valid bool tensor without another copy
        keep = bits.bitwise_and_(1).view(-1)[:numel].view(torch.bool).view(shape)
    else:
        keep = torch.rand(shape, generator=gen, device=draw_on) < prob
    return keep if device is None else keep.to(device)


class DropMasks:
    """Keep-masks of one training forward, one per activation tensor, shared by its consumers."""

    def __init__(self) -> None:
        self.prob = 1.0
        self.gen: Optional[torch.Generator] = None
        # id(tensor) -> (tensor, mask); holding the tensor keeps its id from being reused
        self._masks: Dict[int, Tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def active(self) -> bool:
        """True while a forward with dropping (prob < 1) is running."""
        return self.prob < 1.0

    def begin(self, prob: float, gen: Optional[torch.Generator]) -> None:
        """Start a forward that quantizes each activation element with probability ``prob``."""
        self.prob, self.gen = float(prob), gen
        self._masks.clear()

    def end(self) -> None:
        """Forget this forward's masks; quantize everything again."""
        self.prob = 1.0
        self._masks.clear()

    def mask_for(self, x: torch.Tensor) -> torch.Tensor:
        """The keep-mask of tensor ``x``, drawn the first time ``x`` is seen in this forward."""
        entry = self._masks.get(id(x))
        if entry is None or entry[0] is not x:
            entry = (x, bernoulli_mask(x.shape, self.prob, self.gen, x.device))
            self._masks[id(x)] = entry
        return entry[1]

    def mix(self, quantized_input: torch.Tensor, fp_input: torch.Tensor) -> torch.Tensor:
        """The unit input ``where(mask, q_in, fp_in)``, registered so consumers reuse ``mask``."""
        keep = bernoulli_mask(quantized_input.shape, self.prob, self.gen, quantized_input.device)
        mixed = torch.where(keep, quantized_input, fp_input)
        self._masks[id(mixed)] = (mixed, keep)
        return mixed

    def quantizer_hook(self, module, args, output):
        """Forward hook of an input quantizer: ``where(mask(x), Q(x), x)`` while dropping."""
        if not self.active:
            return None  # exactly BRECQ's forward, and no random numbers drawn
        x = args[0]
        return torch.where(self.mask_for(x), output, x)
