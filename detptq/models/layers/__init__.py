"""Building blocks shared by the YOLO model families."""
from .conv import (ConvBNAct, Transpose, build_activation, make_divisible,
                   scale_channels, scale_repeats)
from .csp import (BASIC_BLOCKS, BepC3, BiFusion, BottleRep, RepBlock,
                  block_activation,
                  get_basic_block, make_stage)
from .elan import (ELANBlock, ImplicitAdd, ImplicitMul, ImplicitPredConv,
                   MPConvBlock, SPPCSPCBlock)
from .rep_blocks import (QARepVGGBlock, QARepVGGBlockV2, RepVGGBlock,
                         avg_pool_kernel, fold_bn, identity_kernel)
from .sppf import SPPF, CSPSPPF, SimCSPSPPF, SimSPPF

__all__ = [
    'ConvBNAct', 'Transpose', 'build_activation', 'make_divisible',
    'scale_channels', 'scale_repeats', 'BASIC_BLOCKS', 'BepC3', 'BiFusion',
    'BottleRep', 'RepBlock', 'get_basic_block', 'block_activation',
    'make_stage',
    'QARepVGGBlock', 'QARepVGGBlockV2', 'RepVGGBlock', 'avg_pool_kernel',
    'fold_bn', 'identity_kernel', 'SPPF',
    'CSPSPPF', 'SimCSPSPPF', 'SimSPPF', 'ELANBlock', 'ImplicitAdd',
    'ImplicitMul', 'ImplicitPredConv', 'MPConvBlock', 'SPPCSPCBlock'
]
