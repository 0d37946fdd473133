"""Bad inputs, part 2: stale reuse and interrupted runs of a finished DetPTQ run.

Every case drives the real tools as subprocesses on a tiny generated data set
(96 px, 6 val + 4 calibration images) and a random-weight YOLOv6-N. Reuse
cases check both directions: a changed input is recomputed (log line naming
the part + a changed artefact) and an unchanged one is reused.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from reuse_helpers import (assert_clean_error, combined, run_tool, run_until,  # noqa: E402
                           tiny_env, tool_env)


@pytest.fixture(scope='module')
def env(tmp_path_factory):
    """Tiny data, a checkpoint, the DetPTQ config and a finished DetPTQ run."""
    env = tiny_env(tmp_path_factory.mktemp('reuse'))
    tmp = env['tmp']
    proc = run_tool('quantize.py', [env['detptq'], '--work-dir', tmp / 'base'], tmp, tmp / 'cache')
    assert proc.returncode == 0, combined(proc)[-3000:]
    return dict(env, base=tmp / 'base', base_log=combined(proc))


def rerun_in_copy(env, name: str, *extra_args, config=None) -> tuple:
    """Copy the finished base run's work dir to ``name`` and run quantize.py there again."""
    work = env['tmp'] / name
    shutil.copytree(env['base'], work)
    proc = run_tool('quantize.py', [config or env['detptq'], '--work-dir', work, *extra_args],
                    env['tmp'], env['tmp'] / 'cache')
    assert proc.returncode == 0, combined(proc)[-3000:]
    return work, combined(proc)


def changed_parts(log: str, name: str) -> set:
    """The parts a 'NAME is stale (a, b changed)' log line names (empty if there is none)."""
    found = re.search(re.escape(name) + r' is stale \(([^)]*) changed\)', log)
    return set(found.group(1).split(', ')) if found else set()


def units_in(log: str) -> int:
    return int(log.split('DetPTQReconstructor: ')[1].split(' units')[0])


def test_unchanged_rerun_reuses_everything_and_recomputes_a_truncated_unit(env):
    work = env['tmp'] / 'truncated'
    shutil.copytree(env['base'], work)
    unit = work / 'recon' / 'recon_state' / 'unit_002.pth'
    unit.write_bytes(unit.read_bytes()[:1000])
    proc = run_tool('quantize.py', [env['detptq'], '--work-dir', work], env['tmp'],
                    env['tmp'] / 'cache')
    log = combined(proc)
    assert proc.returncode == 0, log[-3000:]
    assert 'unit_002.pth is unreadable' in log and 'recomputing this unit' in log
    assert 'FP metrics from an earlier run' in log
    assert 'reusing p search results' in log
    # every other unit is loaded, not optimised again
    assert log.count('resumed from') == units_in(log) - 1
    assert (work / 'quantized.pth').read_bytes() == (env['base'] / 'quantized.pth').read_bytes()


def test_w_bits_change_recomputes_p_search_and_every_unit(env):
    work, log = rerun_in_copy(env, 'w8', '--cfg-options', 'quant_cfg.w_bits=8')
    assert changed_parts(log, 'p_search.json') == {'quant_cfg'}
    assert 'quant_cfg' in changed_parts(log, 'unit_000.pth')
    assert 'resumed from' not in log
    assert 'FP metrics from an earlier run' in log  # the FP model did not change
    result = json.loads((work / 'result.json').read_text())
    assert (result['w_bits'], result['a_bits']) == (8, 8)
    assert (work / 'quantized.pth').read_bytes() != (env['base'] / 'quantized.pth').read_bytes()


def test_recon_cfg_change_recomputes_units_but_reuses_the_p_search(env):
    work, log = rerun_in_copy(env, 'iters3', '--cfg-options', 'recon_cfg.iters=3')
    assert 'reusing p search results' in log
    assert changed_parts(log, 'unit_000.pth') == {'recon_cfg'}
    assert 'resumed from' not in log
    assert (work / 'quantized.pth').read_bytes() != (env['base'] / 'quantized.pth').read_bytes()


def test_p_search_settings_change_recomputes_the_search(env):
    work, log = rerun_in_copy(env, 'psearch', '--cfg-options', 'recon_cfg.p_search_images=4')
    assert changed_parts(log, 'p_search.json') == {'p_search_images'}
    meta = json.loads((work / 'recon' / 'p_search.json').read_text())['meta']
    old = json.loads((env['base'] / 'recon' / 'p_search.json').read_text())['meta']
    assert meta['images'] == 4 and old['images'] == 2
    assert meta['fingerprint'] != old['fingerprint']


def test_other_calibration_images_recompute_p_search_and_units(env):
    ann = env['data'] / 'annotations' / 'instances_calib.json'
    original = ann.read_bytes()
    coco = json.loads(original)
    coco['images'] = coco['images'][::-1]  # same loader config, other image order
    try:
        ann.write_text(json.dumps(coco))
        work, log = rerun_in_copy(env, 'calib')
    finally:
        ann.write_bytes(original)
    assert changed_parts(log, 'p_search.json') == {'calib_images'}
    assert 'calib_images' in changed_parts(log, 'unit_000.pth')
    assert 'resumed from' not in log


def test_quantized_checkpoint_given_to_test_py_points_to_the_right_tools(env):
    quantized = env['base'] / 'quantized.pth'
    proc = run_tool('test.py', [env['detptq'], quantized], env['tmp'], env['tmp'] / 'cache')
    assert_clean_error(proc, 'is a quantized checkpoint (written by tools/quantize.py)',
                'tools/export_onnx.py')


def test_resume_after_kills_in_p_search_reconstruction_and_final_write(env):
    """Kill during the p search, then during reconstruction, then while writing quantized.pth:
    the fourth run finishes with the uninterrupted run's bytes and all invocations' time."""
    tmp, work, cache = env['tmp'], env['tmp'] / 'killed', env['tmp'] / 'cache'
    args = [env['detptq'], '--work-dir', work]
    run_until('quantize.py', args, tmp, cache, 'DetPTQReconstructor:')
    assert not (work / 'recon' / 'p_search.json').exists()  # killed inside the search
    run_until('quantize.py', args, tmp, cache, 'recon [3/')
    states = sorted(os.listdir(work / 'recon' / 'recon_state'))
    assert (work / 'recon' / 'p_search.json').exists() and 2 <= len(states) < units_in(
        env['base_log'])
    proc = subprocess.run([sys.executable, str(Path(__file__).parent / 'kill_while_writing.py'),
                           *map(str, args)], capture_output=True, text=True, cwd=str(tmp),
                          env=tool_env(cache), timeout=600)
    assert proc.returncode == -9, combined(proc)[-3000:]
    assert not (work / 'quantized.pth').exists() and not (work / 'result.json').exists()
    proc = run_tool('quantize.py', args, tmp, cache)
    assert proc.returncode == 0, combined(proc)[-3000:]
    assert (work / 'quantized.pth').read_bytes() == (env['base'] / 'quantized.pth').read_bytes()
    result = json.loads((work / 'result.json').read_text())
    state = json.loads((work / 'run_state.json').read_text())
    assert result['invocations'] == 4 == len(state['invocations'])
    earlier = sum(inv['seconds'] for inv in state['invocations'][:3])
    # the last invocation alone is shorter than what the result reports
    assert earlier > 0 and result['wall_time_s'] > earlier


