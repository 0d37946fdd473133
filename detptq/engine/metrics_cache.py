"""Cache of FP evaluation results, shared by every PTQ run of the same model and data.

Comparing ten methods on one checkpoint should evaluate the FP model once.
An entry is keyed by a fingerprint (detptq.utils.fingerprint) of everything
that decides the metrics: the checkpoint's bytes, the model, test data and
evaluator configs, the annotation files' bytes and the test images' names
and sizes. Any change misses the cache; ``explain_miss`` says which part
changed since the entry a work dir used last.
"""
from __future__ import annotations

import json
import logging
import os
import os.path as osp
from typing import Dict, List, Optional

from mmengine.config import Config
from mmengine.logging import print_log

from detptq.utils.fingerprint import Fingerprint, digest_of, file_digest
from detptq.utils.io import write_json_atomic


def cache_dir() -> str:
    """``$DETPTQ_CACHE`` or ``~/.cache/detptq``, plus ``fp_metrics``."""
    root = os.environ.get('DETPTQ_CACHE') or osp.join(
        osp.expanduser('~'), '.cache', 'detptq')
    return osp.join(root, 'fp_metrics')


def _annotation_files(cfg: Config) -> List[str]:
    """Annotation files the test split reads: the dataset's and the evaluator's."""
    files = []
    dataset = (cfg.get('test_dataloader') or {}).get('dataset') or {}
    if dataset.get('ann_file'):
        files.append(osp.join(dataset.get('data_root') or '', dataset['ann_file']))
    evaluator = cfg.get('test_evaluator') or {}
    for ev in evaluator if isinstance(evaluator, list) else [evaluator]:
        if ev.get('ann_file'):
            files.append(ev['ann_file'])
    return sorted({osp.realpath(f) for f in files})


def _image_listing(cfg: Config) -> list:
    """(name, size) of every test image: cheap, and catches added, removed or replaced images."""
    dataset = (cfg.get('test_dataloader') or {}).get('dataset') or {}
    img_dir = (dataset.get('data_prefix') or {}).get('img')
    if not img_dir:
        return []
    folder = osp.join(dataset.get('data_root') or '', img_dir)
    if not osp.isdir(folder):
        return []
    with os.scandir(folder) as entries:
        return sorted((e.name, e.stat().st_size) for e in entries if e.is_file())


def fp_metrics_fingerprint(cfg: Config, checkpoint: str) -> Fingerprint:
    """Everything that decides the FP metrics of ``checkpoint`` under ``cfg``."""
    return Fingerprint().with_parts(
        checkpoint=file_digest(checkpoint),
        model=cfg.get('model'), test_dataloader=cfg.get('test_dataloader'),
        test_evaluator=cfg.get('test_evaluator'),
        annotations=digest_of([[osp.basename(f), file_digest(f) if osp.isfile(f) else None]
                               for f in _annotation_files(cfg)]),
        test_images=digest_of(_image_listing(cfg)))


def load_fp_metrics(key: str) -> Optional[Dict[str, float]]:
    """Metrics stored under ``key`` by an earlier run, or None (also for an unreadable entry)."""
    path = osp.join(cache_dir(), f'{key}.json')
    if not osp.isfile(path):
        return None
    try:
        with open(path) as f:
            entry = json.load(f)
        return dict(entry['metrics'])
    except (OSError, ValueError, KeyError, TypeError) as err:
        print_log(f'FP metrics cache entry {path} is unreadable ({err}); evaluating again',
                  logger='current', level=logging.WARNING)
        return None


def store_fp_metrics(key: str, metrics: Dict[str, float],
                     fingerprint: Optional[Fingerprint] = None) -> None:
    """Write ``metrics`` (and the fingerprint's parts) under ``key`` atomically."""
    parts = fingerprint.parts if fingerprint is not None else {}
    write_json_atomic(dict(metrics=metrics, fingerprint_parts=parts),
                      osp.join(cache_dir(), f'{key}.json'))
