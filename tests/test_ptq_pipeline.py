"""End to end: tools/quantize.py on a tiny generated data set and a tiny YOLOv6-N checkpoint."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from detptq.utils.checkpoint import load_checkpoint_file

from helpers import TINY_PTQ_LOADERS, tiny_data_and_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY_DATA = dict(seed=1, num_train=2, num_val=6, num_calib=4, img_size=96)

CONFIG = """
_base_ = ['{base}']
data_root = '{data}/'
demo_data = {demo}
load_from = '{ckpt}'
""" + TINY_PTQ_LOADERS


@pytest.fixture(scope='module')
def tiny_setup(tmp_path_factory):
    """A tiny demo data set and a random-weight YOLOv6-N checkpoint (deploy form)."""
    tmp = tmp_path_factory.mktemp('ptq')
    data, ckpt = tiny_data_and_checkpoint(tmp, TINY_DATA)
    return tmp, data, ckpt


def run_quantize(tmp: Path, data: Path, ckpt: Path, base: str, name: str,
                 extra: str = '') -> subprocess.CompletedProcess:
    cfg_path = tmp / f'{name}.py'
    cfg_path.write_text(CONFIG.format(base=ROOT / base, data=data, demo=TINY_DATA,
                                      ckpt=ckpt) + extra)
    return subprocess.run(
        [sys.executable, str(ROOT / 'tools/quantize.py'), str(cfg_path),
         '--work-dir', str(tmp / name)],
        capture_output=True, text=True, cwd=str(tmp), timeout=600,
        env={**os.environ, 'DETPTQ_CACHE': str(tmp / 'cache'), 'OMP_NUM_THREADS': '1'})


def test_minmax_w8a8_writes_result_and_quantized_state(tiny_setup) -> None:
    tmp, data, ckpt = tiny_setup
    proc = run_quantize(tmp, data, ckpt, 'configs/demo/yolov6n_demo_minmax_w8a8.py', 'minmax')
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp / 'minmax' / 'result.json').read_text())
    assert (result['method'], result['w_bits'], result['a_bits']) == ('minmax', 8, 8)
    for metrics in (result['fp_metrics'], result['quant_metrics']):
        assert 0.0 <= metrics['mAP'] <= 1.0 and 0.0 <= metrics['AP50'] <= 1.0
        # COCO reports -1 for a size bucket without ground truth
        assert all(-1.0 <= metrics[k] <= 1.0 for k in ('APs', 'APm', 'APl'))
    assert result['calib_images'] == 4
    assert result['peak_memory_mb'] > 0 and result['wall_time_s'] > 0
    state = load_checkpoint_file(str(tmp / 'minmax' / 'quantized.pth'))['state_dict']
    assert any(k.endswith('weight_quantizer.scale') for k in state)

    # A second run of the same command reuses the FP metrics instead of re-evaluating.
    again = run_quantize(tmp, data, ckpt, 'configs/demo/yolov6n_demo_minmax_w8a8.py', 'minmax')
    assert again.returncode == 0, again.stderr[-3000:]
    assert 'FP metrics from an earlier run' in again.stdout + again.stderr


def test_missing_checkpoint_is_one_clear_sentence(tiny_setup) -> None:
    tmp, data, _ = tiny_setup
    proc = run_quantize(tmp, data, tmp / 'nope.pth', 'configs/demo/yolov6n_demo_minmax_w8a8.py',
                        'missing')
    assert proc.returncode != 0
    assert 'nope.pth' in proc.stderr and 'does not exist' in proc.stderr


def test_detptq_run_searches_p_and_reconstructs(tiny_setup) -> None:
    tmp, data, ckpt = tiny_setup
    # MinMax instead of the base's Lp search keeps the test fast
    extra = ("recon_cfg = dict(iters=3, batch_size=2, p_search_images=2)\n"
             "quant_cfg = dict(act=dict(calibrator=dict(_delete_=True, type='MinMaxCalibrator')),\n"
             "                 weight=dict(calibrator=dict(_delete_=True, type='MinMaxCalibrator')))\n")
    proc = run_quantize(tmp, data, ckpt, 'configs/demo/yolov6n_demo_detptq_w4a8.py',
                        'detptq', extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp / 'detptq'
    result = json.loads((run / 'result.json').read_text())
    assert result['method'] == 'detptq' and result['w_bits'] == 4
    assert result['recon_units'] > 10
    p_search = json.loads((run / 'recon' / 'p_search.json').read_text())
    chosen = {float(entry['p']) for layer in p_search['layers'].values()
              for entry in layer.values()}
    assert chosen <= {1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5}
    assert (run / 'recon' / 'p_search.png').stat().st_size > 0
