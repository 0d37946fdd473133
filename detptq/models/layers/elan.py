"""YOLOv7 building blocks: ELAN / ELAN-W, the MP down-sampling block, SPPCSPC.

Module names follow mmyolo's YOLOv7 (``short_conv``, ``main_conv``,
``blocks``, ``final_conv``, ...), which keeps mmyolo state dicts a near-identity
mapping; official YOLOv7 ``model.N`` layers are mapped by the converters.
Concatenation orders reproduce the official ``cfg/training/yolov7*.yaml``
exactly, since a different order would silently permute the input channels
of the following 1x1 conv.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from detptq.registry import MODELS

from .conv import ConvBNAct

# Official YOLOv7 sets every BatchNorm to these values (models/yolo.py
# initialize_weights); they are not stored in state dicts, so a model meant to
# load official weights must use them.
YOLOV7_BN_EPS = 1e-3
YOLOV7_BN_MOMENTUM = 0.03


def set_bn_hyperparams(module: nn.Module, eps: float = YOLOV7_BN_EPS,
                       momentum: float = YOLOV7_BN_MOMENTUM) -> None:
    """Set eps/momentum of every BatchNorm2d below ``module`` (official YOLO init)."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = eps
            m.momentum = momentum


@MODELS.register_module()
class ELANBlock(nn.Module):
    """Efficient layer aggregation: two 1x1 branches, a chain of 3x3 blocks, concat, 1x1.

    Output = final_conv(cat(block_N, ..., block_1, main, short)) where the
    chain of blocks starts from ``main_conv``.

    Presets (all official YOLOv7 variants are one of these):
      * backbone ELAN (L):   mid_ratio=0.5/0.25, block_ratio=mid_ratio,
        num_blocks=2, convs_per_block=2
      * neck ELAN-W (L):     mid_ratio=0.5, block_ratio=0.25, num_blocks=4,
        convs_per_block=1
      * tiny ELAN:           mid_ratio=block_ratio, num_blocks=2,
        convs_per_block=1
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 mid_ratio: float,
                 block_ratio: float,
                 num_blocks: int = 2,
                 convs_per_block: int = 1,
                 act: str = 'SiLU') -> None:
        super().__init__()
        if num_blocks < 1 or convs_per_block < 1:
            raise ValueError('ELANBlock needs num_blocks >= 1 and '
                             'convs_per_block >= 1')
        mid_channels = int(in_channels * mid_ratio)
        block_channels = int(in_channels * block_ratio)
        self.short_conv = ConvBNAct(in_channels, mid_channels, 1, act=act)
        self.main_conv = ConvBNAct(in_channels, mid_channels, 1, act=act)
        self.blocks = nn.ModuleList()
        chain_channels = mid_channels
        for _ in range(num_blocks):
            convs = []
            for _ in range(convs_per_block):
                convs.append(ConvBNAct(chain_channels, block_channels, 3,
                                       act=act))
                chain_channels = block_channels
            # a single conv is stored bare (not in a Sequential), as mmyolo
            self.blocks.append(convs[0] if len(convs) == 1
                               else nn.Sequential(*convs))
        concat_channels = num_blocks * block_channels + 2 * mid_channels
        self.final_conv = ConvBNAct(concat_channels, out_channels, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Concat the block outputs (last first), the main and the short branch."""
        x_short = self.short_conv(x)
        x_main = self.main_conv(x)
        outs = []
        y = x_main
        for block in self.blocks:
            y = block(y)
            outs.append(y)
        return self.final_conv(torch.cat([*outs[::-1], x_main, x_short], 1))


