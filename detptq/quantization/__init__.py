"""Quantization core: fake quantizers, calibrators, BN folding, quant modules, model wrapper."""
from .bn_fold import fold_bn, fold_bn_into_conv
from .bops import count_bops
from .calibrate import calibrate, calibrate_weights
from .calibration_set import CalibrationSet
from .calibrators import *  # noqa: F401,F403  (registers the calibrators)
from .cfws import CFWSWeightQuantizer, cfws_extra_bops
from .qconfig import (DEFAULT_QCFG, QCONFIG_VERSION, QuantConfig, layer_qconfig, merge_qcfg,
                      quant_cfg_from_meta, quant_cfg_meta)
from .quant_modules import (QUANT_MODULES, QuantConv2d, QuantConvTranspose2d, QuantLinear,
                            iter_quantizers)
from .quantizer import (PASS_THROUGH_BITS, UniformQuantizer, fake_quantize, grad_scale, round_ste)
from .state import disabled, is_active, observing, quantization_disabled, saved_qparams
from .wrapper import quantize_model

__all__ = [
    'UniformQuantizer', 'CFWSWeightQuantizer', 'fake_quantize', 'round_ste', 'grad_scale',
    'PASS_THROUGH_BITS', 'QuantConv2d', 'QuantLinear', 'QuantConvTranspose2d', 'QUANT_MODULES',
    'iter_quantizers', 'quantization_disabled', 'fold_bn', 'fold_bn_into_conv', 'count_bops',
    'cfws_extra_bops', 'DEFAULT_QCFG', 'merge_qcfg', 'layer_qconfig', 'quantize_model', 'calibrate',
    'calibrate_weights', 'CalibrationSet', 'QuantConfig', 'QCONFIG_VERSION', 'quant_cfg_meta', 'quant_cfg_from_meta',
    'disabled', 'is_active', 'observing', 'saved_qparams'
]
