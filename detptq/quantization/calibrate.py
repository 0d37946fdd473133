"""Calibration: observe activations with quantization off, then compute every scale."""
import logging
from itertools import islice
from typing import Any, Callable, Iterable, Optional

import torch
from torch import nn
from tqdm import tqdm

from detptq.utils.memory import release_free_memory
from .bops import default_forward
from .quant_modules import QUANT_MODULES
from .state import observing

logger = logging.getLogger(__name__)


def default_calib_forward(model: nn.Module, batch: Any) -> Any:
    """Forward one batch; mmengine data dicts go through ``data_preprocessor``, ``mode='tensor'``.

    Tensors are passed as the single argument, tuples/lists as positional
    arguments, other dicts as keyword arguments.
    """
    if isinstance(batch, dict) and 'inputs' in batch and hasattr(model, 'data_preprocessor'):
        data = model.data_preprocessor(batch, False)
        return model(**data, mode='tensor')
    return default_forward(model, batch)


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
              data_iter: Iterable,
              num_batches: int,
              forward_fn: Optional[Callable[[nn.Module, Any], Any]] = None,
              progress: bool = True) -> nn.Module:
    """Calibrate a model returned by ``quantize_model`` in place and return it.

    Weights are calibrated from the weights themselves. Activations: the
    model runs ``num_batches`` batches of ``data_iter`` in eval mode with
    every quantizer disabled and the input quantizers observing; then each
    input quantizer computes its scale. Quantizer ``enabled`` flags are
    restored afterwards (quantization on, unless it was off before).
    """
    if not isinstance(num_batches, int) or num_batches < 1:
        raise ValueError(
            f'calibrate: num_batches={num_batches!r} is invalid; expected a positive int')
    forward_fn = forward_fn or default_calib_forward
    modules = [(n, m) for n, m in model.named_modules() if isinstance(m, QUANT_MODULES)]
    if not modules:
        raise ValueError('calibrate: the model has no quant modules; call quantize_model first')
    calibrate_weights(model)

    was_training = model.training
    model.eval()
    seen = 0
    try:
        with observing(model) as act_quantizers:
            batches = islice(iter(data_iter), num_batches)
            for batch in tqdm(batches, total=num_batches, desc='calibrate', disable=not progress):
                forward_fn(model, batch)
                seen += 1
    finally:
        model.train(was_training)
    if seen < num_batches:
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
        release_free_memory()  # searches leave freed heap behind (see utils.memory)
    return model
