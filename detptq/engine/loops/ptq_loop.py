"""PTQLoop: FP mAP -> quantize + calibrate -> (reconstruct) -> quantized mAP -> result.json.

It is the mmengine test loop a PTQ config declares (``test_cfg = dict(type='PTQLoop')``
in configs/_base_/ptq/minmax.py, inherited by every method), so ``runner.test()``
drives it: the Runner has already loaded ``load_from`` (the FP weights) when
``run()`` starts. It fires the test hooks as mmengine's TestLoop does, so a
config's ``custom_hooks`` run during PTQ. Interrupted runs resume: FP metrics
are cached per checkpoint and data (detptq.engine.metrics_cache) and
reconstruction saves each finished unit (see detptq.reconstruction). Every
reused artefact carries a fingerprint of the run's inputs (``run_fingerprint``)
and is recomputed when it differs; ``WORK_DIR/run_state.json`` adds up the wall
time of all invocations.

In a distributed run (``--launcher pytorch``) rank 0 quantizes, calibrates and
reconstructs exactly as one process would and shares the quantized state
with every rank (detptq.utils.distributed); the evaluations are sharded and
only rank 0 writes files.
"""
from __future__ import annotations

import copy
import os.path as osp
import resource
import time
from typing import Any, Dict, Optional

import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner, TestLoop

from detptq.engine.metrics_cache import (fp_metrics_fingerprint, load_fp_metrics,
                                         store_fp_metrics)
from detptq.engine.run_state import RunState
from detptq.quantization import quant_cfg_meta
from detptq.quantization.calibration_set import CalibrationSet
from detptq.quantization.cfws import cfws_extra_bops
from detptq.registry import HOOKS, LOOPS, RECONSTRUCTORS
from detptq.utils.checkpoint import save_checkpoint_file
from detptq.utils.distributed import (is_main_process, share_from_main, share_state_from_main,
                                      unshard_sampler)
from detptq.utils.evaluation import evaluate, short_metrics
from detptq.utils.fingerprint import Fingerprint, file_digest
from detptq.utils.io import write_json_atomic
from detptq.version import __version__


def _config_setting(cfg: Config, value: Any, key: str, default: Any = None) -> Any:
    """``value``, or the config's top-level ``key`` when the loop's argument is left None."""
    return value if value is not None else cfg.get(key, default)


