"""Stage blocks of YOLOv6: RepBlock, BottleRep, BepC3 and BiFusion.

Names mirror YOLOv6 release 0.3 (``conv1``, ``block``, ``cv1``..``cv3``,
``m``, ``alpha``, ``upsample.upsample_transpose``, ``downsample``).
"""
from __future__ import annotations

from functools import partial
from typing import Callable, List, Optional, Sequence

import torch
from torch import nn

from detptq.registry import MODELS
from .conv import ConvBNAct, Transpose
from .rep_blocks import QARepVGGBlock, QARepVGGBlockV2, RepVGGBlock

# A basic block is called as block(in_channels, out_channels) for 3x3 s1 and
# block(in_channels, out_channels, kernel_size=3, stride=2) for downsampling.
BASIC_BLOCKS = {
    'RepVGGBlock': RepVGGBlock,
    'QARepVGGBlock': QARepVGGBlock,
    'QARepVGGBlockV2': QARepVGGBlockV2,
    'ConvBNReLU': partial(ConvBNAct, kernel_size=3, act='ReLU'),
    'ConvBNSiLU': partial(ConvBNAct, kernel_size=3, act='SiLU'),
}


def get_basic_block(name: str) -> Callable[..., nn.Module]:
    """Basic block constructor by name (see ``BASIC_BLOCKS``)."""
    if name not in BASIC_BLOCKS:
        raise KeyError(f'unknown block_type {name!r}; '
                       f'expected one of {sorted(BASIC_BLOCKS)}')
    return BASIC_BLOCKS[name]


def block_activation(name: str) -> str:
    """Activation of the plain convs that accompany a basic block type."""
    return 'SiLU' if name == 'ConvBNSiLU' else 'ReLU'


class BottleRep(nn.Module):
    """Two basic blocks with a (learnably weighted) residual when shapes match."""

    def __init__(self, in_channels: int, out_channels: int,
                 basic_block: Callable[..., nn.Module] = RepVGGBlock,
                 weight: bool = False) -> None:
        super().__init__()
        self.conv1 = basic_block(in_channels, out_channels)
        self.conv2 = basic_block(out_channels, out_channels)
        self.shortcut = in_channels == out_channels
        # YOLOv6 learns a scalar residual weight inside CSP stages
        self.alpha = nn.Parameter(torch.ones(1)) if weight else 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """conv2(conv1(x)) + alpha * x."""
        out = self.conv2(self.conv1(x))
        return out + self.alpha * x if self.shortcut else out


class RepBlock(nn.Module):
    """``n`` basic blocks in sequence (or n//2 BottleReps in BottleRep mode)."""

    def __init__(self, in_channels: int, out_channels: int, n: int = 1,
                 basic_block: Callable[..., nn.Module] = RepVGGBlock,
                 bottle_rep: bool = False) -> None:
        super().__init__()
        if bottle_rep:
            make = partial(BottleRep, basic_block=basic_block, weight=True)
            n = n // 2
        else:
            make = basic_block
        self.conv1 = make(in_channels, out_channels)
        self.block = (nn.Sequential(*(make(out_channels, out_channels)
                                      for _ in range(n - 1)))
                      if n > 1 else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Blocks in sequence."""
        x = self.conv1(x)
        return self.block(x) if self.block is not None else x


class BepC3(nn.Module):
    """CSP stage of YOLOv6-M/L: two 1x1 splits, BottleRep stack, 1x1 merge."""

    def __init__(self, in_channels: int, out_channels: int, n: int = 1,
                 e: float = 0.5,
                 basic_block: Callable[..., nn.Module] = RepVGGBlock,
                 act: str = 'ReLU') -> None:
        super().__init__()
        hidden = int(out_channels * e)
        self.cv1 = ConvBNAct(in_channels, hidden, 1, 1, act=act)
        self.cv2 = ConvBNAct(in_channels, hidden, 1, 1, act=act)
        self.cv3 = ConvBNAct(2 * hidden, out_channels, 1, 1, act=act)
        self.m = RepBlock(hidden, hidden, n, basic_block, bottle_rep=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """cv3(cat(m(cv1(x)), cv2(x)))."""
        return self.cv3(torch.cat([self.m(self.cv1(x)), self.cv2(x)], 1))


class BiFusion(nn.Module):
    """YOLOv6 v3.0 neck fusion of three scales: up(top), 1x1(mid), down(low)."""

    def __init__(self, in_channels: Sequence[int], out_channels: int,
                 act: str = 'ReLU') -> None:
        super().__init__()
        self.cv1 = ConvBNAct(in_channels[0], out_channels, 1, 1, act=act)
        self.cv2 = ConvBNAct(in_channels[1], out_channels, 1, 1, act=act)
        self.cv3 = ConvBNAct(out_channels * 3, out_channels, 1, 1, act=act)
        self.upsample = Transpose(out_channels, out_channels)
        self.downsample = ConvBNAct(out_channels, out_channels, 3, 2, act=act)

    def forward(self, x: List[torch.Tensor]) -> torch.Tensor:
        """x = [coarser (already reduced), same scale, finer]."""
        x0 = self.upsample(x[0])
        x1 = self.cv1(x[1])
        x2 = self.downsample(self.cv2(x[2]))
        return self.cv3(torch.cat([x0, x1, x2], 1))


def make_stage(kind: str, in_channels: int, out_channels: int, n: int,
               block_type: str, csp_e: Optional[float] = None) -> nn.Module:
    """A YOLOv6 stage: 'rep' -> RepBlock, 'csp' -> BepC3."""
    basic = get_basic_block(block_type)
    if kind == 'rep':
        return RepBlock(in_channels, out_channels, n, basic)
    if kind == 'csp':
        return BepC3(in_channels, out_channels, n, csp_e, basic,
                     act=block_activation(block_type))
    raise ValueError(f'unknown stage kind {kind!r}')
