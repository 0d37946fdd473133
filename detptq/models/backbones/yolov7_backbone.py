"""YOLOv7 / YOLOv7-tiny backbone (official ``cfg/training/yolov7*.yaml`` layers 0-50 / 0-28)."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import nn

from detptq.registry import MODELS

from ..layers.conv import ConvBNAct
from ..layers.elan import ELANBlock, MPConvBlock, set_bn_hyperparams

# Per stage: (in_channels, out_channels, ELAN mid_ratio, ELAN convs_per_block).
# L: stage1 starts with a 3x3/s2 conv to out/2, stages 2-4 with an MP block.
# Tiny: stage1 has no down-sampling (the stem already has stride 4),
# stages 2-4 start with a 2x2 max pool.
_ARCH_SETTINGS = {
    'L': [(64, 256, 0.5, 2), (256, 512, 0.5, 2), (512, 1024, 0.5, 2),
          (1024, 1024, 0.25, 2)],
    'Tiny': [(64, 64, 0.5, 1), (64, 128, 1.0, 1), (128, 256, 1.0, 1),
             (256, 512, 1.0, 1)],
}


@MODELS.register_module()
class YOLOv7Backbone(nn.Module):
    """ELAN backbone of YOLOv7 (arch 'L', SiLU) and YOLOv7-tiny (arch 'Tiny', LeakyReLU 0.1).

    Returns the outputs of the stages in ``out_indices`` (stem = 0, stages
    1-4); the default (2, 3, 4) gives strides 8/16/32 with 512/1024/1024
    channels (L) or 128/256/512 (Tiny). ``widen_factor`` scales every
    channel count (official models: 1.0; small values make tiny test models).
    """

    def __init__(self, arch: str = 'L', act: Optional[str] = None,
                 out_indices: Sequence[int] = (2, 3, 4),
                 widen_factor: float = 1.0) -> None:
        super().__init__()
        if arch not in _ARCH_SETTINGS:
            raise ValueError(f'YOLOv7Backbone arch must be one of '
                             f'{sorted(_ARCH_SETTINGS)}, got {arch!r}')
        act = act or ('LeakyReLU' if arch == 'Tiny' else 'SiLU')
        self.arch = arch
        self.out_indices = tuple(out_indices)
        settings = [(int(cin * widen_factor), int(cout * widen_factor), r, n)
                    for cin, cout, r, n in _ARCH_SETTINGS[arch]]
        stem_out = settings[0][0]
        if arch == 'L':
            self.stem = nn.Sequential(
                ConvBNAct(3, stem_out // 2, 3, 1, act=act),
                ConvBNAct(stem_out // 2, stem_out, 3, 2, act=act),
                ConvBNAct(stem_out, stem_out, 3, 1, act=act))
        else:
            self.stem = nn.Sequential(
                ConvBNAct(3, stem_out // 2, 3, 2, act=act),
                ConvBNAct(stem_out // 2, stem_out, 3, 2, act=act))
        self.layers = ['stem']
        for idx, (cin, cout, mid_ratio, convs) in enumerate(settings):
            stage = []
            elan_in = cin
            if arch == 'L':
                if idx == 0:
                    stage.append(ConvBNAct(cin, cout // 2, 3, 2, act=act))
                    elan_in = cout // 2
                else:
                    stage.append(MPConvBlock(cin, cin, act=act))
            elif idx > 0:
                stage.append(nn.MaxPool2d(2, 2))
            stage.append(ELANBlock(elan_in, cout, mid_ratio=mid_ratio,
                                   block_ratio=mid_ratio, num_blocks=2,
                                   convs_per_block=convs, act=act))
            name = f'stage{idx + 1}'
            self.add_module(name, nn.Sequential(*stage))
            self.layers.append(name)
        set_bn_hyperparams(self)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Feature maps of the stages in ``out_indices``."""
        outs = []
        for i, name in enumerate(self.layers):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
