"""Distributed runs on CPU: torchrun with 2 gloo ranks gives what one process gives.

(a) tools/dist_test.sh: the same FP predictions and mAP (evaluation sharded, results collected);
(b) tools/quantize.py: the same quantized.pth, metrics and predictions for MinMax W8A8 and a
    short DetPTQ run (rank 0 computes, every rank gets its state);
(c) the DetPTQ run resumes from a partly finished work dir, and only rank 0 writes files.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from detptq.utils.checkpoint import load_checkpoint_file

from helpers import tiny_data_and_checkpoint
from test_ptq_pipeline import CONFIG, ROOT

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason='torch.distributed with the gloo backend is not available in this torch build')

# 5 test images: two ranks get 3 each (DefaultSampler pads), mmengine drops the duplicate
TINY_DATA = dict(seed=1, num_train=2, num_val=5, num_calib=4, img_size=96)
# a short DetPTQ: 2 p values, a coarse Lp search, 2 iterations per unit
# mode='qdrop': its random masks are the hard case for one process == two processes
SHORT_DETPTQ = """
recon_cfg = dict(mode='qdrop', iters=2, batch_size=2, p_search_images=2, progress=False,
                 p_search=dict(p_values=(2.0, 3.0), num_candidates=10, max_samples=2000,
                               progress=False))
quant_cfg = dict(act=dict(calibrator=dict(_delete_=True, type='MinMaxCalibrator')),
                 weight=dict(calibrator=dict(_delete_=True, type='MinMaxCalibrator')))
"""


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """Tiny data, a random-weight YOLOv6-N checkpoint, MinMax and DetPTQ configs."""
    tmp = tmp_path_factory.mktemp('dist')
    data, ckpt = tiny_data_and_checkpoint(tmp, TINY_DATA)
    for name, base, extra in (('minmax', 'yolov6n_demo_minmax_w8a8.py', ''),
                              ('detptq', 'yolov6n_demo_detptq_w4a8.py', SHORT_DETPTQ)):
        (tmp / f'{name}.py').write_text(CONFIG.format(
            base=ROOT / 'configs/demo' / base, data=data, demo=TINY_DATA, ckpt=ckpt) + extra)
    return tmp, ckpt


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run(tmp: Path, tool: str, *args: str, nproc: int = 1, cache: str = 'cache',
        audit: str = '') -> subprocess.CompletedProcess:
    """``tools/<tool>`` in one process, or under torchrun with ``nproc`` gloo ranks.

    A ``.sh`` tool gets ``args`` as they are (PYTHON and PORT set). Other distributed
    runs go through tests/write_audit.py, which lists every file each rank writes
    under ``tmp`` into ``<tmp>_<audit>.rank<N>`` next to ``tmp``.
    """
    script = str(ROOT / 'tools' / tool)
    if tool.endswith('.sh'):
        cmd = ['bash', script, *args]
    elif nproc == 1:
        cmd = [sys.executable, script, *args]
    else:
        cmd = [sys.executable, '-m', 'torch.distributed.run', '--nnodes=1',
               f'--nproc_per_node={nproc}', '--master_addr=127.0.0.1',
               f'--master_port={free_port()}', str(ROOT / 'tests' / 'write_audit.py'),
               script, *args, '--launcher', 'pytorch']
    env = {**os.environ, 'DETPTQ_CACHE': str(tmp / cache), 'OMP_NUM_THREADS': '1',
           'PYTHON': sys.executable, 'PORT': str(free_port()),
           'WRITE_AUDIT_DIRS': str(tmp), 'WRITE_AUDIT_OUT': str(tmp.parent / f'{tmp.name}_{audit}'),
           'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(tmp), timeout=600, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    if nproc > 1 or tool.endswith('.sh'):  # mmengine's environment log: really distributed
        assert 'Distributed training: True' in proc.stdout + proc.stderr
        assert f'GPU number: {nproc}' in proc.stdout + proc.stderr
        if not torch.cuda.is_available():  # the config says nccl (mmdet's default)
            assert "backend gloo instead of the config's" in proc.stdout + proc.stderr
    return proc


# Written by every rank, not ours to restrict: mmengine's collect_results passes each rank's
# results through files in '.dist_test/' (removed after collection), and
# ensure_writable_dir's '.write_test_*' probes are deleted at once.
PLUMBING = re.compile(r'(^|/)(\.dist_test/|\.write_test_)')
# mmengine 0.10.7's LoggerHook.after_test_epoch dumps the same metrics JSON on every rank
LOGGER_HOOK_JSON = re.compile(r'/(\d{8}_\d{6})/\1\.json$')


def written(tmp: Path, audit: str, rank: int) -> list:
    """Files (relative to ``tmp``) rank ``rank`` wrote in the run audited as ``audit``."""
    lines = (tmp.parent / f'{tmp.name}_{audit}.rank{rank}').read_text().split()
    return sorted(rel for rel in (os.path.relpath(p, tmp) for p in lines)
                  if not (PLUMBING.search(rel) or LOGGER_HOOK_JSON.search(rel)))


def predictions(prefix: Path) -> list:
    """CocoMetric's dumped detections (``outfile_prefix``), in the order it wrote them."""
    return json.loads(prefix.with_name(prefix.name + '.bbox.json').read_text())


