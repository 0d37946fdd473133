"""Per-layer sensitivity: a tiny random YOLOv6-N at 64 px (library) and tools/analyze_sensitivity.py
on a tiny generated data set."""
import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from detptq.quantization import QUANT_MODULES, calibrate, iter_quantizers, quantize_model
from detptq.analysis.sensitivity import (dense_mse, format_top_table, layer_sensitivity,
                                             save_sensitivity)
from detptq.registry import MODELS
from detptq.utils.checkpoint import save_checkpoint_file

ROOT = Path(__file__).resolve().parents[1]
LAYER = 'neck.Rep_p3.block.0.rbr_reparam'  # a mid-network 3x3 conv of YOLOv6-N


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_yolov6n() -> torch.nn.Module:
    """YOLOv6-N with random weights; the prediction convs too (their official init is zero,
    which would make every output independent of the rest of the network)."""
    init_default_scope('detptq')
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(str(ROOT / 'configs/demo/yolov6n_demo.py')).model)
    for name, module in model.named_modules():
        if ('cls_preds' in name or 'reg_preds' in name) and isinstance(module, torch.nn.Conv2d):
            torch.nn.init.normal_(module.weight, std=0.05)
    return model.eval()


@pytest.fixture(scope='module')
def model_fp():
    return tiny_yolov6n()


@pytest.fixture(scope='module')
def images():
    gen = torch.Generator().manual_seed(1)
    return [torch.rand(1, 3, 64, 64, generator=gen) for _ in range(2)]


def quantized(model, images, **qcfg):
    q = quantize_model(model, qcfg)
    calibrate(q, images, num_batches=len(images), progress=False)
    return q


@pytest.fixture(scope='module')
def both_results(model_fp, images):
    q = quantized(model_fp, images, w_bits=4, a_bits=8)
    flags = [q_.enabled for _, q_ in iter_quantizers(q)]
    results = layer_sensitivity(q, images, metric='odol', mode='both', progress=False)
    return q, flags, results


def test_every_quant_layer_ranked_with_nonnegative_errors(both_results) -> None:
    q, flags, results = both_results
    names = [n for n, m in q.named_modules() if isinstance(m, QUANT_MODULES)]
    rows = results['layers']
    assert sorted(r['name'] for r in rows) == sorted(names) and len(names) > 50
    assert [r['rank'] for r in rows] == list(range(1, len(rows) + 1))
    assert sorted(r['rank_all_but_one'] for r in rows) == list(range(1, len(rows) + 1))
    assert all(r['error_one'] >= 0 and r['error_all_but_one'] >= 0 for r in rows)
    errors = [r['error_one'] for r in rows]
    assert errors == sorted(errors, reverse=True) and errors[0] > 0
    assert results['error_all_quantized'] > 0 and results['images'] == 2
    by_name = {r['name']: r for r in rows}
    assert (by_name[LAYER]['w_bits'], by_name[LAYER]['a_bits']) == (4, 8)
    assert by_name['backbone.stem.rbr_reparam']['w_bits'] == 8  # first layer: first_last_bits
    for r in rows:
        assert r['recovered'] == pytest.approx(results['error_all_quantized']
                                               - r['error_all_but_one'])
    # the model comes back as it went in
    assert [q_.enabled for _, q_ in iter_quantizers(q)] == flags


def test_two_bit_layer_is_more_sensitive_than_eight_bit(model_fp, images) -> None:
    errors = {}
    for bits in (2, 8):
        q = quantized(model_fp, images, w_bits=8, a_bits=8,
                      overrides=[dict(pattern=LAYER, w_bits=bits, a_bits=bits)])
        rows = layer_sensitivity(q, images, metric='mse', mode='one', progress=False)['layers']
        row = next(r for r in rows if r['name'] == LAYER)
        assert (row['w_bits'], row['a_bits']) == (bits, bits)
        assert 'error_all_but_one' not in row
        errors[bits] = row['error_one']
    assert errors[2] > 10 * errors[8] > 0


def test_prefix_replay_gives_the_plain_forward_numbers(model_fp, images) -> None:
    small = [torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))]
    q = quantized(model_fp, small, w_bits=4, a_bits=4)
    one_image = small
    fast = layer_sensitivity(q, one_image, metric='mse', mode='all-but-one', progress=False)
    slow = layer_sensitivity(q, one_image, metric='mse', mode='all-but-one', replay=False,
                             progress=False)
    for a, b in zip(fast['layers'], slow['layers']):
        assert a['name'] == b['name']
        assert a['error_all_but_one'] == pytest.approx(b['error_all_but_one'], rel=1e-6, abs=1e-12)


