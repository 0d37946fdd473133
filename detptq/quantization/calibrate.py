"""Calibration: observe activations with quantization off, then compute every scale."""
import logging
from typing import Any, Callable, Iterable, Optional

import torch
from torch import nn
from tqdm import tqdm

from .bops import default_forward
from .calibration_set import CalibrationSet
from .quant_modules import QUANT_MODULES
from .state import observing

logger = logging.getLogger(__name__)


def calibrate_weights(model: nn.Module) -> int:
    """Compute every weight quantizer's parameters from its own weight; returns the count."""
    count = 0
    for module in model.modules():
        if isinstance(module, QUANT_MODULES) and hasattr(module.weight_quantizer, 'compute_params'):
            quantizer = module.weight_quantizer
            quantizer.calibrator.reset()
            quantizer.observe(module.weight)
            quantizer.compute_params()
            quantizer.calibrator.reset()  # frees the statistics
            count += 1
    return count


@torch.no_grad()
def calibrate(model: nn.Module,
              calib: Iterable,
              num_batches: Optional[int] = None,
              forward_fn: Optional[Callable[[nn.Module, Any], Any]] = None,
              progress: bool = True) -> nn.Module:
    """Calibrate a model returned by ``quantize_model`` in place and return it.

    Weights are calibrated from the weights themselves. Activations: the
    model runs the batches of ``calib`` (a ``CalibrationSet``, or any iterable
    of model inputs; the first ``num_batches`` if given) in eval mode with
    every quantizer disabled and the input quantizers observing; then each
    input quantizer computes its scale. ``forward_fn(model, batch)`` defaults
    to ``model(batch)`` (an mmdet detector's ``mode='tensor'``). Quantizer
    ``enabled`` flags are restored afterwards (quantization on, unless it was
    off before).
    """
    if num_batches is not None and (not isinstance(num_batches, int) or num_batches < 1):
        raise ValueError(
            f'calibrate: num_batches={num_batches!r} is invalid; expected a positive int')
    forward_fn = forward_fn or default_forward
    modules = [(n, m) for n, m in model.named_modules() if isinstance(m, QUANT_MODULES)]
    if not modules:
        raise ValueError('calibrate: the model has no quant modules; call quantize_model first')
    calib = CalibrationSet.of(calib, num_batches)
    calibrate_weights(model)

    was_training = model.training
    model.eval()
    seen = 0
    try:
        with observing(model) as act_quantizers:
            for batch in tqdm(calib, total=len(calib), desc='calibrate', disable=not progress):
                forward_fn(model, batch)
                seen += 1
    finally:
        model.train(was_training)
    if num_batches is not None and seen < num_batches:
        logger.warning('calibrate: data ran out after %d of %d batches', seen, num_batches)

    for name, quantizer in act_quantizers:
        if quantizer.is_pass_through:
            continue
        if not quantizer.calibrator.has_data:
            logger.warning('calibrate: %s saw no data (module never ran); its scale stays %s', name,
                           quantizer.scale.tolist())
            continue
        quantizer.compute_params()
        quantizer.calibrator.reset()
    return model
