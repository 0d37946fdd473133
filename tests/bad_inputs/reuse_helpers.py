"""Tiny data, checkpoints and configs for the reuse / trust / resume tests, and tool runners.

Everything is generated under a pytest temporary folder: a 96-px demo data set
(6 val, 4 calib images), a random-weight YOLOv6-N deploy checkpoint, and PTQ
configs that read that folder as plain COCO data (``demo_data = None``, so the
demo generator is never involved).
"""
from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

import torch

from helpers import TINY_PTQ_LOADERS

ROOT = Path(__file__).resolve().parents[2]
TINY_DATA = dict(seed=1, num_train=2, num_val=6, num_calib=4, img_size=96)
MARKER_NAME = 'PWNED_MARKER'
DETPTQ_BASE = 'configs/demo/yolov6n_demo_detptq_w4a8.py'
MINMAX_BASE = 'configs/demo/yolov6n_demo_minmax_w8a8.py'

_DATA_CFG = """
data_root = '{data}/'
demo_data = None
load_from = '{ckpt}'
""" + TINY_PTQ_LOADERS + """
val_dataloader = test_dataloader
train_dataloader = dict(_loader, dataset=dict(data_root=data_root))
val_evaluator = test_evaluator
"""

# DetPTQ with MinMax calibration, 2 iterations per unit, a p search on 2 images:
# every reusable artefact is produced in seconds
DETPTQ_EXTRA = """
recon_cfg = dict(iters=2, batch_size=2, p_search_images=2, progress=False,
                 p_search=dict(progress=False))
quant_cfg = dict(act=dict(calibrator=dict(_delete_=True, type='MinMaxCalibrator')),
                 weight=dict(calibrator=dict(_delete_=True, type='MinMaxCalibrator')))
"""


def make_tiny_data(folder: Path) -> Path:
    """The tiny demo data set in ``folder`` (generated once)."""
    from detptq.datasets.demo_data import ensure_demo_dataset
    ensure_demo_dataset(folder, **TINY_DATA)
    return folder


def make_checkpoint(path: Path, seed: int = 0) -> Path:
    """A random-weight YOLOv6-N (demo config) in deploy form, as a plain-tensor file."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from detptq.registry import MODELS
    from detptq.utils.checkpoint import save_checkpoint_file
    cfg = Config.fromfile(str(ROOT / 'configs/demo/yolov6n_demo.py'))
    init_default_scope('detptq')
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    model.switch_to_deploy()
    save_checkpoint_file({'state_dict': model.state_dict(),
                          'meta': {'config': 'configs/demo/yolov6n_demo.py'}}, str(path))
    return path


def write_config(path: Path, base: str, data: Path, ckpt: Path, extra: str = '') -> Path:
    """A config inheriting ``base`` (repository-relative) that runs on the tiny data."""
    path.write_text(f"_base_ = ['{ROOT / base}']\n"
                    + _DATA_CFG.format(data=data, ckpt=ckpt) + extra)
    return path


def write_v7_config(path: Path, data: Path, ckpt: Path) -> Path:
    """A YOLOv7-tiny config with the demo classes on the tiny data."""
    bases = [ROOT / 'configs/_base_/models/yolov7_tiny.py',
             ROOT / 'configs/_base_/datasets/demo_detection.py',
             ROOT / 'configs/_base_/schedules/yolo_from_scratch.py',
             ROOT / 'configs/_base_/default_runtime.py']
    path.write_text(f'_base_ = {[str(b) for b in bases]}\n'
                    + _DATA_CFG.format(data=data, ckpt=ckpt)
                    + 'model = dict(bbox_head=dict(num_classes=10))\n')
    return path


def tiny_env(tmp: Path) -> dict:
    """Tiny data, a checkpoint and the DetPTQ config in ``tmp`` (the bad-input files' fixture)."""
    data = make_tiny_data(tmp / 'data')
    ckpt = make_checkpoint(tmp / 'fp.pth')
    detptq = write_config(tmp / 'detptq.py', DETPTQ_BASE, data, ckpt, DETPTQ_EXTRA)
    return dict(tmp=tmp, data=data, ckpt=ckpt, detptq=detptq)


def tool_env(cache: Path) -> dict:
    """Environment of a tool run: own FP-metrics cache, one thread, unbuffered output."""
    return {**os.environ, 'DETPTQ_CACHE': str(cache), 'OMP_NUM_THREADS': '1',
            'MKL_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1',
            'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])}


def run_tool(tool: str, args: Sequence[str], cwd: Path, cache: Path,
             timeout: float = 600) -> subprocess.CompletedProcess:
    """``python tools/<tool> args`` to the end; stdout+stderr captured as text."""
    return subprocess.run([sys.executable, str(ROOT / 'tools' / tool), *map(str, args)],
                          capture_output=True, text=True, cwd=str(cwd), timeout=timeout,
                          env=tool_env(cache))


def run_until(tool: str, args: Sequence[str], cwd: Path, cache: Path, pattern: str,
              timeout: float = 600) -> str:
    """Run a tool and SIGKILL it as soon as a line containing ``pattern`` is printed.

    Returns the output seen; fails if the tool ends before printing ``pattern``.
    """
    proc = subprocess.Popen([sys.executable, str(ROOT / 'tools' / tool), *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=str(cwd), env=tool_env(cache))
    seen: List[str] = []
    deadline = time.time() + timeout
    try:
        for line in proc.stdout:
            seen.append(line)
            if pattern in line:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return ''.join(seen)
            if time.time() > deadline:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    raise AssertionError(f'{tool} ended (status {proc.returncode}) before printing '
                         f'{pattern!r}:\n' + ''.join(seen)[-3000:])


class _Payload:
    """Unpickling this runs ``open(marker, 'w')``: proof that a file was fully unpickled."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def write_malicious(path: Path, marker: Path, torch_format: bool = True) -> Path:
    """A checkpoint-looking file whose unpickling creates ``marker``."""
    obj = {'state_dict': {'w': torch.zeros(1)}, 'meta': _Payload(str(marker))}
    if torch_format:
        torch.save(obj, str(path))
    else:
        with open(path, 'wb') as f:
            pickle.dump(obj, f)
    return path


def combined(proc: subprocess.CompletedProcess) -> str:
    """stdout and stderr of a finished tool run."""
    return (proc.stdout or '') + (proc.stderr or '')


def assert_clean_error(proc: subprocess.CompletedProcess, *phrases: str) -> None:
    """Non-zero exit, each phrase in the output, and no traceback."""
    out = combined(proc)
    assert proc.returncode != 0, out[-3000:]
    assert 'Traceback' not in out, out[-3000:]
    for phrase in phrases:
        assert phrase in out, f'{phrase!r} not in:\n{out[-3000:]}'


def file_bytes(path: Path) -> Optional[bytes]:
    """The bytes of ``path`` or None if it does not exist."""
    return path.read_bytes() if path.exists() else None
