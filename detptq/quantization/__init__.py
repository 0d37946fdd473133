"""Quantization core: fake quantizers, calibrators, BN folding, quant modules, model wrapper."""
from .calibrators import *  # noqa: F401,F403  (registers the calibrators)
from .quantizer import (PASS_THROUGH_BITS, UniformQuantizer, fake_quantize,
                        grad_scale, round_ste)

__all__ = ['UniformQuantizer', 'fake_quantize', 'round_ste', 'grad_scale',
           'PASS_THROUGH_BITS']
