"""PTQLoop: FP mAP -> quantize + calibrate -> (reconstruct) -> quantized mAP -> result.json.

It is an mmengine test loop, so ``runner.test()`` drives it: the Runner has
already loaded ``load_from`` (the FP weights) when ``run()`` starts.
Interrupted runs resume: FP metrics are cached per checkpoint and data
(detptq.engine.metrics_cache) and reconstruction saves each finished unit
(see detptq.reconstruction). Every reused artefact carries a fingerprint of
the run's inputs (``run_fingerprint``) and is recomputed when it differs;
``WORK_DIR/run_state.json`` adds up the wall time of all invocations.

In a distributed run (``--launcher pytorch``) rank 0 quantizes, calibrates and
reconstructs exactly as one process would and shares the quantized state
with every rank (detptq.utils.distributed); the evaluations are sharded and
only rank 0 writes files.
"""
from __future__ import annotations

import copy
import json
import os.path as osp
import resource
import time
from itertools import islice
from typing import Any, Dict, List, Optional

import torch
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.runner import BaseLoop, Runner

from detptq.engine.metrics_cache import (fp_metrics_fingerprint, load_fp_metrics,
                                         store_fp_metrics)
from detptq.engine.run_state import RunState
from detptq.quantization import calibrate, quantize_model
from detptq.quantization.calibrate import default_calib_forward
from detptq.quantization.cfws import cfws_extra_bops
from detptq.registry import LOOPS, RECONSTRUCTORS
from detptq.utils.checkpoint import save_checkpoint_file
from detptq.utils.distributed import (is_main_process, share_from_main, share_state_from_main,
                                      unshard_sampler)
from detptq.utils.evaluation import evaluate, short_metrics
from detptq.utils.fingerprint import Fingerprint, file_digest
from detptq.utils.io import write_json_atomic
from detptq.version import __version__


