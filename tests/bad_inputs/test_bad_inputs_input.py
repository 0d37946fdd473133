"""Bad input to the real tools: one clear sentence, exit status 2, no traceback, user files untouched.

Every case here fails before any model work (the checks run first), so each
costs one tool start-up. Issue 11, the data-safety / bad-value / one-sentence half.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import DETPTQ, MINMAX, ROOT, TINY_DATA, assert_clean_error, run_tool, tree_digest


def user_folder(tmp, name: str):
    """A folder of the user's own files (not demo data)."""
    folder = tmp / name
    (folder / 'photos').mkdir(parents=True)
    (folder / 'photos' / 'holiday.jpg').write_bytes(b'\xff\xd8\xff' + bytes(range(256)) * 4)
    (folder / 'notes.txt').write_text('mine, do not delete\n')
    return folder


# --- data safety ---------------------------------------------------------------------------

def test_demo_config_with_data_root_at_a_user_folder_keeps_the_users_files(tiny) -> None:
    folder = user_folder(tiny.tmp, 'user_photos')
    before = tree_digest(folder)
    proc = run_tool('quantize.py', tiny.config('user_root'), '--data-root', folder,
                    '--work-dir', tiny.tmp / 'w_user_root', tmp=tiny.tmp)
    assert_clean_error(proc, 'quantize.py', str(folder), 'make_demo_data.py --out')
    assert tree_digest(folder) == before


def test_typo_data_root_is_refused_and_nothing_is_generated(tiny) -> None:
    typo = tiny.tmp / 'dmeo_data'
    proc = run_tool('test.py', tiny.config('typo'), tiny.ckpt, '--data-root', typo,
                    '--work-dir', tiny.tmp / 'w_typo', tmp=tiny.tmp)
    assert_clean_error(proc, 'test.py', str(typo), 'does not exist',
                       f'make_demo_data.py --out {typo}')
    assert not typo.exists()


def test_default_demo_root_holding_user_files_is_refused(tiny) -> None:
    # a config that keeps the demo default data/demo/ reads $DETPTQ_DEMO_DATA
    folder = user_folder(tiny.tmp, 'env_root')
    before = tree_digest(folder)
    cfg = tiny.tmp / 'default_root.py'
    cfg.write_text(f"_base_ = ['{ROOT / MINMAX}']\nload_from = '{tiny.ckpt}'\n")
    proc = run_tool('quantize.py', cfg, '--work-dir', tiny.tmp / 'w_env', tmp=tiny.tmp,
                    env={'DETPTQ_DEMO_DATA': str(folder)})
    # not generated into (not empty, not a generated set): used as the user's data, found lacking
    assert_clean_error(proc, 'quantize.py', str(folder), 'does not exist')
    assert tree_digest(folder) == before


def test_make_demo_data_refuses_a_user_folder(tiny) -> None:
    folder = user_folder(tiny.tmp, 'user_out')
    before = tree_digest(folder)
    proc = run_tool('make_demo_data.py', '--out', folder, '--num-train', 1, '--num-val', 1,
                    '--num-calib', 1, '--img-size', 64, tmp=tiny.tmp)
    assert_clean_error(proc, 'make_demo_data.py', str(folder), 'refusing')
    assert tree_digest(folder) == before


def test_make_demo_data_refuses_a_demo_set_with_a_foreign_file(tiny) -> None:
    data = tiny.copy_data('with_foreign')
    (data / 'images' / 'val' / 'my_photo.jpg').write_bytes(b'\xff\xd8\xffmine')
    (data / 'images' / 'val' / '000001.jpg').unlink()  # something to repair
    before = tree_digest(data)
    proc = run_tool('make_demo_data.py', '--out', data, *_tiny_args(), tmp=tiny.tmp)
    assert_clean_error(proc, 'make_demo_data.py', str(data), 'images/val/my_photo.jpg')
    assert tree_digest(data) == before