@MODELS.register_module()
class MPConvBlock(nn.Module):
    """YOLOv7 "MP" down-sampling: cat(3x3/s2 conv branch, maxpool + 1x1 branch).

    Each branch gives ``out_channels // 2`` channels. The stride-conv branch
    first reduces to ``out_channels // 2`` (or keeps ``in_channels`` when
    ``mid_from_in``, used by the larger E/D variants).
    """

    def __init__(self, in_channels: int, out_channels: int,
                 mid_from_in: bool = False, act: str = 'SiLU') -> None:
        super().__init__()
        half = out_channels // 2
        mid = in_channels if mid_from_in else half
        self.maxpool_branches = nn.Sequential(
            nn.MaxPool2d(kernel_size=2, stride=2),
            ConvBNAct(in_channels, half, 1, act=act))
        self.stride_conv_branches = nn.Sequential(
            ConvBNAct(in_channels, mid, 1, act=act),
            ConvBNAct(mid, half, 3, stride=2, act=act))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Stride-conv branch first, as the official ``Concat [-1, -3]``."""
        return torch.cat([self.stride_conv_branches(x),
                          self.maxpool_branches(x)], 1)


@MODELS.register_module()
class SPPCSPCBlock(nn.Module):
    """CSP spatial pyramid pooling (YOLOv7 ``SPPCSPC``; ``tiny`` = YOLOv7-tiny's SP head).

    Official SPPCSPC: cv1, cv3, cv4 -> ``main_layers``; cv5, cv6 ->
    ``fuse_layers``; cv2 -> ``short_layer``; cv7 -> ``final_conv``.
    The tiny form has a single 1x1 conv in ``main_layers``/``fuse_layers``
    and concatenates the pooled maps largest kernel first.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 expand_ratio: float = 0.5,
                 pool_sizes: Sequence[int] = (5, 9, 13),
                 tiny: bool = False,
                 act: str = 'SiLU') -> None:
        super().__init__()
        mid = int(2 * out_channels * expand_ratio)
        self.tiny = tiny
        if tiny:
            self.main_layers = ConvBNAct(in_channels, mid, 1, act=act)
        else:
            self.main_layers = nn.Sequential(
                ConvBNAct(in_channels, mid, 1, act=act),
                ConvBNAct(mid, mid, 3, act=act),
                ConvBNAct(mid, mid, 1, act=act))
        self.poolings = nn.ModuleList(
            nn.MaxPool2d(k, stride=1, padding=k // 2) for k in pool_sizes)
        fuse_in = mid * (len(pool_sizes) + 1)
        if tiny:
            self.fuse_layers = ConvBNAct(fuse_in, mid, 1, act=act)
        else:
            self.fuse_layers = nn.Sequential(
                ConvBNAct(fuse_in, mid, 1, act=act),
                ConvBNAct(mid, mid, 3, act=act))
        self.short_layer = ConvBNAct(in_channels, mid, 1, act=act)
        self.final_conv = ConvBNAct(2 * mid, out_channels, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool the main branch at several sizes, fuse, concat with the short branch."""
        y = self.main_layers(x)
        pyramid = [y] + [pool(y) for pool in self.poolings]
        if self.tiny:  # official tiny: Concat [SP13, SP9, SP5, conv]
            pyramid = pyramid[::-1]
        y = self.fuse_layers(torch.cat(pyramid, 1))
        return self.final_conv(torch.cat([y, self.short_layer(x)], 1))


class ImplicitAdd(nn.Module):
    """YOLOR implicit knowledge added to a feature map (official ``ImplicitA``)."""

    def __init__(self, channels: int, std: float = 0.02) -> None:
        super().__init__()
        self.implicit = nn.Parameter(torch.zeros(1, channels, 1, 1))
        nn.init.normal_(self.implicit, mean=0.0, std=std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x + implicit (broadcast over batch and space)."""
        return x + self.implicit


class ImplicitMul(nn.Module):
    """YOLOR implicit knowledge multiplied onto a feature map (official ``ImplicitM``)."""

    def __init__(self, channels: int, std: float = 0.02) -> None:
        super().__init__()
        self.implicit = nn.Parameter(torch.ones(1, channels, 1, 1))
        nn.init.normal_(self.implicit, mean=1.0, std=std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x * implicit (broadcast over batch and space)."""
        return x * self.implicit


class ImplicitPredConv(nn.Module):
    """1x1 prediction conv wrapped by YOLOR implicit layers (one IDetect level).

    Training layout: ``implicit_mul(conv(implicit_add(x)))``. ``switch_to_deploy``
    folds both implicit vectors into the conv (as the official
    ``IDetect.fuse``) and deletes them, leaving a plain biased 1x1 conv.
    """

    def __init__(self, in_channels: int, out_channels: int,
                 use_implicit: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1)
        self.implicit_add: Optional[ImplicitAdd] = (
            ImplicitAdd(in_channels) if use_implicit else None)
        self.implicit_mul: Optional[ImplicitMul] = (
            ImplicitMul(out_channels) if use_implicit else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Prediction map of this level."""
        if self.implicit_add is not None:
            x = self.implicit_add(x)
        x = self.conv(x)
        if self.implicit_mul is not None:
            x = self.implicit_mul(x)
        return x

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        """Fold the implicit add/mul vectors into the conv weight and bias."""
        if self.implicit_add is None and self.implicit_mul is None:
            return
        weight = self.conv.weight.view(self.conv.out_channels, -1)
        bias = self.conv.bias.clone()
        if self.implicit_add is not None:
            # W (x + a) + b = W x + (W a + b)
            bias += weight @ self.implicit_add.implicit.view(-1)
        scale = (self.implicit_mul.implicit.view(-1)
                 if self.implicit_mul is not None
                 else torch.ones_like(bias))
        # m * (W x + b) = (m W) x + m b
        self.conv.weight.mul_(scale.view(-1, 1, 1, 1))
        self.conv.bias.copy_(bias * scale)
        self.implicit_add = None
        self.implicit_mul = None
