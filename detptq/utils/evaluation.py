"""COCO evaluation of a detector through mmdet's evaluator, with a progress bar."""
from __future__ import annotations

import logging
from typing import Callable, Dict, Optional

import torch
from mmengine.dist import is_main_process
from mmengine.evaluator import Evaluator
from mmengine.logging import print_log
from tqdm import tqdm

# CocoMetric's keys -> the short names used in result.json and the leaderboard
COCO_KEYS = {'coco/bbox_mAP': 'mAP', 'coco/bbox_mAP_50': 'AP50',
             'coco/bbox_mAP_75': 'AP75', 'coco/bbox_mAP_s': 'APs',
             'coco/bbox_mAP_m': 'APm', 'coco/bbox_mAP_l': 'APl'}


def short_metrics(metrics: Dict[str, float]) -> Dict[str, float]:
    """Rename CocoMetric's keys to mAP/AP50/AP75/APs/APm/APl (others dropped).

    CocoMetric returns nothing when the model detected nothing at all; that
    is an AP of 0 on every key, and it is logged as such.
    """
    if not any(key in metrics for key in COCO_KEYS):
        print_log('evaluation: no detections on the whole split; AP counted as 0',
                  logger='current', level=logging.WARNING)
        return {short: 0.0 for short in COCO_KEYS.values()}
    return {short: float(metrics[key]) for key, short in COCO_KEYS.items()
            if key in metrics}


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataloader, evaluator: Evaluator,
             desc: str = 'eval', call_hook: Optional[Callable[..., None]] = None
             ) -> Dict[str, float]:
    """Run ``model.test_step`` over ``dataloader`` and return the evaluator's metrics.

    ``call_hook``: a Runner's ``call_hook``; each batch then fires ``before_test_iter``
    and ``after_test_iter`` as mmengine's TestLoop does (PTQLoop's evaluation passes).
    """
    model.eval()
    for idx, data_batch in enumerate(tqdm(dataloader, desc=desc, unit='batch', dynamic_ncols=True,
                                          disable=not is_main_process())):  # one bar per run
        if call_hook is not None:
            call_hook('before_test_iter', batch_idx=idx, data_batch=data_batch)
        outputs = model.test_step(data_batch)
        evaluator.process(data_samples=outputs, data_batch=data_batch)
        if call_hook is not None:
            call_hook('after_test_iter', batch_idx=idx, data_batch=data_batch, outputs=outputs)
    return evaluator.evaluate(len(dataloader.dataset))
