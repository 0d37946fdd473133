"""YOLOv6 necks: RepPAN (v2.0 layout) and RepBiFPAN (v3.0 layout), + CSP forms.

Module names mirror the official code (``reduce_layer0``, ``upsample0``,
``Bifusion0``, ``Rep_p4``, ``Rep_p3``, ``downsample2``, ``Rep_n3``,
``downsample1``, ``Rep_n4``). Arguments are YOLOv6's combined base lists
(see ``EfficientRep``); ``ch[5..10]`` are the neck channels.
Outputs: [P3, P4, P5] with channels ``ch[6], ch[8], ch[10]``.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from mmengine.model import BaseModule

from detptq.registry import MODELS
from ..layers import (BiFusion, ConvBNAct, Transpose, block_activation,
                      make_stage, scale_channels, scale_repeats)


class _PANBase(BaseModule):
    """Shared bottom-up path (downsample2/Rep_n3, downsample1/Rep_n4)."""
    stage_kind = 'rep'

    def __init__(self, channels: Sequence[int], num_repeats: Sequence[int],
                 depth_multiple: float, width_multiple: float,
                 block_type: str, csp_e: Optional[float],
                 init_cfg: Optional[dict]) -> None:
        super().__init__(init_cfg)
        self.ch = ch = scale_channels(list(channels), width_multiple)
        self.n = scale_repeats(list(num_repeats), depth_multiple)
        self.act = act = block_activation(block_type)
        self.block_type = block_type
        self.csp_e = csp_e
        self.out_channels = [ch[6], ch[8], ch[10]]
        self.reduce_layer0 = ConvBNAct(ch[4], ch[5], 1, 1, act=act)
        self.reduce_layer1 = ConvBNAct(ch[5], ch[6], 1, 1, act=act)
        self.downsample2 = ConvBNAct(ch[6], ch[7], 3, 2, act=act)
        self.Rep_n3 = self._stage(ch[6] + ch[7], ch[8], self.n[7])
        self.downsample1 = ConvBNAct(ch[8], ch[9], 3, 2, act=act)
        self.Rep_n4 = self._stage(ch[5] + ch[9], ch[10], self.n[8])

    def _stage(self, c_in: int, c_out: int, n: int) -> torch.nn.Module:
        return make_stage(self.stage_kind, c_in, c_out, n, self.block_type,
                          self.csp_e)

    def bottom_up(self, pan_out2: torch.Tensor, fpn_out1: torch.Tensor,
                  fpn_out0: torch.Tensor) -> List[torch.Tensor]:
        """PAN path from P3 back up to P5."""
        pan_out1 = self.Rep_n3(
            torch.cat([self.downsample2(pan_out2), fpn_out1], 1))
        pan_out0 = self.Rep_n4(
            torch.cat([self.downsample1(pan_out1), fpn_out0], 1))
        return [pan_out2, pan_out1, pan_out0]


@MODELS.register_module()
class RepPANNeck(_PANBase):
    """RepPAN (YOLOv6 v1/v2.0): transposed-conv upsampling + concat."""

    def __init__(self, channels: Sequence[int], num_repeats: Sequence[int],
                 depth_multiple: float = 1.0, width_multiple: float = 1.0,
                 block_type: str = 'RepVGGBlock', csp_e: Optional[float] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(channels, num_repeats, depth_multiple,
                         width_multiple, block_type, csp_e, init_cfg)
        ch, n = self.ch, self.n
        self.upsample0 = Transpose(ch[5], ch[5])
        self.Rep_p4 = self._stage(ch[3] + ch[5], ch[5], n[5])
        self.upsample1 = Transpose(ch[6], ch[6])
        self.Rep_p3 = self._stage(ch[2] + ch[6], ch[6], n[6])

    def forward(self, inputs: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """inputs: (P3, P4, P5) from the backbone."""
        x2, x1, x0 = inputs
        fpn_out0 = self.reduce_layer0(x0)
        f_out0 = self.Rep_p4(torch.cat([self.upsample0(fpn_out0), x1], 1))
        fpn_out1 = self.reduce_layer1(f_out0)
        pan_out2 = self.Rep_p3(torch.cat([self.upsample1(fpn_out1), x2], 1))
        return self.bottom_up(pan_out2, fpn_out1, fpn_out0)


@MODELS.register_module()
class CSPRepPANNeck(RepPANNeck):
    """RepPAN with BepC3 stages."""
    stage_kind = 'csp'

    def __init__(self, *args, csp_e: float = 2 / 3, **kwargs) -> None:
        super().__init__(*args, csp_e=csp_e, **kwargs)


@MODELS.register_module()
class RepBiFPANNeck(_PANBase):
    """RepBi-PAN (YOLOv6 v3.0): BiFusion of three scales on the top-down path.

    Needs the backbone's stride-4 feature (``fuse_p2=True``).
    """

    def __init__(self, channels: Sequence[int], num_repeats: Sequence[int],
                 depth_multiple: float = 1.0, width_multiple: float = 1.0,
                 block_type: str = 'RepVGGBlock', csp_e: Optional[float] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(channels, num_repeats, depth_multiple,
                         width_multiple, block_type, csp_e, init_cfg)
        ch, n = self.ch, self.n
        self.Bifusion0 = BiFusion([ch[3], ch[2]], ch[5], act=self.act)
        self.Rep_p4 = self._stage(ch[5], ch[5], n[5])
        self.Bifusion1 = BiFusion([ch[2], ch[1]], ch[6], act=self.act)
        self.Rep_p3 = self._stage(ch[6], ch[6], n[6])

    def forward(self, inputs: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """inputs: (P2, P3, P4, P5) from the backbone."""
        x3, x2, x1, x0 = inputs
        fpn_out0 = self.reduce_layer0(x0)
        f_out0 = self.Rep_p4(self.Bifusion0([fpn_out0, x1, x2]))
        fpn_out1 = self.reduce_layer1(f_out0)
        pan_out2 = self.Rep_p3(self.Bifusion1([fpn_out1, x2, x3]))
        return self.bottom_up(pan_out2, fpn_out1, fpn_out0)


@MODELS.register_module()
class CSPRepBiFPANNeck(RepBiFPANNeck):
    """RepBi-PAN with BepC3 stages (YOLOv6-M v3.0)."""
    stage_kind = 'csp'

    def __init__(self, *args, csp_e: float = 2 / 3, **kwargs) -> None:
        super().__init__(*args, csp_e=csp_e, **kwargs)