def test_tool_choices_match_the_library() -> None:
    import importlib.util
    from detptq.analysis import sensitivity
    spec = importlib.util.spec_from_file_location('tool', ROOT / 'tools/analyze_sensitivity.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert (tool.METRICS, tool.MODES) == (sensitivity.METRICS, sensitivity.MODES)


def test_mse_and_bad_arguments() -> None:
    fp = (torch.zeros(2, 3, 5), torch.zeros(2, 3, 4))
    q = (torch.full((2, 3, 5), 0.1), torch.full((2, 3, 4), 2.0))
    assert dense_mse(fp, q).tolist() == pytest.approx([0.01 + 4.0] * 2)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1))
    with pytest.raises(ValueError, match='mode'):
        layer_sensitivity(model, [torch.zeros(1, 3, 4, 4)], mode='some')
    with pytest.raises(ValueError, match='metric'):
        layer_sensitivity(model, [torch.zeros(1, 3, 4, 4)], metric='kl')
    with pytest.raises(ValueError, match='no quant layers'):
        layer_sensitivity(model, [torch.zeros(1, 3, 4, 4)])


def test_json_png_and_table(both_results, tmp_path) -> None:
    _, _, results = both_results
    save_sensitivity(results, str(tmp_path / 's.json'), str(tmp_path / 's.png'), dict(a=1))
    saved = json.loads((tmp_path / 's.json').read_text())
    assert saved['meta'] == dict(a=1) and len(saved['layers']) == len(results['layers'])
    assert (tmp_path / 's.png').stat().st_size > 10_000
    table = format_top_table(results, top=3).splitlines()
    assert len(table) == 2 + 3 + 1 and results['layers'][0]['name'] in table[2]


# -- the command-line tool on a tiny generated data set ---------------------
TINY_DATA = dict(seed=1, num_train=2, num_val=2, num_calib=3, img_size=64)
CONFIG = """
_base_ = ['{base}']
data_root = '{data}/'
demo_data = {demo}
load_from = '{ckpt}'
_pipe = [dict(type='LoadImageFromFile'),
         dict(type='YOLOLetterbox', scale=(64, 64), pad_val=114),
         dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape',
              'img_shape', 'scale_factor', 'pad_param'))]
calib_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=_pipe))
"""


def run_tool(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / 'tools/analyze_sensitivity.py'), *args],
                          capture_output=True, text=True, cwd=str(tmp), timeout=300,
                          env={**os.environ, 'OMP_NUM_THREADS': '1'})


def test_tool_end_to_end(tmp_path, model_fp, both_results) -> None:
    from detptq.datasets.demo_data import ensure_demo_dataset
    ensure_demo_dataset(tmp_path / 'data', **TINY_DATA)
    deploy = copy.deepcopy(model_fp)
    deploy.switch_to_deploy()  # a deploy-form checkpoint: the tool must fuse before loading
    ckpt = tmp_path / 'tiny.pth'
    save_checkpoint_file({'state_dict': deploy.state_dict()}, str(ckpt))
    cfg = tmp_path / 'sens.py'
    cfg.write_text(CONFIG.format(base=ROOT / 'configs/demo/yolov6n_demo_minmax_w4a8.py',
                                 data=tmp_path / 'data', demo=TINY_DATA, ckpt=ckpt))
    work = tmp_path / 'work'
    proc = run_tool(tmp_path, str(cfg), '--work-dir', str(work), '--num-images', '2',
                    '--mode', 'one', '--top', '5', '--no-progress')
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((work / 'sensitivity.json').read_text())
    assert result['images'] == 2 and result['meta']['num_images'] == 2
    q_names = [n for n, m in both_results[0].named_modules() if isinstance(m, QUANT_MODULES)]
    assert sorted(r['name'] for r in result['layers']) == sorted(q_names)
    assert all(r['error_one'] >= 0 for r in result['layers'])
    assert result['layers'][0]['error_one'] > 0  # the checkpoint's random head was loaded
    assert (work / 'sensitivity.png').is_file()
    assert result['layers'][0]['name'] in proc.stdout and 'all layers quantized' in proc.stdout

    bad = run_tool(tmp_path, str(cfg), '--num-images', '0')
    assert bad.returncode == 2 and '--num-images: 0 is not a positive integer' in bad.stderr
    bad = run_tool(tmp_path, str(cfg), '--metric', 'kl')
    assert bad.returncode == 2 and "invalid choice: 'kl'" in bad.stderr
    bad = run_tool(tmp_path, str(tmp_path / 'none.py'))
    assert bad.returncode == 2 and bad.stderr.strip().startswith(
        'analyze_sensitivity.py: error: config file') and 'does not exist' in bad.stderr
