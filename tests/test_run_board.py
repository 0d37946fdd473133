"""tools/run_board.py: the board/ablation matrices, their configs, skip-by-fingerprint and commit."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from detptq.analysis import board_runs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def board():
    spec = importlib.util.spec_from_file_location('run_board', ROOT / 'tools/run_board.py')
    module = importlib.util.module_from_spec(spec)
    sys.modules['run_board'] = module  # its dataclass looks its module up while being built
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop('run_board', None)


def test_board_matrix_seeds_bits_and_one_schedule(board):
    specs = board.build_matrix('board', 'val', None, {})
    # 3 seeds at W4A8 and W4A4, one at W8A8
    assert len(specs) == len(board_runs.BOARD_METHODS) * (3 + 3 + 1)
    assert len({s.name for s in specs}) == len(specs)
    w8 = [s for s in specs if s.bits == (8, 8)]
    assert {s.seed for s in w8} == {0} and {s.seed for s in specs if s.bits == (4, 4)} == {0, 1, 2}
    schedules = set()
    for s in specs:
        cfg = board_runs.load_config(s.config)
        cfg.merge_from_dict(s.cfg_options)
        assert cfg.num_calib_images == 128 and cfg.calib_seed == s.seed
        assert (cfg.quant_cfg.w_bits, cfg.quant_cfg.a_bits) == s.bits
        if cfg.get('recon_cfg'):
            rc = cfg.recon_cfg
            assert rc.seed == s.seed and rc.iters >= 1000
            schedules.add((rc.iters, rc.batch_size, rc.lr_round, rc.lr_act))
        else:
            assert s.name.split('_')[3] in ('minmax', 'mse', 'kl', 'cfws')
    assert len(schedules) == 1  # one schedule and learning rate for every method
    for method in ('detptq_cfws', 'brecq_cfws'):
        assert board_runs.load_config(f'configs/board/{method}.py').quant_cfg.cfws == 'reparam'
    # seed 0 and seed 1 of a method are different specs; the same spec hashes the same
    again = board.build_matrix('board', 'val', None, {})
    assert [s.fingerprint for s in again] == [s.fingerprint for s in specs]
    assert specs[0].fingerprint != specs[1].fingerprint


def test_tune_split_and_ablation_variants_change_one_option_each(board):
    specs = board.build_matrix('ablation', 'tune', None, {})
    assert len(specs) == 2 * len(board_runs.ABLATION)
    for s in specs:
        assert s.cfg_options['test_dataloader.dataset.ann_file'] == \
            'annotations/instances_tune.json'
        assert s.cfg_options['test_evaluator.ann_file'].endswith(
            'annotations/instances_tune.json')
        base = {k for k in s.cfg_options if not k.startswith('recon_cfg.p') and
                k not in ('recon_cfg.mode',)}
        extra = set(s.cfg_options) - base
        # round 2 changes one option of the BRECQ-base variant, round 3's ODOL axes one
        # option of the round-2 winner (BRECQ base + p for the loss only)
        assert len(extra) == (0 if s.variant == 'detptq' else
                              3 if s.variant.startswith('brecq_base_p_loss_only_') else
                              2 if s.variant.startswith('brecq_base_') else 1), s.name
    assert 'test_dataloader.dataset.ann_file' not in \
        board.build_matrix('board', 'val', [0], {})[0].cfg_options


def test_finished_runs_are_skipped_and_committed(board, tmp_path):
    spec = board.build_matrix('board', 'val', [0], {})[0]
    work, committed = tmp_path / 'work' / spec.name, tmp_path / 'results' / 'runs' / spec.name
    work.mkdir(parents=True)
    (work / 'result.json').write_text(json.dumps(dict(
        model='yolov6n_demo', method='minmax', w_bits=4, a_bits=8,
        fp_metrics=dict(mAP=0.6), quant_metrics=dict(mAP=0.5))))
    (work / 'run_spec.json').write_text(json.dumps(dict(fingerprint='other')))
    assert not board.finished_in(str(work), spec)  # made for another spec
    (work / 'run_spec.json').write_text(json.dumps(dict(fingerprint=spec.fingerprint)))
    assert board.finished_in(str(work), spec)
    (work / 'recon').mkdir()
    (work / 'recon' / 'loss_curves.json').write_text(json.dumps(dict(units=[dict(
        unit='backbone.stem', position=0, p=2.0, curve=[[0, 1.0], [25, 0.5], [49, 0.4]])])))
    board.commit_run(str(work), str(committed), git_add=False)
    assert board.finished_in(str(committed), spec)
    assert (committed / 'loss_curves.json').is_file()
    png = board.plot_loss_curves(str(committed))
    assert Path(png).read_bytes()[:4] == b'\x89PNG'
    proc = subprocess.run([sys.executable, str(ROOT / 'tools/run_board.py'), '--dry-run',
                           '--seeds', '0', '--only', 'w4a8_s0_val$', '--root',
                           str(tmp_path / 'work'), '--results', str(tmp_path / 'results')],
                          capture_output=True, text=True, check=True, cwd=ROOT)
    lines = proc.stdout.splitlines()
    n_methods = len(board_runs.BOARD_METHODS)  # one W4A8 seed-0 run each, then a summary
    assert f'{spec.name}: done (committed)' in lines[0] and len(lines) == n_methods + 1
    assert all('would be starting' in line for line in lines[1:n_methods])
    # the study's table lists every finished run, whatever --only selects
    specs = board.build_matrix('board', 'val', [0], {})
    assert board.finished_folders(specs, str(tmp_path / 'work'),
                                  str(tmp_path / 'results' / 'runs')) == [str(committed)]


def test_fingerprint_is_pinned_and_ignores_runtime_keys(board):
    """A finished run stays recognised while what decides its result is unchanged.

    A deliberate change of a board config or of the lr study may update the pinned
    value, knowing that every committed run of the study then counts as unfinished.
    """
    specs = {s.name: s for s in board.build_matrix('lr', 'tune', None, {})}
    spec = specs['lr_yolov6n_demo_adaround_lr0.001_w4a4_s0_tune']
    assert spec.fingerprint == PINNED_FINGERPRINT
    cfg = board_runs.load_config('configs/board/adaround.py')
    content = board_runs.hashed_content(cfg)
    assert 'env_cfg' not in content and 'default_hooks' not in content
    assert content['test_cfg'] == dict(type='PTQLoop') and 'quant_cfg' in content
    # a runtime key does not change the fingerprint; a result-deciding one does
    base = board_runs.make_spec('lr', 'x', 'configs/board/adaround.py', (4, 4), 0, 'tune', {})
    cfg.merge_from_dict({'env_cfg.dist_cfg.backend': 'gloo', 'log_level': 'DEBUG'})
    assert board_runs.hashed_content(cfg) == content
    cfg.merge_from_dict({'board_recon.lr_round': 0.5})  # a protocol helper, not what runs
    assert board_runs.hashed_content(cfg) == content
    cfg.merge_from_dict({'recon_cfg.iters': 7})
    assert board_runs.hashed_content(cfg) != content
    assert base.fingerprint == board_runs.make_spec('lr', 'x', 'configs/board/adaround.py',
                                                    (4, 4), 0, 'tune', {}).fingerprint
    # the config's own value given again as an option is the same run
    lr = board_runs.load_config('configs/board/adaround.py').recon_cfg.lr_round
    assert base.fingerprint == board_runs.make_spec('lr', 'y', 'configs/board/adaround.py',
                                                    (4, 4), 0, 'tune',
                                                    {'recon_cfg.lr_round': lr}).fingerprint


PINNED_FINGERPRINT = '554a344366c2e9bf9d074c6dcf6e6b302805f6d0'


FAKE_QUANTIZE = '''#!{python}
"""Stands in for python: tools/quantize.py sleeps and writes a result; anything else runs."""
import json, os, sys, time
if not sys.argv[1].endswith('quantize.py'):
    os.execv({python!r}, [{python!r}] + sys.argv[1:])
work = sys.argv[sys.argv.index('--work-dir') + 1]
start = time.time()
time.sleep(1.5)
json.dump(dict(model='yolov6n_demo', method='brecq', w_bits=4, a_bits=4, calib_seed=0,
               fp_metrics=dict(mAP=0.6, AP50=0.8), quant_metrics=dict(mAP=0.5, AP50=0.7)),
          open(os.path.join(work, 'result.json'), 'w'))
json.dump(dict(start=start, end=time.time(), threads=os.environ.get('OMP_NUM_THREADS')),
          open(os.path.join(work, 'fake.json'), 'w'))
'''


def test_jobs_run_at_once_and_git_commit_commits_each_run(tmp_path):
    """--jobs 2 overlaps two runs (cores/2 threads each); --git-commit commits runs and table."""
    fake = tmp_path / 'python'
    fake.write_text(FAKE_QUANTIZE.format(python=sys.executable))
    fake.chmod(0o755)
    results = tmp_path / 'results'
    results.mkdir()
    git = ['git', '-c', 'user.name=t', '-c', 'user.email=t@t']
    subprocess.run(['git', 'init', '-q'], cwd=results, check=True)
    subprocess.run(git + ['commit', '-q', '--allow-empty', '-m', 'start'], cwd=results,
                   check=True)
    (results / 'unrelated.txt').write_text('staged, not part of any run')
    subprocess.run(['git', 'add', 'unrelated.txt'], cwd=results, check=True)
    env = {k: v for k, v in os.environ.items() if k != 'OMP_NUM_THREADS'}
    env.update(GIT_AUTHOR_NAME='t', GIT_AUTHOR_EMAIL='t@t', GIT_COMMITTER_NAME='t',
               GIT_COMMITTER_EMAIL='t@t')
    proc = subprocess.run([sys.executable, str(ROOT / 'tools/run_board.py'), '--study', 'lr',
                           '--only', '_brecq_lr0.0[13]_', '--jobs', '2', '--git-commit',
                           '--root', str(tmp_path / 'work'), '--results', str(results),
                           '--python', str(fake), '--data-root', str(tmp_path / 'no_data')],
                          capture_output=True, text=True, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = sorted((tmp_path / 'work').iterdir())
    assert [r.name for r in runs] == ['lr_yolov6n_demo_brecq_lr0.01_w4a4_s0_tune',
                                      'lr_yolov6n_demo_brecq_lr0.03_w4a4_s0_tune']
    a, b = (json.loads((r / 'fake.json').read_text()) for r in runs)
    assert a['start'] < b['end'] and b['start'] < a['end']  # the two runs overlapped
    assert a['threads'] == b['threads'] == str(max(1, (os.cpu_count() or 1) // 2))
    log = subprocess.run(['git', 'log', '--format=%s'], cwd=results, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    assert sorted(log[1:3]) == ['results: lr_yolov6n_demo_brecq_lr0.01_w4a4_s0_tune: mAP 0.500'
                               ' in 0.0 min', 'results: lr_yolov6n_demo_brecq_lr0.03_w4a4_s0_'
                               'tune: mAP 0.500 in 0.0 min'] and len(log) == 4
    assert log[0] == 'results: lr_study table from the finished runs' and log[3] == 'start'
    committed = subprocess.run(['git', 'ls-files'], cwd=results, capture_output=True,
                               text=True, check=True).stdout.split()
    assert 'runs/lr_yolov6n_demo_brecq_lr0.03_w4a4_s0_tune/result.json' in committed
    tables = {'lr_study.md', 'lr_study.csv', 'lr_study.png', 'lr_study_choice.md'}
    assert tables <= set(committed)
    assert 'No choice yet' in (results / 'lr_study_choice.md').read_text()  # brecq runs only
    status = subprocess.run(['git', 'status', '--porcelain'], cwd=results,
                            capture_output=True, text=True, check=True).stdout
    assert status.strip() == 'A  unrelated.txt'  # a user's staged file is left alone


def test_lr_choice_takes_the_best_mean_over_every_method(board, tmp_path):
    """Only an lr with a run of every method competes; the best mean of those is chosen."""
    maps = {('adaround', 0.01): 0.5, ('brecq', 0.01): 0.5, ('qdrop', 0.01): 0.4,
            ('detptq', 0.01): 0.4, ('adaround', 0.03): 0.6, ('brecq', 0.03): 0.3,
            ('qdrop', 0.03): 0.5, ('detptq', 0.03): 0.5, ('brecq', 0.1): 0.9}
    folders = []
    for (method, lr), value in maps.items():
        folder = tmp_path / f'{method}_{lr}'
        folder.mkdir()
        (folder / 'run_spec.json').write_text(json.dumps(
            dict(cfg_options={'recon_cfg.lr_round': lr})))
        (folder / 'result.json').write_text(json.dumps(
            dict(method=method, quant_metrics=dict(mAP=value))))
        folders.append(str(folder))
    text = board.lr_choice(folders)
    assert '| brecq | 0.500 | 0.300 | 0.900 |' in text
    assert '| mean of all methods | 0.450 | 0.475 | - |' in text
    assert 'lr_round = 0.03 (best mean mAP 0.475' in text  # 0.1 lacks three methods


def test_a_run_with_the_same_merged_config_is_reused_not_rerun(board, tmp_path):
    """The ablation's plain DetPTQ equals the lr study's run at the chosen lr: reuse it."""
    config = board_runs.ABLATION_CONFIG
    lr = board_runs.load_config(config).recon_cfg.lr_round
    ran = board_runs.make_spec('lr', 'detptq_lr', config, (4, 4), 0, 'tune',
                               {'recon_cfg.lr_round': lr})
    same = board_runs.make_spec('ablation', 'detptq', config, (4, 4), 0, 'tune', {})
    other = board_runs.make_spec('ablation', 'p2', config, (4, 4), 0, 'tune',
                        {'recon_cfg.p_search.fixed_p': 2.0})
    assert ran.fingerprint == same.fingerprint != other.fingerprint
    runs = tmp_path / 'runs'
    (runs / ran.name).mkdir(parents=True)
    (runs / ran.name / 'run_spec.json').write_text(json.dumps(board_runs.asdict(ran)))
    (runs / ran.name / 'result.json').write_text(json.dumps(dict(quant_metrics=dict(mAP=0.4))))
    args = board.argparse.Namespace(dry_run=False, commit_results=True, git_commit=False,
                                    git_add=False, max_runs=None, restart_changed=False)
    done, todo = board.pending_runs([same, other], str(tmp_path / 'work'), str(runs), args)
    assert done == [str(runs / same.name)] and [t[1].name for t in todo] == [other.name]
    assert board.finished_in(str(runs / same.name), same)
    stored = json.loads((runs / same.name / 'run_spec.json').read_text())
    assert stored['reused_from'] == ran.name
    assert (runs / same.name / 'result.json').read_text() == \
        (runs / ran.name / 'result.json').read_text()


def test_ablation_choice_takes_the_best_odol_variant_and_reports_a_better_control(tmp_path):
    """Only variants with both bit widths compete; a fixed-p control is reported, not chosen."""
    maps = {('detptq', 4): [0.40, 0.44], ('detptq', 8): [0.60], ('brecq_base', 4): [0.50],
            ('brecq_base', 8): [0.64], ('brecq_base_cumulative', 4): [0.90],
            ('fixed_p2', 4): [0.55], ('fixed_p2', 8): [0.65]}
    folders = []
    for (variant, a_bits), values in maps.items():
        for seed, value in enumerate(values):
            folder = tmp_path / f'{variant}_{a_bits}_{seed}'
            folder.mkdir()
            (folder / 'run_spec.json').write_text(json.dumps(dict(variant=variant)))
            (folder / 'result.json').write_text(json.dumps(
                dict(w_bits=4, a_bits=a_bits, quant_metrics=dict(mAP=value))))
            folders.append(str(folder))
    text = board_runs.ablation_choice(folders)
    assert '| detptq | 0.420 | 0.600 | 0.510 |' in text  # mean of two seeds at W4A4
    assert '| brecq_base_cumulative | 0.900 | - | - |' in text  # W4A8 missing: does not compete
    assert 'Default on this split: `brecq_base` (best mean mAP 0.570' in text
    assert 'The control `fixed_p2` without the ODOL p search scores higher (0.600)' in text


def test_the_detptq_default_is_the_variant_the_committed_ablation_chose():
    """configs/board/detptq.py merges to the chosen variant of the published method."""
    default = board_runs.make_spec('board', 'detptq', 'configs/board/detptq.py', (4, 4), 0,
                                   'tune', {})
    chosen = board_runs.make_spec('ablation', board_runs.DEFAULT_VARIANT,
                                  board_runs.ABLATION_CONFIG, (4, 4), 0, 'tune',
                                  board_runs.ABLATION[board_runs.DEFAULT_VARIANT])
    assert default.fingerprint == chosen.fingerprint
    runs = sorted(str(p) for p in (ROOT / 'results' / 'runs').glob('ablation_*'))
    assert runs, 'no committed ablation runs'
    verdict = board_runs.ablation_choice(runs)
    assert f'Default on this split: `{board_runs.DEFAULT_VARIANT}`' in verdict, verdict
