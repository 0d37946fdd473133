"""Bad inputs, part 3: FP-metric caching, wrong or unreadable weights, untrusted pickles.

Every case drives the real tools as subprocesses on the tiny generated data set
of part 2, without a finished quantization run (split from part 2 so the two
files run on separate test workers).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from reuse_helpers import (MINMAX_BASE, assert_clean_error, combined,  # noqa: E402
                           make_checkpoint, run_tool, tiny_env, write_config, write_malicious,
                           write_v7_config)


@pytest.fixture(scope='module')
def env(tmp_path_factory):
    """Tiny data, a checkpoint and the DetPTQ config (nothing run yet)."""
    return tiny_env(tmp_path_factory.mktemp('checkpoints'))


def test_fp_metrics_follow_annotation_and_checkpoint_bytes(env):
    tmp = env['tmp']
    data = tmp / 'data_fp'
    shutil.copytree(env['data'], data)
    ckpt = shutil.copy(env['ckpt'], tmp / 'fp_copy.pth')
    config = write_config(tmp / 'minmax.py', MINMAX_BASE, data, Path(ckpt))
    cache = tmp / 'cache_fp'

    def quantize() -> str:
        proc = run_tool('quantize.py', [config, '--work-dir', tmp / 'mm'], tmp, cache)
        assert proc.returncode == 0, combined(proc)[-3000:]
        return combined(proc)

    def entries() -> int:
        return len(list((cache / 'fp_metrics').glob('*.json')))

    assert 'evaluating the FP model (not cached yet)' in quantize()
    assert 'FP metrics from an earlier run' in quantize() and entries() == 1
    ann = data / 'annotations' / 'instances_val.json'
    coco = json.loads(ann.read_text())
    coco['annotations'] = coco['annotations'][: len(coco['annotations']) // 2]
    ann.write_text(json.dumps(coco))  # edited in place: same path, same config
    assert 'evaluating the FP model (annotations changed)' in quantize() and entries() == 2
    before = Path(ckpt).read_bytes()
    make_checkpoint(Path(ckpt), seed=1)  # other weights at the same path
    assert Path(ckpt).read_bytes() != before
    log = quantize()
    assert 'evaluating the FP model (checkpoint changed)' in log and entries() == 3


def test_wrong_family_checkpoint_names_keys_and_the_right_config(env):
    v7 = write_v7_config(env['tmp'] / 'v7.py', env['data'], env['ckpt'])
    proc = run_tool('test.py', [v7, env['ckpt']], env['tmp'], env['tmp'] / 'cache')
    assert_clean_error(proc, "does not fit the config's model", 'fp.pth', 'YOLOv6-N',
                       'configs/_base_/models/yolov6_n.py')
    assert 'coco/bbox_mAP' not in combined(proc)  # nothing was evaluated


@pytest.mark.parametrize('kind', ['truncated', 'random'])
def test_unreadable_checkpoint_is_one_sentence_naming_the_file(env, kind):
    bad = env['tmp'] / f'{kind}.pth'
    content = env['ckpt'].read_bytes()
    bad.write_bytes(content[:len(content) // 2] if kind == 'truncated' else os.urandom(5000))
    for tool, args in (('test.py', [env['detptq'], bad]),
                       ('quantize.py', [env['detptq'], '--checkpoint', bad,
                                        '--work-dir', env['tmp'] / f'w_{kind}'])):
        proc = run_tool(tool, args, env['tmp'], env['tmp'] / 'cache')
        assert_clean_error(proc, f'{kind}.pth', 'is not a PyTorch checkpoint')


def malicious_cases(env):
    """(tool, args, file) triples that each hand a crafted pickle to one loading tool."""
    tmp, cfg = env['tmp'], env['detptq']
    evil_pth = tmp / 'evil.pth'
    evil_pt = tmp / 'evil.pt'
    return {
        'publish_ckpt': ('publish_ckpt.py', [cfg, evil_pth, tmp / 'pub.pth'], evil_pth, True),
        'test': ('test.py', [cfg, evil_pth], evil_pth, True),
        'test_pt_release': ('test.py', [cfg, evil_pt], evil_pt, False),
        'quantize': ('quantize.py', [cfg, '--checkpoint', evil_pth, '--work-dir', tmp / 'ev'],
                     evil_pth, True),
        'export_onnx': ('export_onnx.py', [cfg, '--checkpoint', evil_pth], evil_pth, True),
        'train_resume': ('train.py', [cfg, '--resume', evil_pth, '--work-dir', tmp / 'tr'],
                         evil_pth, True),
    }


@pytest.mark.parametrize('case', ['publish_ckpt', 'test', 'test_pt_release', 'quantize',
                                  'export_onnx', 'train_resume'])
def test_malicious_pickle_never_runs(env, case):
    tool, args, evil, torch_format = malicious_cases(env)[case]
    marker = env['tmp'] / f'marker_{case}'
    write_malicious(evil, marker, torch_format)
    proc = run_tool(tool, args, env['tmp'], env['tmp'] / 'cache')
    assert not marker.exists(), f'{tool} ran the payload of {evil}'
    assert_clean_error(proc, evil.name)


def test_train_resume_reads_the_runners_own_checkpoint_without_trusting_it(env):
    """--resume needs only weights-only loading plus the allow-listed mmengine classes."""
    tmp = env['tmp']
    config = write_config(tmp / 'train.py', 'configs/demo/yolov6n_demo.py', env['data'],
                          env['ckpt'], 'load_from = None\n')
    work = tmp / 'train_run'
    first = run_tool('train.py', [config, '--work-dir', work, '--cfg-options',
                                  'train_cfg.max_epochs=1'], tmp, tmp / 'cache')
    assert first.returncode == 0, combined(first)[-3000:]
    assert (work / 'epoch_1.pth').exists()
    again = run_tool('train.py', [config, '--work-dir', work, '--resume', '--cfg-options',
                                  'train_cfg.max_epochs=2'], tmp, tmp / 'cache')
    assert again.returncode == 0, combined(again)[-3000:]
    assert 'resumed epoch: 1' in combined(again)
    assert (work / 'epoch_2.pth').exists()
