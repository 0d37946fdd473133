"""YOLOv6 backbones: EfficientRep (N/S/T) and CSPBepBackbone (M).

Module names mirror the official code: ``stem``, ``ERBlock_2`` .. ``ERBlock_5``
(each an ``nn.Sequential`` of a stride-2 basic block, a stage, and for
ERBlock_5 the SPPF merge layer).

Both take YOLOv6's *combined* base lists (backbone 5 + neck 6 entries) and
the depth/width multiples, exactly as the official configs write them, so the
indices used here match the official code.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from mmengine.model import BaseModule
from torch import nn

from detptq.registry import MODELS
from ..layers import (get_basic_block, make_stage, scale_channels,
                      scale_repeats)
from ..layers.sppf import CSPSPPF, SPPF, SimCSPSPPF, SimSPPF

SPP_LAYERS = {'SimSPPF': SimSPPF, 'SPPF': SPPF, 'SimCSPSPPF': SimCSPSPPF,
              'CSPSPPF': CSPSPPF}


@MODELS.register_module()
class EfficientRep(BaseModule):
    """EfficientRep: stem + four ERBlocks of RepBlock stages.

    Args:
        channels: base channel list (11 entries: 5 backbone + 6 neck).
        num_repeats: base repeat list (9 entries: 5 backbone + 4 neck).
        depth_multiple, width_multiple: YOLOv6 scaling factors.
        block_type: 'RepVGGBlock', 'QARepVGGBlock', 'ConvBNReLU', ...
        fuse_p2: also return the stride-4 feature (v3.0 BiFPAN necks).
        spp: merge layer at the end ('SimSPPF', 'SimCSPSPPF', ...).
    """
    stage_kind = 'rep'

    def __init__(self,
                 channels: Sequence[int],
                 num_repeats: Sequence[int],
                 depth_multiple: float = 1.0,
                 width_multiple: float = 1.0,
                 block_type: str = 'RepVGGBlock',
                 fuse_p2: bool = False,
                 spp: str = 'SimSPPF',
                 csp_e: Optional[float] = None,
                 in_channels: int = 3,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg)
        ch = scale_channels(list(channels), width_multiple)
        n = scale_repeats(list(num_repeats), depth_multiple)
        block = get_basic_block(block_type)
        self.fuse_p2 = fuse_p2
        self.out_channels = ([ch[1]] if fuse_p2 else []) + ch[2:5]

        def stage(c: int, repeats: int) -> nn.Module:
            return make_stage(self.stage_kind, c, c, repeats, block_type,
                              csp_e)

        self.stem = block(in_channels, ch[0], kernel_size=3, stride=2)
        self.ERBlock_2 = nn.Sequential(
            block(ch[0], ch[1], kernel_size=3, stride=2),
            stage(ch[1], n[1]))
        self.ERBlock_3 = nn.Sequential(
            block(ch[1], ch[2], kernel_size=3, stride=2),
            stage(ch[2], n[2]))
        self.ERBlock_4 = nn.Sequential(
            block(ch[2], ch[3], kernel_size=3, stride=2),
            stage(ch[3], n[3]))
        if spp not in SPP_LAYERS:
            raise KeyError(f'unknown spp {spp!r}; expected {sorted(SPP_LAYERS)}')
        self.ERBlock_5 = nn.Sequential(
            block(ch[3], ch[4], kernel_size=3, stride=2),
            stage(ch[4], n[4]),
            SPP_LAYERS[spp](ch[4], ch[4], kernel_size=5))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Features at strides (4,) 8, 16, 32."""
        outs = []
        x = self.ERBlock_2(self.stem(x))
        if self.fuse_p2:
            outs.append(x)
        x = self.ERBlock_3(x)
        outs.append(x)
        x = self.ERBlock_4(x)
        outs.append(x)
        x = self.ERBlock_5(x)
        outs.append(x)
        return tuple(outs)


@MODELS.register_module()
class CSPBepBackbone(EfficientRep):
    """EfficientRep with BepC3 (CSP + BottleRep) stages, used by YOLOv6-M."""
    stage_kind = 'csp'

    def __init__(self, *args, csp_e: float = 2 / 3, **kwargs) -> None:
        super().__init__(*args, csp_e=csp_e, **kwargs)
