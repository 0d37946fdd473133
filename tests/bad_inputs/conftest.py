"""Shared set-up of the bad-input tests: tiny generated data, a tiny checkpoint and config, tool runs.

Everything is session-scoped and built once (about 3 s): tests that damage
data copy ``tiny.data`` first. Tools run as real subprocesses with their own
FP-metrics cache and demo-data root inside the session's temp folder, so
nothing is written into the checkout.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

import pytest

from helpers import TINY_PTQ_LOADERS, tiny_data_and_checkpoint

ROOT = Path(__file__).resolve().parents[2]
TINY_DATA = dict(seed=1, num_train=2, num_val=6, num_calib=4, num_tune=2, img_size=96)

CONFIG = """
_base_ = ['{base}']
data_root = '{data}/'
demo_data = {demo}
load_from = '{ckpt}'
""" + TINY_PTQ_LOADERS + """
tune_dataloader = dict(_loader, dataset=dict(data_root=data_root, pipeline=_pipe))
tune_evaluator = dict(ann_file=data_root + 'annotations/instances_tune.json')
"""
MINMAX = 'configs/demo/yolov6n_demo_minmax_w8a8.py'
DETPTQ = 'configs/demo/yolov6n_demo_detptq_w4a8.py'


@dataclass
class Tiny:
    """The session's tiny data set, checkpoint and scratch folder."""
    tmp: Path
    data: Path
    ckpt: Path

    def config(self, name: str, base: str = MINMAX, extra: str = '',
               data: Optional[Path] = None) -> Path:
        """A tiny config inheriting ``base`` (a configs/demo file) with ``extra`` lines appended."""
        path = self.tmp / f'{name}.py'
        path.write_text(CONFIG.format(base=ROOT / base, data=data or self.data, demo=TINY_DATA,
                                      ckpt=self.ckpt) + extra)
        return path

    def copy_data(self, name: str) -> Path:
        """A private copy of the tiny data set (for tests that damage it)."""
        dst = self.tmp / name
        shutil.copytree(self.data, dst)
        return dst


def tree_digest(root: Path) -> Dict[str, str]:
    """sha1 of every file below root, by relative path."""
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).rglob('*')) if p.is_file()}


def run_tool(tool: str, *args, tmp: Path, env: Optional[dict] = None,
             timeout: int = 600) -> subprocess.CompletedProcess:
    """Run tools/<tool> as a subprocess in ``tmp``; DETPTQ_DEMO_DATA and the cache stay in tmp."""
    full_env = {**os.environ, 'DETPTQ_CACHE': str(tmp / 'cache'), 'OMP_NUM_THREADS': '1',
                'MKL_NUM_THREADS': '1', 'DETPTQ_DEMO_DATA': str(tmp / 'default_demo'),
                'PYTHONPATH': str(ROOT) + os.pathsep + os.environ.get('PYTHONPATH', '')}
    full_env.update(env or {})
    return subprocess.run([sys.executable, str(ROOT / 'tools' / tool), *map(str, args)],
                          capture_output=True, text=True, cwd=str(tmp), timeout=timeout,
                          env=full_env)


def assert_clean_error(proc: subprocess.CompletedProcess, tool: str, *fragments: str) -> None:
    """Exit status 2, one `tool: error: ...` sentence holding every fragment, no traceback."""
    err = proc.stderr
    assert proc.returncode == 2, (proc.returncode, err[-3000:], proc.stdout[-2000:])
    assert 'Traceback' not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith(f'{tool}: error: ')]
    assert len(lines) == 1, err[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture(scope='session')
def tiny(tmp_path_factory) -> Tiny:
    """A tiny demo data set and a random-weight YOLOv6-N checkpoint (deploy form)."""
    tmp = tmp_path_factory.mktemp('bad_inputs')
    data, ckpt = tiny_data_and_checkpoint(tmp, TINY_DATA)
    return Tiny(tmp=tmp, data=data, ckpt=ckpt)
