"""Conv + BN + activation, the plain building block of the YOLO families.

Attribute names (``conv``, ``bn``, ``act``) mirror YOLOv6's ``SimConv`` /
``Conv`` (releases 0.2 and 0.3) and YOLOv7's ``Conv``, so official state-dict
keys map onto ours by prefix only.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from detptq.registry import MODELS


def build_activation(act: Optional[str]) -> nn.Module:
    """Activation module by name: ReLU, SiLU, LeakyReLU (slope 0.1) or None.

    Never in-place: forward hooks (calibration, reconstruction caches) keep
    references to module outputs, which an in-place activation would change.
    """
    if act is None or act == 'None':
        return nn.Identity()
    table = {
        'ReLU': lambda: nn.ReLU(),
        'SiLU': lambda: nn.SiLU(),
        'LeakyReLU': lambda: nn.LeakyReLU(0.1),
    }
    if act not in table:
        raise ValueError(f'unknown activation {act!r}; '
                         f'expected one of {sorted(table)} or None')
    return table[act]()


def make_divisible(x: float, divisor: int = 8) -> int:
    """Round a scaled channel count up to a multiple of ``divisor`` (YOLOv6)."""
    return int(math.ceil(x / divisor) * divisor)


def scale_channels(channels: list, width_multiple: float) -> list:
    """Apply YOLOv6's width multiple to a list of base channel counts."""
    return [make_divisible(c * width_multiple, 8) for c in channels]


def scale_repeats(repeats: list, depth_multiple: float) -> list:
    """Apply YOLOv6's depth multiple (repeats of 1 stay 1)."""
    return [max(round(n * depth_multiple), 1) if n > 1 else n for n in repeats]


@MODELS.register_module()
class ConvBNAct(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> activation ('same' padding)."""

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size: int = 1,
                 stride: int = 1,
                 groups: int = 1,
                 padding: Optional[int] = None,
                 act: Optional[str] = 'ReLU',
                 bias: bool = False) -> None:
        super().__init__()
        if padding is None:
            padding = kernel_size // 2
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride,
                              padding, groups=groups, bias=bias)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = build_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """conv -> bn -> act."""
        return self.act(self.bn(self.conv(x)))


class Transpose(nn.Module):
    """2x learned upsampling (ConvTranspose2d k2 s2 with bias), as YOLOv6."""

    def __init__(self, in_channels: int, out_channels: int,
                 kernel_size: int = 2, stride: int = 2) -> None:
        super().__init__()
        self.upsample_transpose = nn.ConvTranspose2d(
            in_channels, out_channels, kernel_size, stride, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Upsample by the stride."""
        return self.upsample_transpose(x)
