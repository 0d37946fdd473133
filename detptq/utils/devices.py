"""Device helpers: the device a module lives on and seeded generators that follow it.

Random streams: on CPU ``seeded_generator`` returns exactly the generator the
code used before it followed devices (``torch.Generator().manual_seed(seed)``),
so CPU runs draw the same numbers bit for bit. On an accelerator it returns a
generator on that device seeded the same way; CUDA's Philox stream differs from
CPU's Mersenne Twister, so GPU runs are reproducible on GPU but draw other
random numbers (QDrop masks, sampled rows) than CPU runs with the same seed.
"""
from typing import Optional, Union

import torch
from torch import nn

DeviceLike = Union[str, torch.device, None]


def module_device(module: nn.Module, default: DeviceLike = 'cpu') -> torch.device:
    """Device of the module's first parameter (else buffer), or ``default`` if it has neither."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device(default)


def seeded_generator(seed: int, device: DeviceLike = None) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` (default CPU) seeded with ``seed``."""
    device = torch.device('cpu' if device is None else device)
    if device.type == 'cpu':
        return torch.Generator().manual_seed(seed)
    return torch.Generator(device=device).manual_seed(seed)


def generator_device(generator: Optional[torch.Generator],
                     fallback: DeviceLike = 'cpu') -> torch.device:
    """Where ``generator`` draws its numbers (``fallback`` for the global generator, None)."""
    return torch.device(fallback) if generator is None else generator.device
