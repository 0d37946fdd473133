"""YOLOv7 / YOLOv7-tiny PAFPN neck (official yaml head section up to the Detect layer)."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from detptq.registry import MODELS

from ..layers.conv import ConvBNAct
from ..layers.elan import (ELANBlock, MPConvBlock, SPPCSPCBlock,
                           set_bn_hyperparams)
from ..layers.rep_blocks import RepVGGBlock


@MODELS.register_module()
class YOLOv7PAFPN(nn.Module):
    """SPPCSPC + top-down and bottom-up ELAN-W path, then RepConv (L) or 3x3 conv (tiny) outputs.

    Args:
        in_channels: backbone channels per level (P3, P4, P5).
        out_channels: channels of the fused features per level; the output
            layers double them (the head sees ``2 * out_channels``).
        tiny: YOLOv7-tiny layout (tiny SPP, tiny ELAN, stride-2 conv
            down-sampling, plain 3x3 output convs, LeakyReLU).
        act: activation name; default SiLU (L) / LeakyReLU (tiny).

    Concat orders follow the official yaml: top-down
    ``cat(reduced backbone level, upsampled)``, bottom-up
    ``cat(down-sampled, top-down level)``.
    """

    def __init__(self,
                 in_channels: Sequence[int] = (512, 1024, 1024),
                 out_channels: Sequence[int] = (128, 256, 512),
                 tiny: bool = False,
                 act: Optional[str] = None) -> None:
        super().__init__()
        act = act or ('LeakyReLU' if tiny else 'SiLU')
        self.in_channels = list(in_channels)
        self.out_channels = list(out_channels)
        self.tiny = tiny
        num = len(in_channels)
        cin, cout = self.in_channels, self.out_channels

        def elan(c_in: int, c_out: int) -> ELANBlock:
            if tiny:
                return ELANBlock(c_in, c_out, mid_ratio=0.25,
                                 block_ratio=0.25, num_blocks=2,
                                 convs_per_block=1, act=act)
            return ELANBlock(c_in, c_out, mid_ratio=0.5, block_ratio=0.25,
                             num_blocks=4, convs_per_block=1, act=act)

        self.reduce_layers = nn.ModuleList()
        for i in range(num):
            if i == num - 1:
                self.reduce_layers.append(
                    SPPCSPCBlock(cin[i], cout[i], tiny=tiny, act=act))
            else:
                self.reduce_layers.append(ConvBNAct(cin[i], cout[i], 1,
                                                    act=act))
        # top-down, from the top level downwards (index 0 = P5 -> P4)
        self.upsample_layers = nn.ModuleList()
        self.top_down_layers = nn.ModuleList()
        for i in range(num - 1, 0, -1):
            self.upsample_layers.append(nn.Sequential(
                ConvBNAct(cout[i], cout[i - 1], 1, act=act),
                nn.Upsample(scale_factor=2, mode='nearest')))
            self.top_down_layers.append(elan(cout[i - 1] * 2, cout[i - 1]))
        # bottom-up (index 0 = P3 -> P4)
        self.downsample_layers = nn.ModuleList()
        self.bottom_up_layers = nn.ModuleList()
        for i in range(num - 1):
            if tiny:
                self.downsample_layers.append(
                    ConvBNAct(cout[i], cout[i + 1], 3, 2, act=act))
            else:
                self.downsample_layers.append(
                    MPConvBlock(cout[i], cout[i + 1], act=act))
            self.bottom_up_layers.append(elan(cout[i + 1] * 2, cout[i + 1]))
        self.out_layers = nn.ModuleList()
        for i in range(num):
            if tiny:
                self.out_layers.append(ConvBNAct(cout[i], cout[i] * 2, 3,
                                                 act=act))
            else:  # official RepConv: RepVGG-style 3x3 + 1x1 (+ id) with SiLU
                self.out_layers.append(RepVGGBlock(cout[i], cout[i] * 2,
                                                   act=act))
        set_bn_hyperparams(self)

    def forward(self, feats: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        """Fused multi-level features (channels ``2 * out_channels``)."""
        if len(feats) != len(self.in_channels):
            raise ValueError(f'YOLOv7PAFPN expects {len(self.in_channels)} '
                             f'feature maps, got {len(feats)}')
        reduced = [layer(f) for layer, f in zip(self.reduce_layers, feats)]
        num = len(reduced)
        inner: List[torch.Tensor] = [reduced[-1]]
        for k, i in enumerate(range(num - 1, 0, -1)):
            up = self.upsample_layers[k](inner[0])
            inner.insert(0, self.top_down_layers[k](
                torch.cat([reduced[i - 1], up], 1)))
        outs = [inner[0]]
        for i in range(num - 1):
            down = self.downsample_layers[i](outs[-1])
            outs.append(self.bottom_up_layers[i](
                torch.cat([down, inner[i + 1]], 1)))
        return tuple(layer(o) for layer, o in zip(self.out_layers, outs))