@LOOPS.register_module()
class PTQLoop(BaseLoop):
    """Post-training quantization of ``runner.model``, evaluated before and after.

    Args:
        runner, dataloader, evaluator: given by the Runner (test split).
        calib_dataloader: config of the calibration images' data loader.
        quant_cfg: how to quantize (see ``detptq.quantization.qconfig``).
        recon_cfg: optional reconstruction method (``RECONSTRUCTORS``).
        num_calib_images: how many calibration images to use.
        calib_seed: None keeps the loader's order (the first images);
            an int draws the images from a permutation of the calibration
            set seeded with it (mmengine ``DefaultSampler``), so seeds give
            different, reproducible subsets. Default: the config's top-level
            ``calib_seed`` key (``--cfg-options calib_seed=1``).
        eval_fp: evaluate the FP model too (kept across resumed runs).
        run_eval: evaluate at all (False: no labels; result.json has no mAP).
        method, model_name: names written to result.json.
    """

    def __init__(self, runner: Runner, dataloader, evaluator,
                 calib_dataloader: dict, quant_cfg: dict,
                 recon_cfg: Optional[dict] = None, num_calib_images: int = 256,
                 eval_fp: bool = True, run_eval: bool = True, method: str = 'ptq',
                 model_name: Optional[str] = None,
                 calib_seed: Optional[int] = None) -> None:
        super().__init__(runner, dataloader)
        self.evaluator = runner.build_evaluator(evaluator) \
            if isinstance(evaluator, (dict, list)) else evaluator
        # as mmengine's TestLoop: CocoMetric needs the class names
        if hasattr(self.dataloader.dataset, 'metainfo'):
            self.evaluator.dataset_meta = self.dataloader.dataset.metainfo
            runner.visualizer.dataset_meta = self.dataloader.dataset.metainfo
        self.calib_dataloader_cfg = calib_dataloader
        self.quant_cfg = dict(quant_cfg)
        self.recon_cfg = dict(recon_cfg) if recon_cfg else None
        if not isinstance(num_calib_images, int) or num_calib_images < 1:
            raise ValueError(f'PTQLoop: num_calib_images={num_calib_images!r}; '
                             'expected a positive int')
        self.num_calib_images = num_calib_images
        if calib_seed is None:
            calib_seed = runner.cfg.get('calib_seed')
        if calib_seed is not None and (isinstance(calib_seed, bool) or
                                       not isinstance(calib_seed, int) or calib_seed < 0):
            raise ValueError(f'PTQLoop: calib_seed={calib_seed!r}; expected None or an int >= 0')
        self.calib_seed = calib_seed
        self.run_eval = run_eval
        self.eval_fp = eval_fp and run_eval
        self.method = method
        self.model_name = model_name or runner.experiment_name.split('_2')[0]

    # -- steps ------------------------------------------------------------
    def _calib_batches(self) -> List[Any]:
        loader_cfg = copy.deepcopy(self.calib_dataloader_cfg)
        if self.calib_seed is not None:
            loader_cfg['sampler'] = dict(type='DefaultSampler', shuffle=True,
                                         seed=self.calib_seed)
        # the Runner's seed, as for its own loaders: without one, DefaultSampler syncs a seed
        # across ranks, a collective that only rank 0 would reach in a distributed run
        loader = self.runner.build_dataloader(loader_cfg, seed=self.runner.seed)
        unshard_sampler(loader.sampler)  # distributed: rank 0 calibrates on every image
        batch_size = loader.batch_size or 1
        num_batches = max(1, -(-self.num_calib_images // batch_size))
        batches = list(islice(iter(loader), num_batches))
        images = sum(len(b['inputs']) for b in batches)
        print_log(f'PTQ: {images} calibration images in {len(batches)} batches '
                  f'(calib_seed={self.calib_seed})', logger='current')
        return batches

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
        metrics = short_metrics(evaluate(model, self.dataloader, self.evaluator,
                                         desc='eval FP'))
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

    @staticmethod
    def calib_ids(calib: List[Any]) -> List[Any]:
        """(img_id, file name) of every calibration image, in order."""
        ids = []
        for batch in calib:
            samples = batch.get('data_samples') if isinstance(batch, dict) else None
            for sample in samples or []:
                meta = getattr(sample, 'metainfo', {})
                ids.append([meta.get('img_id'), osp.basename(str(meta.get('img_path', '')))])
        return ids

    def run(self) -> Dict[str, Any]:
        """Quantize, evaluate, and write ``result.json`` and ``quantized.pth``."""
        runner = self.runner
        work_dir = runner.work_dir
        fingerprint = self.run_fingerprint()
        state = RunState(work_dir, fingerprint.with_parts(recon_cfg=self.recon_cfg))
        try:
            result, q_metrics = self._run(runner, work_dir, fingerprint, state)
        finally:
            state.close()
        if result is not None:  # the main process's
            self._print_summary(result)
        return q_metrics

    def _run(self, runner: Runner, work_dir: str, fingerprint: Fingerprint,
             state: RunState) -> tuple:
        # a distributed run wraps the model in MMDistributedDataParallel
        fp_model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        fp_model.eval()
        fp_metrics = self._fp_metrics(fp_model, state) if self.eval_fp else {}
        if is_main_process():
            q_model, calib, recon_stats = self._quantize(fp_model, work_dir, fingerprint, state)
        else:  # the same modules; rank 0's calibrated/reconstructed state arrives below
            q_model, calib, recon_stats = quantize_model(fp_model, self.quant_cfg), None, None
        share_state_from_main(q_model)
        q_metrics = short_metrics(evaluate(q_model, self.dataloader, self.evaluator,
                                           desc='eval quantized')) if self.run_eval else {}
        if not is_main_process():  # one writer
            return None, q_metrics
        result = self._result(fp_metrics, q_metrics, q_model, calib,
                              state.total_seconds(), recon_stats)
        result['invocations'] = state.invocations
        # quantized.pth first: a result.json always describes a complete quantized.pth
        save_checkpoint_file({'state_dict': q_model.state_dict(),
                              'meta': {'quant_cfg': json.dumps(self.quant_cfg, default=str),
                                       'config': runner.cfg.filename or ''}},
                             osp.join(work_dir, 'quantized.pth'))
        write_json_atomic(result, osp.join(work_dir, 'result.json'), indent=2)
        return result, q_metrics

    def _quantize(self, fp_model: torch.nn.Module, work_dir: str, fingerprint: Fingerprint,
                  state: RunState) -> tuple:
        """Quantize, calibrate and reconstruct on all calibration images: (q_model, calib, stats)."""
        calib = self._calib_batches()
        fingerprint = fingerprint.with_parts(calib_images=self.calib_ids(calib))
        q_model = quantize_model(fp_model, self.quant_cfg)
        calibrate(q_model, calib, num_batches=len(calib))
        state.tick()
        recon_stats = None
        if self.recon_cfg:
            reconstructor = RECONSTRUCTORS.build(self.recon_cfg)
            recon_stats = reconstructor(q_model, calib, model_fp=None,
                                        work_dir=osp.join(work_dir, 'recon'),
                                        fingerprint=fingerprint)
            state.tick()
        return q_model, calib, recon_stats

    # -- reporting --------------------------------------------------------
    def _result(self, fp: Dict[str, float], q: Dict[str, float], q_model,
                calib: List[Any], seconds: float, recon_stats) -> Dict[str, Any]:
        cfg = self.quant_cfg
        images = sum(len(b['inputs']) for b in calib)
        result = dict(
            model=self.model_name, method=self.method,
            w_bits=cfg.get('w_bits'), a_bits=cfg.get('a_bits'),
            fp_metrics=fp, quant_metrics=q,
            drop=(fp['mAP'] - q['mAP']) if 'mAP' in fp and 'mAP' in q else None,
            calib_images=images, calib_seed=self.calib_seed,
            calib_img_ids=[s.img_id for b in calib if isinstance(b, dict)
                           for s in b.get('data_samples', []) if hasattr(s, 'img_id')],
            wall_time_s=round(seconds, 1),
            peak_memory_mb=round(resource.getrusage(
                resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            config=self.runner.cfg.filename, checkpoint=self.runner.cfg.get('load_from'),
            quant_cfg=cfg, recon_cfg=self.recon_cfg,
            detptq_version=__version__,
            finished=time.strftime('%Y-%m-%dT%H:%M:%S'))
        bops = cfws_extra_bops(q_model, calib[0], forward_fn=default_calib_forward)
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