def test_partially_deleted_demo_set_is_rebuilt_byte_identical_with_a_warning(tiny) -> None:
    data = tiny.copy_data('partial')
    before = tree_digest(data)
    (data / 'images' / 'val' / '000002.jpg').unlink()
    proc = run_tool('make_demo_data.py', '--out', data, *_tiny_args(), tmp=tiny.tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert 'incomplete' in log and 'images/val/000002.jpg' in log and 'WARNING' in log
    assert tree_digest(data) == before


def test_demo_set_with_other_settings_needs_force(tiny) -> None:
    data = tiny.copy_data('other_seed')
    before = tree_digest(data)
    args = [a if a != TINY_DATA['seed'] else 7 for a in _tiny_args()]
    proc = run_tool('make_demo_data.py', '--out', data, *args, tmp=tiny.tmp)
    assert_clean_error(proc, 'make_demo_data.py', str(data), 'seed=1', 'seed=7', '--force')
    assert tree_digest(data) == before
    forced = run_tool('make_demo_data.py', '--out', data, *args, '--force', tmp=tiny.tmp)
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert json.loads((data / 'manifest.json').read_text())['seed'] == 7


def test_make_demo_data_refuses_a_file_as_output(tiny) -> None:
    target = tiny.tmp / 'a_file'
    target.write_text('x')
    proc = run_tool('make_demo_data.py', '--out', target, tmp=tiny.tmp)
    assert_clean_error(proc, 'make_demo_data.py', str(target), 'is a file')
    assert target.read_text() == 'x'


def _tiny_args() -> list:
    return ['--seed', TINY_DATA['seed'], '--num-train', TINY_DATA['num_train'],
            '--num-val', TINY_DATA['num_val'], '--num-calib', TINY_DATA['num_calib'],
            '--num-tune', TINY_DATA['num_tune'], '--img-size', TINY_DATA['img_size'],
            '--workers', 1]


# --- bad values, refused before any work ----------------------------------------------------

BAD_VALUES = [
    ('w_bits_33', MINMAX, [], 'quant_cfg = dict(w_bits=33)\n', ['w_bits=33']),
    ('a_bits_1', MINMAX, [], 'quant_cfg = dict(a_bits=1)\n', ['a_bits=1']),
    ('calib_zero', MINMAX, ['--num-calib-images', '0'], '', ['--num-calib-images=0']),
    ('calib_negative', MINMAX, ['--num-calib-images', '-3'], '', ['--num-calib-images=-3']),
    ('calib_too_many', MINMAX, ['--num-calib-images', '5'], '', ['instances_calib.json',
                                                                 'gives 4 images']),
    ('recon_type', DETPTQ, [], "recon_cfg = dict(type='NoSuchReconstructor')\n",
     ['recon_cfg.type=', 'NoSuchReconstructor']),
    ('calibrator_type', MINMAX, [],
     "quant_cfg = dict(act=dict(calibrator=dict(_delete_=True, type='NoSuchCalibrator')))\n",
     ['quant_cfg.act.calibrator.type=', 'NoSuchCalibrator']),
    ('quantizer_type', MINMAX, [], "quant_cfg = dict(weight=dict(type='NoSuchQuantizer'))\n",
     ['quant_cfg.weight.type=', 'NoSuchQuantizer']),
    ('drop_prob', DETPTQ, [], 'recon_cfg = dict(drop_prob=1.5)\n', ['drop_prob=1.5']),
    ('iters_zero', DETPTQ, [], 'recon_cfg = dict(iters=0)\n', ['iters=0']),
    ('lr_negative', DETPTQ, [], 'recon_cfg = dict(lr_round=-0.1)\n', ['lr_round=-0.1']),
    ('recon_key_typo', DETPTQ, [], 'recon_cfg = dict(itres=5)\n', ['recon_cfg', 'itres']),
    ('p_search_images', DETPTQ, [], 'recon_cfg = dict(p_search_images=0)\n',
     ['p_search_images=0']),
    ('model_type', MINMAX, [], "model = dict(type='NoSuchDetector')\n",
     ['model.type=', 'NoSuchDetector']),
    ('transform_type', MINMAX, [],
     "calib_dataloader = dict(dataset=dict(pipeline=[dict(type='NoSuchTransform')]))\n",
     ['calib_dataloader.dataset.pipeline[0].type=', 'NoSuchTransform']),
]


@pytest.mark.parametrize('name,base,args,extra,fragments', BAD_VALUES,
                         ids=[case[0] for case in BAD_VALUES])
def test_bad_value_is_refused_before_any_work(tiny, name, base, args, extra, fragments) -> None:
    work = tiny.tmp / f'w_{name}'
    proc = run_tool('quantize.py', tiny.config(name, base, extra), '--work-dir', work, *args,
                    tmp=tiny.tmp)
    assert_clean_error(proc, 'quantize.py', *fragments)
    assert 'eval FP' not in proc.stdout + proc.stderr
    assert not (work / 'result.json').exists()


# --- one sentence instead of a traceback ----------------------------------------------------

def test_missing_config(tiny) -> None:
    proc = run_tool('quantize.py', tiny.tmp / 'nope.py', tmp=tiny.tmp)
    assert_clean_error(proc, 'quantize.py', 'nope.py', 'does not exist')


def test_syntax_error_config_names_file_and_line(tiny) -> None:
    cfg = tiny.config('syntax', extra='quant_cfg = dict(w_bits=4)\nx = = 1\n')
    line = cfg.read_text().splitlines().index('x = = 1') + 1
    proc = run_tool('test.py', cfg, tiny.ckpt, tmp=tiny.tmp)
    assert_clean_error(proc, 'test.py', str(cfg), f'line {line}')


@pytest.mark.parametrize('damage', ['truncated', 'random', 'empty'])
def test_damaged_checkpoint(tiny, damage) -> None:
    ckpt = tiny.tmp / f'{damage}.pth'
    raw = tiny.ckpt.read_bytes()
    ckpt.write_bytes({'truncated': raw[:len(raw) // 2], 'random': bytes(range(256)) * 64,
                      'empty': b''}[damage])
    proc = run_tool('test.py', tiny.config(f'ckpt_{damage}'), ckpt,
                    '--work-dir', tiny.tmp / f'w_ckpt_{damage}', tmp=tiny.tmp)
    assert_clean_error(proc, 'test.py', str(ckpt))


def test_corrupt_annotation_json_is_named(tiny) -> None:
    data = tiny.copy_data('bad_json')
    ann = data / 'annotations' / 'instances_val.json'
    ann.write_bytes(ann.read_bytes()[:100])
    proc = run_tool('test.py', tiny.config('bad_json', data=data), tiny.ckpt,
                    '--work-dir', tiny.tmp / 'w_bad_json', tmp=tiny.tmp)
    assert_clean_error(proc, 'test.py', str(ann), 'not valid JSON')


@pytest.mark.parametrize('damage', ['missing', 'random'])
def test_missing_or_corrupt_images_are_named_and_counted(tiny, damage) -> None:
    data = tiny.copy_data(f'img_{damage}')
    (data / 'manifest.json').unlink()  # the user's own data set: not repaired by the generator
    for name in ('000001.jpg', '000003.jpg'):
        image = data / 'images' / 'calib' / name
        if damage == 'missing':
            image.unlink()
        else:
            image.write_bytes(bytes(range(7, 200)))
    proc = run_tool('quantize.py', tiny.config(f'img_{damage}', data=data),
                    '--work-dir', tiny.tmp / f'w_img_{damage}', tmp=tiny.tmp)
    reason = 'missing' if damage == 'missing' else 'not an image file'
    assert_clean_error(proc, 'quantize.py', '2 of the 4 images', '000001.jpg', reason)


def test_empty_calibration_set(tiny) -> None:
    data = tiny.copy_data('empty_calib')
    ann = data / 'annotations' / 'instances_calib.json'
    coco = json.loads(ann.read_text())
    coco['images'], coco['annotations'] = [], []
    ann.write_text(json.dumps(coco))
    proc = run_tool('quantize.py', tiny.config('empty_calib', data=data),
                    '--work-dir', tiny.tmp / 'w_empty_calib', tmp=tiny.tmp)
    assert_clean_error(proc, 'quantize.py', 'calib_dataloader', 'lists no images')


def test_work_dir_that_cannot_be_written(tiny) -> None:
    blocker = tiny.tmp / 'blocker'
    blocker.write_text('a file where a folder should be')
    proc = run_tool('quantize.py', tiny.config('ro_work'), '--work-dir', blocker / 'run',
                    tmp=tiny.tmp)
    assert_clean_error(proc, 'quantize.py', 'work dir', str(blocker / 'run'), 'not writable')


def test_export_folder_that_cannot_be_written(tiny) -> None:
    blocker = tiny.tmp / 'blocker_export'
    blocker.write_text('a file where a folder should be')
    proc = run_tool('export_onnx.py', tiny.config('ro_export'), '--checkpoint', tiny.ckpt,
                    '--out', blocker / 'sub' / 'model.onnx', tmp=tiny.tmp)
    assert_clean_error(proc, 'export_onnx.py', 'export folder', 'not writable')


def test_tune_split_is_evaluated_on_request(tiny) -> None:
    cfg = tiny.config('tune_split', extra="eval_split = 'tune'\n")
    out = tiny.tmp / 'tune_metrics.json'
    proc = run_tool('test.py', cfg, tiny.ckpt, '--work-dir', tiny.tmp / 'w_tune',
                    '--out', out, tmp=tiny.tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'instances_tune.json' in proc.stdout + proc.stderr
    assert 'mAP' in json.dumps(json.loads(out.read_text())['metrics'])
    bad = run_tool('test.py', tiny.config('tune_typo', extra="eval_split = 'tuen'\n"), tiny.ckpt,
                   tmp=tiny.tmp)
    assert_clean_error(bad, 'test.py', "eval_split='tuen'")


def test_unexpected_errors_keep_their_traceback(tmp_path) -> None:
    code = ('import sys; from detptq.utils.cli import run_tool, UserInputError\n'
            'run_tool(lambda: 1 / 0, "t.py") if sys.argv[1] == "bug" else '
            'run_tool(lambda: (_ for _ in ()).throw(UserInputError("bad value x=1")), "t.py")\n')
    env = {'PYTHONPATH': str(ROOT)}
    bug = subprocess.run([sys.executable, '-c', code, 'bug'], capture_output=True, text=True,
                         env=env, cwd=str(tmp_path))
    assert bug.returncode == 1 and 'Traceback' in bug.stderr and 'ZeroDivisionError' in bug.stderr
    user = subprocess.run([sys.executable, '-c', code, 'user'], capture_output=True, text=True,
                          env=env, cwd=str(tmp_path))
    assert_clean_error(user, 't.py', 'bad value x=1')
