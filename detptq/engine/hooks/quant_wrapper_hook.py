"""QuantWrapperHook: the one way a Runner's model gets quantized (quantize_model + calibrate).

PTQLoop wraps the model through it: the loop builds one from ``HOOKS`` and calls
:meth:`QuantWrapperHook.wrap` between the FP evaluation and reconstruction (a
point that is no mmengine hook point). As a ``custom_hooks`` entry it gives any
val/test run a fake-quantized, calibrated model (no reconstruction, no result.json).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Union

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from torch import nn

from detptq.quantization import calibrate, quantize_model
from detptq.quantization.calibration_set import CalibrationSet
from detptq.registry import HOOKS

_STAGES = ('before_run', 'before_val', 'before_test')


@HOOKS.register_module()
class QuantWrapperHook(Hook):
    """Wrap the runner's model with fake quantization and calibrate it, once.

    Args:
        quant_cfg: plain dict for :func:`detptq.quantization.quantize_model`.
        calib_dataloader: dataloader config (built with ``runner.build_dataloader``)
            or a built dataloader. None falls back to the loop's own dataloader
            (val or test), which calibrates on evaluation images: allowed for
            quick checks, logged as a warning.
        num_batches: calibration batches.
        stages: hook points that trigger the wrap (first one reached wins).
            ``before_run`` precedes checkpoint loading in ``Runner.test()``,
            so it only suits models whose weights are already in place.
        inplace: quantize the runner's model in place (saves a copy).
    """
    # After SwitchToDeployHook (VERY_LOW) so both orders of use work.
    priority = 'LOWEST'

    def __init__(self,
                 quant_cfg: Optional[Dict[str, Any]] = None,
                 calib_dataloader: Union[None, Dict[str, Any], Any] = None,
                 num_batches: int = 32,
                 stages: Union[str, Sequence[str]] = ('before_val', 'before_test'),
                 inplace: bool = True) -> None:
        stages = (stages, ) if isinstance(stages, str) else tuple(stages)
        bad = [s for s in stages if s not in _STAGES]
        if bad or not stages:
            raise ValueError(
                f'QuantWrapperHook: stages={stages!r} is invalid; choose from {_STAGES}')
        if not isinstance(num_batches, int) or num_batches < 1:
            raise ValueError(f'QuantWrapperHook: num_batches={num_batches!r} is invalid')
        self.quant_cfg = dict(quant_cfg or {})
        self.calib_dataloader = calib_dataloader
        self.num_batches = num_batches
        self.stages = stages
        self.inplace = inplace
        self.done = False

    def _dataloader(self, runner, stage: str):
        if self.calib_dataloader is None:
            runner.logger.warning('QuantWrapperHook: no calib_dataloader; calibrating on the '
                                  'evaluation dataloader')
            loop = runner.test_loop if stage == 'before_test' else runner.val_loop
            return loop.dataloader
        if isinstance(self.calib_dataloader, dict):
            self.calib_dataloader = runner.build_dataloader(self.calib_dataloader, seed=runner.seed)
        return self.calib_dataloader

    def wrap(self, runner, calib: Optional[CalibrationSet],
             num_batches: Optional[int] = None) -> nn.Module:
        """Quantize ``runner.model`` (DDP-style wrappers unwrapped), calibrate it on the first
        ``num_batches`` (default all) of ``calib`` and put it in the runner; returns it.

        ``calib=None``: not calibrated; its state is loaded afterwards (a distributed
        PTQLoop's ranks other than 0 receive rank 0's).
        """
        wrapped = is_model_wrapper(runner.model)
        model = runner.model.module if wrapped else runner.model
        model_q = quantize_model(model, self.quant_cfg, inplace=self.inplace)
        if calib is not None:
            calibrate(model_q, calib, num_batches)
        if wrapped:
            runner.model.module = model_q
        else:
            runner.model = model_q
        self.done = True
        return model_q

    def quantize(self, runner, stage: str) -> None:
        """Quantize and calibrate ``runner.model`` on the hook's calibration data, once."""
        if self.done:
            return
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        calib = CalibrationSet.from_loader(self._dataloader(runner, stage),
                                           getattr(model, 'data_preprocessor', None),
                                           num_batches=self.num_batches)
        self.wrap(runner, calib)
        runner.logger.info(f'QuantWrapperHook: quantized and calibrated the model at {stage} '
                           f'({self.num_batches} batches)')

    def before_run(self, runner) -> None:
        if 'before_run' in self.stages:
            self.quantize(runner, 'before_run')

    def before_val(self, runner) -> None:
        if 'before_val' in self.stages:
            self.quantize(runner, 'before_val')

    def before_test(self, runner) -> None:
        if 'before_test' in self.stages:
            self.quantize(runner, 'before_test')