def assert_same_quantized(one: Path, two: Path) -> None:
    """Both quantized.pth hold the same keys and bit-identical tensors."""
    a = load_checkpoint_file(str(one / 'quantized.pth'))['state_dict']
    b = load_checkpoint_file(str(two / 'quantized.pth'))['state_dict']
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f'{len(different)} tensors differ, e.g. {different[:3]}'


def test_fp_evaluation_is_sharded_and_equal(setup) -> None:
    tmp, ckpt = setup
    def options(nproc):
        return ['--work-dir', f'test{nproc}', '--out', f'fp{nproc}.json', '--cfg-options',
                f'test_evaluator.outfile_prefix={tmp}/fp{nproc}']

    run(tmp, 'test.py', 'minmax.py', str(ckpt), *options(1))
    run(tmp, 'dist_test.sh', 'minmax.py', str(ckpt), '2', *options(2), nproc=2)
    one, two = (json.loads((tmp / f'fp{n}.json').read_text())['metrics'] for n in (1, 2))
    assert one == two and 'coco/bbox_mAP' in one
    detections = predictions(tmp / 'fp1')
    assert detections and detections == predictions(tmp / 'fp2')
    assert len({d['image_id'] for d in detections}) == TINY_DATA['num_val']


def test_minmax_quantizes_once_and_evaluates_sharded(setup) -> None:
    tmp, _ = setup
    for nproc in (1, 2):  # own FP caches: both runs evaluate the FP model
        run(tmp, 'quantize.py', 'minmax.py', '--work-dir', f'minmax{nproc}', '--cfg-options',
            f'test_evaluator.outfile_prefix={tmp}/q{nproc}', nproc=nproc,
            cache=f'cache_minmax{nproc}', audit='minmax')
    assert_same_quantized(tmp / 'minmax1', tmp / 'minmax2')
    one, two = (json.loads((tmp / f'minmax{n}' / 'result.json').read_text()) for n in (1, 2))
    assert (one['fp_metrics'], one['quant_metrics']) == (two['fp_metrics'], two['quant_metrics'])
    assert one['calib_img_ids'] == two['calib_img_ids'] and two['calib_images'] == 4
    # rank 1 evaluated its shard with the state it received from rank 0
    assert predictions(tmp / 'q1') == predictions(tmp / 'q2')
    assert written(tmp, 'minmax', 1) == []
    rank0 = written(tmp, 'minmax', 0)
    for name in ('minmax2/quantized.pth', 'minmax2/result.json', 'minmax2/run_state.json'):
        assert name in rank0
    assert any(p.startswith('cache_minmax2/') for p in rank0)  # FP metrics stored once


def test_detptq_resumes_on_rank0_and_matches_one_process(setup) -> None:
    tmp, _ = setup
    run(tmp, 'quantize.py', 'detptq.py', '--work-dir', 'detptq1')
    units = sorted((tmp / 'detptq1' / 'recon' / 'recon_state').glob('unit_*.pth'))
    assert len(units) > 10
    # a distributed run that was stopped half-way: the first units are finished
    seeded = tmp / 'detptq2' / 'recon' / 'recon_state'
    seeded.mkdir(parents=True)
    done = len(units) // 2
    for unit in units[:done]:
        shutil.copy(unit, seeded / unit.name)
    proc = run(tmp, 'quantize.py', 'detptq.py', '--work-dir', 'detptq2', nproc=2,
               audit='detptq')
    assert (proc.stdout + proc.stderr).count(': resumed from ') == done
    assert_same_quantized(tmp / 'detptq1', tmp / 'detptq2')
    assert written(tmp, 'detptq', 1) == []
    rank0 = {p for p in written(tmp, 'detptq', 0) if p.endswith('.pth') and 'unit_' in p}
    assert rank0 == {f'detptq2/recon/recon_state/{u.name}' for u in units[done:]}
    assert 'detptq2/recon/p_search.json' in written(tmp, 'detptq', 0)


@pytest.mark.skipif(torch.cuda.is_available(), reason='the CPU-only path')
def test_slurm_launcher_without_cuda_is_one_clear_sentence(monkeypatch) -> None:
    from argparse import Namespace

    from mmengine.config import Config

    from detptq.utils.cli import UserInputError
    from detptq.utils.distributed import init_distributed
    monkeypatch.setenv('LOCAL_RANK', '0')  # init_distributed sets it; undone after the test
    cfg = Config(dict(env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    with pytest.raises(UserInputError, match='--launcher slurm needs CUDA.*--launcher pytorch'):
        init_distributed(cfg, Namespace(launcher='slurm', local_rank=0))
    assert not dist.is_initialized()
