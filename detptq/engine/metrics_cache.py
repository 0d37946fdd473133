"""Cache of FP evaluation results, shared by every PTQ run of the same model and data.

Comparing ten methods on one checkpoint should evaluate the FP model once:
the key hashes the checkpoint's bytes with the model, test data and
evaluator configs, so any change to them misses the cache.
"""
from __future__ import annotations

import hashlib
import json
import os
import os.path as osp
from typing import Dict, Optional

from mmengine.config import Config


def cache_dir() -> str:
    """``$DETPTQ_CACHE`` or ``~/.cache/detptq``, plus ``fp_metrics``."""
    root = os.environ.get('DETPTQ_CACHE') or osp.join(
        osp.expanduser('~'), '.cache', 'detptq')
    return osp.join(root, 'fp_metrics')


def fp_metrics_key(cfg: Config, checkpoint: str) -> str:
    """Hash of the checkpoint bytes and the configs that decide its metrics."""
    digest = hashlib.sha1()
    with open(checkpoint, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    for key in ('model', 'test_dataloader', 'test_evaluator'):
        digest.update(json.dumps(cfg.get(key), sort_keys=True, default=str).encode())
    return digest.hexdigest()


def load_fp_metrics(key: str) -> Optional[Dict[str, float]]:
    """Metrics stored under ``key`` by an earlier run, or None."""
    path = osp.join(cache_dir(), f'{key}.json')
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def store_fp_metrics(key: str, metrics: Dict[str, float]) -> None:
    """Write ``metrics`` under ``key`` atomically."""
    os.makedirs(cache_dir(), exist_ok=True)
    path = osp.join(cache_dir(), f'{key}.json')
    with open(path + '.tmp', 'w') as f:
        json.dump(metrics, f)
    os.replace(path + '.tmp', path)