@LOOPS.register_module()
class PTQLoop(TestLoop):
    """Post-training quantization of ``runner.model``, evaluated before and after.

    Every PTQ setting left None is read from the config's top-level key of the
    same name when the loop is built, i.e. after ``--cfg-options`` and the
    tools' flags were merged: ``quant_cfg``, ``recon_cfg``, ``calib_dataloader``,
    ``num_calib_images``, ``calib_seed``, ``method``, ``model_name``. The
    configs keep those keys at the top level (``--cfg-options quant_cfg.w_bits=4``)
    because mmengine evaluates a ``_base_`` file when it is read: a
    ``test_cfg = dict(quant_cfg=quant_cfg)`` in configs/_base_/ptq/ would copy
    the base's value, and a child config's or an option's override of
    ``quant_cfg`` would never reach the loop (docs/ARCHITECTURE.md).

    Hooks, as mmengine's TestLoop: ``before_test``, ``before_test_epoch``,
    ``before_test_iter`` / ``after_test_iter`` on every batch of both evaluation
    passes (FP, then quantized; ``runner.model`` is the model being evaluated),
    ``after_test_epoch(metrics)`` with the quantized metrics, ``after_test``.
    The model is quantized and calibrated by a ``QuantWrapperHook``
    (detptq.engine.hooks), the one wrap path of the project.

    Args:
        runner, dataloader, evaluator, fp16: as mmengine's TestLoop (test split).
        calib_dataloader: config of the calibration images' data loader.
        quant_cfg: how to quantize (see ``detptq.quantization.qconfig``).
        recon_cfg: optional reconstruction method (``RECONSTRUCTORS``).
        num_calib_images: how many calibration images to use (default 256).
        calib_seed: None keeps the loader's order (the first images);
            an int draws the images from a permutation of the calibration
            set seeded with it (mmengine ``DefaultSampler``), so seeds give
            different, reproducible subsets (``--cfg-options calib_seed=1``).
        eval_fp: evaluate the FP model too (kept across resumed runs).
        run_eval: evaluate at all (False: no labels; result.json has no mAP).
        method, model_name: names written to result.json.
    """

    def __init__(self, runner: Runner, dataloader, evaluator,
                 calib_dataloader: Optional[dict] = None, quant_cfg: Optional[dict] = None,
                 recon_cfg: Optional[dict] = None, num_calib_images: Optional[int] = None,
                 eval_fp: bool = True, run_eval: bool = True, method: Optional[str] = None,
                 model_name: Optional[str] = None, calib_seed: Optional[int] = None,
                 fp16: bool = False) -> None:
        super().__init__(runner, dataloader, evaluator, fp16)
        cfg = runner.cfg
        quant_cfg = _config_setting(cfg, quant_cfg, 'quant_cfg')
        calib_dataloader = _config_setting(cfg, calib_dataloader, 'calib_dataloader')
        for key, value in (('quant_cfg', quant_cfg), ('calib_dataloader', calib_dataloader)):
            if value is None:
                raise ValueError(f'PTQLoop: no {key} (neither test_cfg.{key} nor a top-level '
                                 f'{key}); inherit a configs/_base_/ptq/*.py file')
        self.calib_dataloader_cfg = calib_dataloader
        self.quant_cfg = dict(quant_cfg)
        recon_cfg = _config_setting(cfg, recon_cfg, 'recon_cfg')
        self.recon_cfg = dict(recon_cfg) if recon_cfg else None
        num_calib_images = _config_setting(cfg, num_calib_images, 'num_calib_images', 256)
        if not isinstance(num_calib_images, int) or num_calib_images < 1:
            raise ValueError(f'PTQLoop: num_calib_images={num_calib_images!r}; '
                             'expected a positive int')
        self.num_calib_images = num_calib_images
        calib_seed = _config_setting(cfg, calib_seed, 'calib_seed')
        if calib_seed is not None and (isinstance(calib_seed, bool) or
                                       not isinstance(calib_seed, int) or calib_seed < 0):
            raise ValueError(f'PTQLoop: calib_seed={calib_seed!r}; expected None or an int >= 0')
        self.calib_seed = calib_seed
        self.run_eval = run_eval
        self.eval_fp = eval_fp and run_eval
        self.method = _config_setting(cfg, method, 'method', 'ptq')
        self.model_name = _config_setting(cfg, model_name, 'model_name') or \
            runner.experiment_name.split('_2')[0]
        # a copy of the FP model is quantized: the FP weights stay as loaded until it is done
        self.quant_wrapper = HOOKS.build(dict(type='QuantWrapperHook',
                                              quant_cfg=self.quant_cfg, inplace=False))

    # -- steps ------------------------------------------------------------
    def calibration_set(self, data_preprocessor) -> CalibrationSet:
        """The calibration images (whole batches, at least ``num_calib_images``) as model inputs."""
        loader_cfg = copy.deepcopy(self.calib_dataloader_cfg)
        if self.calib_seed is not None:
            loader_cfg['sampler'] = dict(type='DefaultSampler', shuffle=True,
                                         seed=self.calib_seed)
        # the Runner's seed, as for its own loaders: without one, DefaultSampler syncs a seed
        # across ranks, a collective that only rank 0 would reach in a distributed run
        loader = self.runner.build_dataloader(loader_cfg, seed=self.runner.seed)
        unshard_sampler(loader.sampler)  # distributed: rank 0 calibrates on every image
        calib = CalibrationSet.from_loader(loader, data_preprocessor,
                                           num_images=self.num_calib_images)
        print_log(f'PTQ: {calib.num_images} calibration images in {len(calib)} batches '
                  f'(calib_seed={self.calib_seed})', logger='current')
        return calib

    def _fp_metrics(self, model: torch.nn.Module, state: RunState) -> Dict[str, float]:
        fingerprint = fp_metrics_fingerprint(self.runner.cfg, self.runner.cfg.load_from)
        cached = share_from_main(load_fp_metrics(fingerprint.digest) if is_main_process()
                                 else None)
        if cached is not None:
            print_log(f'PTQ: FP metrics from an earlier run (same checkpoint, model, data and '
                      f'annotations): {cached}', logger='current')
            return cached
        previous = state.noted('fp_metrics_parts')
        why = fingerprint.explain(previous) if previous else 'not cached yet'
        print_log(f'PTQ: evaluating the FP model ({why})', logger='current')
        metrics = self._evaluate(model, 'eval FP')
        if is_main_process():
            store_fp_metrics(fingerprint.digest, metrics, fingerprint)
        state.note(fp_metrics_parts=fingerprint.parts)
        return metrics

    def run_fingerprint(self) -> Fingerprint:
        """Inputs that determine every reusable artefact of this run (calibration ids added later)."""
        cfg = self.runner.cfg
        return Fingerprint().with_parts(
            quant_cfg=self.quant_cfg, model=cfg.get('model'),
            checkpoint=file_digest(cfg.load_from),
            calib_data=dict(loader=self.calib_dataloader_cfg, images=self.num_calib_images))

    def _evaluate(self, model: torch.nn.Module, desc: str) -> Dict[str, float]:
        """One evaluation pass over the test split (test iteration hooks fire on each batch)."""
        return short_metrics(evaluate(model, self.dataloader, self.evaluator, desc=desc,
                                      call_hook=self.runner.call_hook))

    def run(self) -> Dict[str, Any]:
        """Quantize, evaluate, and write ``result.json`` and ``quantized.pth``."""
        runner = self.runner
        runner.call_hook('before_test')
        runner.call_hook('before_test_epoch')
        work_dir = runner.work_dir
        fingerprint = self.run_fingerprint()
        state = RunState(work_dir, fingerprint.with_parts(recon_cfg=self.recon_cfg))
        try:
            result, q_metrics = self._run(runner, work_dir, fingerprint, state)
        finally:
            state.close()
        if result is not None:  # the main process's
            self._print_summary(result)
        runner.call_hook('after_test_epoch', metrics=q_metrics)
        runner.call_hook('after_test')
        return q_metrics

    def _run(self, runner: Runner, work_dir: str, fingerprint: Fingerprint,
             state: RunState) -> tuple:
        # a distributed run wraps the model in MMDistributedDataParallel
        model_fp = runner.model.module if is_model_wrapper(runner.model) else runner.model
        model_fp.eval()
        fp_metrics = self._fp_metrics(model_fp, state) if self.eval_fp else {}
        if is_main_process():
            model_q, calib, recon_stats = self._quantize(model_fp, work_dir, fingerprint, state)
        else:  # the same modules; rank 0's calibrated/reconstructed state arrives below
            model_q, calib, recon_stats = self.quant_wrapper.wrap(runner, None), None, None
        share_state_from_main(model_q)
        q_metrics = self._evaluate(model_q, 'eval quantized') if self.run_eval else {}
        if not is_main_process():  # one writer
            return None, q_metrics
        result = self._result(fp_metrics, q_metrics, model_q, calib,
                              state.total_seconds(), recon_stats)
        result['invocations'] = state.invocations
        # quantized.pth first: a result.json always describes a complete quantized.pth
        save_checkpoint_file({'state_dict': model_q.state_dict(),
                              'meta': {**quant_cfg_meta(self.quant_cfg),
                                       'config': runner.cfg.filename or ''}},
                             osp.join(work_dir, 'quantized.pth'))
        write_json_atomic(result, osp.join(work_dir, 'result.json'), indent=2)
        return result, q_metrics

    def _quantize(self, model_fp: torch.nn.Module, work_dir: str, fingerprint: Fingerprint,
                  state: RunState) -> tuple:
        """Quantize, calibrate and reconstruct on all calibration images: (model_q, calib, stats)."""
        calib = self.calibration_set(model_fp.data_preprocessor)
        fingerprint = fingerprint.with_parts(calib_images=calib.image_ids)
        model_q = self.quant_wrapper.wrap(self.runner, calib)
        state.tick()
        recon_stats = None
        if self.recon_cfg:
            reconstructor = RECONSTRUCTORS.build(self.recon_cfg)
            recon_stats = reconstructor(model_q, calib, model_fp=None,
                                        work_dir=osp.join(work_dir, 'recon'),
                                        fingerprint=fingerprint)
            state.tick()
        return model_q, calib, recon_stats

    # -- reporting --------------------------------------------------------
    def _result(self, fp: Dict[str, float], q: Dict[str, float], model_q,
                calib: CalibrationSet, seconds: float, recon_stats) -> Dict[str, Any]:
        cfg = self.quant_cfg
        result = dict(
            model=self.model_name, method=self.method,
            w_bits=cfg.get('w_bits'), a_bits=cfg.get('a_bits'),
            fp_metrics=fp, quant_metrics=q,
            drop=(fp['mAP'] - q['mAP']) if 'mAP' in fp and 'mAP' in q else None,
            calib_images=calib.num_images, calib_seed=self.calib_seed,
            calib_img_ids=[img_id for img_id, _ in calib.image_ids if img_id is not None],
            wall_time_s=round(seconds, 1),
            peak_memory_mb=round(resource.getrusage(
                resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            config=self.runner.cfg.filename, checkpoint=self.runner.cfg.get('load_from'),
            quant_cfg=cfg, recon_cfg=self.recon_cfg,
            detptq_version=__version__,
            finished=time.strftime('%Y-%m-%dT%H:%M:%S'))
        bops = cfws_extra_bops(model_q, calib[0])
        result['bops'] = {k: bops[k] for k in ('total_bops', 'cfws_extra_bops',
                                              'extra_ratio') if k in bops}
        if recon_stats:
            result['recon_units'] = len(recon_stats)
        if not self.run_eval:
            result['note'] = 'not evaluated (--no-eval): no FP or quantized mAP'
        return result

    @staticmethod
    def _print_summary(result: Dict[str, Any]) -> None:
        fp, q = result['fp_metrics'], result['quant_metrics']
        keys = [k for k in ('mAP', 'AP50', 'AP75', 'APs', 'APm', 'APl') if k in q]
        lines = [f"{result['model']}  {result['method']}  "
                 f"W{result['w_bits']}A{result['a_bits']}",
                 '          ' + ''.join(f'{k:>8}' for k in keys)]
        if fp:
            lines.append('FP        ' + ''.join(f'{fp.get(k, float("nan")):8.3f}' for k in keys))
        lines.append('quantized ' + (''.join(f'{q[k]:8.3f}' for k in keys)
                                     or 'not evaluated (--no-eval)'))
        print_log('\n'.join(lines), logger='current')
