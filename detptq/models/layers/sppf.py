"""SPPF-style channel-merge blocks of YOLOv6 (names as YOLOv6 release 0.3).

SimSPPF / SimCSPSPPF use ReLU (with RepVGG-style backbones); SPPF / CSPSPPF
use SiLU (with plain-conv backbones).
"""
from __future__ import annotations

import torch
from torch import nn

from detptq.registry import MODELS
from .conv import ConvBNAct


@MODELS.register_module()
class SimSPPF(nn.Module):
    """1x1 reduce, three chained max-pools, concat of four, 1x1 merge."""

    def __init__(self, in_channels: int, out_channels: int,
                 kernel_size: int = 5, act: str = 'ReLU') -> None:
        super().__init__()
        hidden = in_channels // 2
        self.cv1 = ConvBNAct(in_channels, hidden, 1, 1, act=act)
        self.cv2 = ConvBNAct(hidden * 4, out_channels, 1, 1, act=act)
        self.m = nn.MaxPool2d(kernel_size, 1, kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Spatial pyramid pooling, fast form."""
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat([x, y1, y2, self.m(y2)], 1))


@MODELS.register_module()
class SPPF(SimSPPF):
    """SimSPPF with SiLU."""

    def __init__(self, in_channels: int, out_channels: int,
                 kernel_size: int = 5, act: str = 'SiLU') -> None:
        super().__init__(in_channels, out_channels, kernel_size, act)


@MODELS.register_module()
class SimCSPSPPF(nn.Module):
    """CSP version of SPPF used by YOLOv6 v3.0 (cv1..cv7)."""

    def __init__(self, in_channels: int, out_channels: int,
                 kernel_size: int = 5, e: float = 0.5,
                 act: str = 'ReLU') -> None:
        super().__init__()
        hidden = int(out_channels * e)
        self.cv1 = ConvBNAct(in_channels, hidden, 1, 1, act=act)
        self.cv2 = ConvBNAct(in_channels, hidden, 1, 1, act=act)
        self.cv3 = ConvBNAct(hidden, hidden, 3, 1, act=act)
        self.cv4 = ConvBNAct(hidden, hidden, 1, 1, act=act)
        self.m = nn.MaxPool2d(kernel_size, 1, kernel_size // 2)
        self.cv5 = ConvBNAct(4 * hidden, hidden, 1, 1, act=act)
        self.cv6 = ConvBNAct(hidden, hidden, 3, 1, act=act)
        self.cv7 = ConvBNAct(2 * hidden, out_channels, 1, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled branch (cv1,3,4 -> pools -> cv5,6) concat shortcut cv2."""
        x1 = self.cv4(self.cv3(self.cv1(x)))
        y0 = self.cv2(x)
        y1 = self.m(x1)
        y2 = self.m(y1)
        y3 = self.cv6(self.cv5(torch.cat([x1, y1, y2, self.m(y2)], 1)))
        return self.cv7(torch.cat([y0, y3], 1))


@MODELS.register_module()
class CSPSPPF(SimCSPSPPF):
    """SimCSPSPPF with SiLU."""

    def __init__(self, in_channels: int, out_channels: int,
                 kernel_size: int = 5, e: float = 0.5,
                 act: str = 'SiLU') -> None:
        super().__init__(in_channels, out_channels, kernel_size, e, act)
