"""Build the demo PTQ board (or the DetPTQ / learning-rate studies) with one resumable command.

    python tools/run_board.py                          # board: 9 methods, W4A8/W4A4 x 3 seeds, W8A8 x 1, val
    python tools/run_board.py --split tune             # the same matrix on the tune split
    python tools/run_board.py --study ablation         # DetPTQ variants, tune split (docs/detptq_study.md)
    python tools/run_board.py --study lr               # lr_round of the reconstruction methods, tune split
    python tools/run_board.py --commit-results --git-add   # also copy finished runs to results/runs/
    python tools/run_board.py --jobs 2 --git-commit    # two runs at a time, commit each finished run
    python tools/run_board.py --dry-run                # list the runs and their state, run nothing
    python tools/run_board.py --plot-loss-curves WORK_DIRS/RUN   # loss-vs-iteration PNG of a run

Every run is ``tools/quantize.py CONFIG --work-dir ROOT/NAME --cfg-options ...``
with the options generated from the study's matrix (method x bits x seed, or
variant x bits x seed) on top of the few configs in configs/board/. Runs go
one after another, or ``--jobs N`` at a time (each with cores / N threads: on
small models several one-thread runs use the cores better than one run with
many threads). A run is *finished* when its folder (or its committed copy
in results/runs/NAME) holds result.json and a run_spec.json whose fingerprint
equals the current spec (config, its merged content, options, split); such
runs are skipped. An unfinished run is restarted with the same command, and
tools/quantize.py resumes it (cached FP metrics, finished reconstruction
units). A folder made for a different spec is left alone and reported unless
``--restart-changed`` moves it aside. A run whose merged config equals a
committed run of another study (the ablation's plain DetPTQ is the lr study's
DetPTQ at the chosen lr) is not made again: that run's result is copied, with
``reused_from`` in its run_spec.json.

``--commit-results`` copies each finished run's result.json, run_spec.json and
reconstruction loss curves to results/runs/NAME/ (``--git-add`` stages them;
``--git-commit`` commits each run as it finishes, so a long board is not lost
with the machine), so the aggregate can be rebuilt from the committed
runs alone. At the end the study's table and chart are written with
tools/leaderboard.py (e.g. results/demo_board.{md,csv,png}).
"""
from __future__ import annotations

import argparse
import copy
import functools
import hashlib
import json
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from detptq.reconstruction.loss_history import plot_loss_curves
from detptq.utils.io import write_json_atomic

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
BOARD_DIR = 'configs/board'
RESULTS = 'results'
MODEL = 'yolov6n_demo'
BOARD_METHODS = ('minmax', 'mse', 'kl_improved', 'kl_cfws', 'adaround', 'brecq', 'qdrop',
                 'detptq', 'detptq_cfws')
RECON_METHODS = ('adaround', 'brecq', 'qdrop', 'detptq', 'detptq_cfws')
SEEDS = (0, 1, 2)
BITS_SEEDS = (((4, 8), SEEDS), ((4, 4), SEEDS), ((8, 8), (0,)))
# DetPTQ ablation (docs/detptq_study.md): one option each, on configs/board/detptq.py
ABLATION = {
    'detptq': {},
    'fixed_p2': {'recon_cfg.p_search.fixed_p': 2.0},
    'fixed_p2.4': {'recon_cfg.p_search.fixed_p': 2.4},
    'cumulative': {'recon_cfg.p_search.context': 'cumulative'},
    'p_scale_only': {'recon_cfg.p_use': 'scale'},
    'p_loss_only': {'recon_cfg.p_use': 'loss'},
    'brecq_base': {'recon_cfg.mode': 'brecq'},
    'p_rule_mean': {'recon_cfg.p_rule': 'mean'},
    'psearch_32img': {'recon_cfg.p_search_images': 32},
    'odol_cls2': {'recon_cfg.p_search.cls_weight': 2.0},
    'odol_box2': {'recon_cfg.p_search.box_weight': 2.0},
}
ABLATION_BITS = ((4, 4), (4, 8))
LR_VALUES = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
LR_METHODS = ('adaround', 'brecq', 'qdrop', 'detptq')
STUDY_SPLIT = {'board': 'val', 'ablation': 'tune', 'lr': 'tune'}
OUTPUTS = {'board': 'demo_board', 'ablation': 'detptq_study', 'lr': 'lr_study'}


@dataclass
class RunSpec:
    """One run of a study: a config plus --cfg-options, on one split."""
    name: str
    study: str
    config: str
    split: str
    seed: int
    bits: Tuple[int, int]
    variant: Optional[str] = None
    cfg_options: Dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ''
    content: str = ''  # hash of the merged config alone: equal content, equal run


# ------------------------------------------------------------------ the matrix
@functools.lru_cache(maxsize=None)
def _read_config(path: str):
    from mmengine.config import Config
    return Config.fromfile(osp.join(ROOT, path), import_custom_modules=False)


def _load_config(path: str):
    """A fresh copy of a config file relative to the repository (each file parsed once)."""
    return copy.deepcopy(_read_config(path))


def split_options(cfg, split: str) -> Dict[str, Any]:
    """--cfg-options that evaluate on ``split`` ('val' is the configs' own test set)."""
    if split == 'val':
        return {}
    root = cfg.get('data_root', '')
    return {'test_dataloader.dataset.ann_file': f'annotations/instances_{split}.json',
            'test_dataloader.dataset.data_prefix.img': f'images/{split}/',
            'test_evaluator.ann_file': f'{root}annotations/instances_{split}.json'}


# Keys of the merged config that never change a run's result (how the process is started,
# logged and visualised). They are left out of the fingerprint, so e.g. the distributed
# backend in default_runtime.py does not turn every committed run into an unfinished one.
RUNTIME_KEYS = ('env_cfg', 'launcher', 'default_hooks', 'log_level', 'log_processor',
                'visualizer', 'vis_backends', 'work_dir', 'resume')


# configs/board/protocol.py's own variables (board_recon, board_num_calib_images) only feed
# recon_cfg / num_calib_images, which are hashed; hashing them too would make e.g. the lr
# chosen by the lr study invalidate the very runs (which set their own lr) that chose it.
HELPER_PREFIX = 'board_'


def hashed_content(cfg) -> Dict[str, Any]:
    """The merged config as the fingerprint hashes it: all but RUNTIME_KEYS and board_* helpers."""
    return {k: v for k, v in cfg.to_dict().items()
            if k not in RUNTIME_KEYS and not k.startswith(HELPER_PREFIX)}


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def run_hashes(config: str, opts: Dict[str, Any], split: str) -> Tuple[str, str]:
    """(fingerprint, content hash) of ``config`` with ``opts`` on ``split``."""
    cfg = _load_config(config)
    cfg.merge_from_dict(opts)
    content = _sha1(json.dumps(hashed_content(cfg), sort_keys=True, default=str))
    key = json.dumps(dict(config=config, options=opts, split=split, content=content),
                     sort_keys=True)
    return _sha1(key), content


def _spec(study: str, label: str, config: str, bits: Tuple[int, int], seed: int, split: str,
          extra: Dict[str, Any], variant: Optional[str] = None) -> RunSpec:
    """A RunSpec with the bits/seed/split options and its fingerprint."""
    cfg = _load_config(config)
    opts = {'quant_cfg.w_bits': bits[0], 'quant_cfg.a_bits': bits[1], 'calib_seed': seed,
            'randomness.seed': seed}
    if cfg.get('recon_cfg'):
        opts['recon_cfg.seed'] = seed
    opts.update(split_options(cfg, split))
    opts.update(extra)
    name = f'{study}_{MODEL}_{label}_w{bits[0]}a{bits[1]}_s{seed}_{split}'
    fingerprint, content = run_hashes(config, opts, split)
    return RunSpec(name=name, study=study, config=config, split=split, seed=seed, bits=bits,
                   variant=variant, cfg_options=opts, fingerprint=fingerprint, content=content)


def build_matrix(study: str, split: str, seeds: Optional[List[int]],
                 extra: Dict[str, Any]) -> List[RunSpec]:
    """Every run of a study, in the order they are run."""
    specs = []
    if study == 'board':
        for bits, default_seeds in BITS_SEEDS:
            for method in BOARD_METHODS:
                for seed in seeds if seeds is not None else default_seeds:
                    specs.append(_spec(study, method, f'{BOARD_DIR}/{method}.py', bits, seed,
                                       split, extra))
    elif study == 'ablation':
        for bits in ABLATION_BITS:
            for variant, opts in ABLATION.items():
                for seed in seeds if seeds is not None else (0,):
                    specs.append(_spec(study, variant, f'{BOARD_DIR}/detptq.py', bits, seed,
                                       split, {**opts, **extra}, variant=variant))
    elif study == 'lr':
        for method in LR_METHODS:
            for lr in LR_VALUES:
                for seed in seeds if seeds is not None else (0,):
                    label = f'{method}_lr{lr:g}'
                    specs.append(_spec(study, label, f'{BOARD_DIR}/{method}.py', (4, 4), seed,
                                       split, {'recon_cfg.lr_round': lr, **extra},
                                       variant=label))
    else:
        raise SystemExit(f'run_board: --study {study!r} is not one of {sorted(STUDY_SPLIT)}')
    return specs


# --------------------------------------------------------------- run states
def _read_json(path: str) -> Optional[dict]:
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def finished_in(folder: str, spec: RunSpec) -> bool:
    """True when ``folder`` holds this spec's result.json."""
    stored = _read_json(osp.join(folder, 'run_spec.json'))
    return (stored is not None and stored.get('fingerprint') == spec.fingerprint
            and osp.isfile(osp.join(folder, 'result.json')))


def commit_run(work: str, committed: str, git_add: bool) -> None:
    """Copy a finished run's small files to results/runs/NAME (and git add them)."""
    os.makedirs(committed, exist_ok=True)
    for src, dst in (('result.json', 'result.json'), ('run_spec.json', 'run_spec.json'),
                     ('recon/loss_curves.json', 'loss_curves.json')):
        if osp.isfile(osp.join(work, src)):
            shutil.copyfile(osp.join(work, src), osp.join(committed, dst))
    if git_add:
        subprocess.run(['git', 'add', committed], cwd=ROOT, check=True)


def git_commit(paths: List[str], message: str) -> None:
    """Commit exactly ``paths`` (whatever else is staged stays staged); no-op if unchanged."""
    cwd = osp.dirname(osp.abspath(paths[0]))
    for attempt in range(5):  # another git process (the user's) may hold index.lock
        try:
            subprocess.run(['git', 'add', '--', *paths], cwd=cwd, check=True)
            if subprocess.run(['git', 'diff', '--cached', '--quiet', '--', *paths],
                              cwd=cwd).returncode:
                subprocess.run(['git', 'commit', '-q', '-m', message, '--', *paths], cwd=cwd,
                               check=True)
            return
        except subprocess.CalledProcessError:
            time.sleep(2 + 2 * attempt)
    # the copy under results/runs is kept; losing one commit must not stop a long board
    print(f'[board] WARNING: could not commit {", ".join(paths)}; commit them by hand',
          flush=True)


def run_one(spec: RunSpec, work: str, args) -> bool:
    """tools/quantize.py for one spec (resuming whatever the folder holds); True on success."""
    os.makedirs(work, exist_ok=True)
    write_json_atomic(asdict(spec), osp.join(work, 'run_spec.json'), indent=1)
    cmd = [args.python, osp.join(ROOT, 'tools/quantize.py'), osp.join(ROOT, spec.config),
           '--work-dir', work]
    if args.data_root:
        cmd += ['--data-root', args.data_root]
    cmd += ['--cfg-options'] + [f'{k}={v}' for k, v in spec.cfg_options.items()]
    with open(osp.join(work, 'run.log'), 'a') as log:
        log.write(f'\n# {time.strftime("%Y-%m-%d %H:%M:%S")} {" ".join(cmd)}\n')
        log.flush()
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
        if args.threads:
            env['OMP_NUM_THREADS'] = env['MKL_NUM_THREADS'] = str(args.threads)
        proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    return proc.returncode == 0 and osp.isfile(osp.join(work, 'result.json'))


def finished_twins(runs_dir: str) -> Dict[str, str]:
    """Content hash -> committed folder, for every committed run still current."""
    twins: Dict[str, str] = {}
    for name in sorted(os.listdir(runs_dir)) if osp.isdir(runs_dir) else []:
        folder = osp.join(runs_dir, name)
        stored = _read_json(osp.join(folder, 'run_spec.json'))
        if stored is None or not osp.isfile(osp.join(folder, 'result.json')) \
                or not osp.isfile(osp.join(ROOT, stored.get('config', ''))):
            continue
        fingerprint, content = run_hashes(stored['config'], stored['cfg_options'],
                                          stored['split'])
        if fingerprint == stored.get('fingerprint'):
            twins.setdefault(content, folder)
    return twins


def reuse_run(twin: str, dest: str, spec: RunSpec) -> None:
    """Copy the finished run ``twin`` (same merged config) as ``spec``'s result."""
    os.makedirs(dest, exist_ok=True)
    for name in ('result.json', 'loss_curves.json'):
        if osp.isfile(osp.join(twin, name)):
            shutil.copyfile(osp.join(twin, name), osp.join(dest, name))
    write_json_atomic(dict(asdict(spec), reused_from=osp.basename(twin)),
                      osp.join(dest, 'run_spec.json'), indent=1)


def finished_folders(specs: List[RunSpec], root: str, runs_dir: str) -> List[str]:
    """For each finished spec, its committed folder (else its work folder)."""
    folders = []
    for spec in specs:
        for folder in (osp.join(runs_dir, spec.name), osp.join(root, spec.name)):
            if finished_in(folder, spec):
                folders.append(folder)
                break
    return folders


def aggregate(study: str, split: str, folders: List[str], args) -> List[str]:
    """tools/leaderboard.py --aggregate over the finished runs -> results/<study>.{md,csv,png}."""
    if not folders:
        print('[board] nothing finished yet: no table written')
        return []
    out = osp.join(args.results, OUTPUTS[study] + ('' if split == STUDY_SPLIT[study]
                                                   else f'_{split}'))
    os.makedirs(args.results, exist_ok=True)
    subprocess.run([args.python, osp.join(ROOT, 'tools/leaderboard.py'), *folders,
                    '--aggregate', '--md', out + '.md', '--csv', out + '.csv',
                    '--png', out + '.png'], check=True)
    print(f'[board] wrote {out}.md / .csv / .png from {len(folders)} runs')
    tables = [out + ext for ext in ('.md', '.csv', '.png')]
    if study == 'lr':
        with open(out + '_choice.md', 'w') as f:
            f.write(lr_choice(folders))
        tables.append(out + '_choice.md')
    return tables


def lr_choice(folders: List[str]) -> str:
    """Method x lr_round table of mean mAP and the lr with the best mean over all LR_METHODS."""
    maps: Dict[Tuple[str, float], List[float]] = {}
    for folder in folders:
        opts = _read_json(osp.join(folder, 'run_spec.json'))['cfg_options']
        result = _read_json(osp.join(folder, 'result.json'))
        maps.setdefault((result['method'], float(opts['recon_cfg.lr_round'])), []).append(
            result['quant_metrics']['mAP'])
    mean = {key: sum(v) / len(v) for key, v in maps.items()}
    lrs = sorted({lr for _, lr in mean})
    rows = ['| method | ' + ' | '.join(f'{lr:g}' for lr in lrs) + ' |',
            '|---|' + '---|' * len(lrs)]
    for m in LR_METHODS:
        rows.append(f'| {m} | ' + ' | '.join(f'{mean[m, lr]:.3f}' if (m, lr) in mean else '-'
                                             for lr in lrs) + ' |')
    complete = {lr: sum(mean[m, lr] for m in LR_METHODS) / len(LR_METHODS) for lr in lrs
                if all((m, lr) in mean for m in LR_METHODS)}
    rows.append('| mean of all methods | ' + ' | '.join(
        f'{complete[lr]:.3f}' if lr in complete else '-' for lr in lrs) + ' |')
    if complete:  # ties go to the smaller lr
        best = max(sorted(complete), key=lambda lr: complete[lr])
        verdict = (f'Chosen on this split: lr_round = {best:g} (best mean mAP '
                   f'{complete[best]:.3f} over {", ".join(LR_METHODS)}; only lrs with a run '
                   'of every method compete).')
    else:
        verdict = (f'No choice yet: no lr_round has a finished run of every method '
                   f'({", ".join(LR_METHODS)}).')
    return ('# lr_round study (W4A4, mean quant mAP per method and lr)\n\n'
            + '\n'.join(rows) + '\n\n' + verdict + '\n')


# --------------------------------------------------------------------- main
def parse_args() -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--study', default='board', choices=sorted(STUDY_SPLIT))
    parser.add_argument('--split', choices=('tune', 'val'),
                        help='evaluation split (default: val for the board, tune otherwise)')
    parser.add_argument('--seeds', type=int, nargs='+', help='override the study\'s seeds')
    parser.add_argument('--root', default='work_dirs/board', help='work folder of all runs')
    parser.add_argument('--results', default=osp.join(ROOT, RESULTS),
                        help='where results/runs/ and the tables go')
    parser.add_argument('--only', help='regular expression on run names')
    parser.add_argument('--max-runs', type=int, help='stop after starting this many runs')
    parser.add_argument('--data-root', default=os.environ.get('DETPTQ_DEMO_DATA'),
                        help='demo data root (default: $DETPTQ_DEMO_DATA, else the configs\')')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='extra options for every run (part of each run\'s spec)')
    parser.add_argument('--commit-results', action='store_true',
                        help='copy finished runs to results/runs/NAME/')
    parser.add_argument('--git-add', action='store_true', help='git add the copied runs')
    parser.add_argument('--git-commit', action='store_true',
                        help='commit each finished run (and the table at the end) as it '
                             'completes; implies --commit-results')
    parser.add_argument('--jobs', type=int, default=1,
                        help='runs made at the same time (default 1)')
    parser.add_argument('--threads', type=int,
                        help='OMP_NUM_THREADS of each run (default: cores / --jobs when '
                             '--jobs > 1 and OMP_NUM_THREADS is unset)')
    parser.add_argument('--restart-changed', action='store_true',
                        help='move aside run folders made for another spec and rerun them')
    parser.add_argument('--dry-run', action='store_true', help='list runs and states only')
    parser.add_argument('--no-aggregate', action='store_true', help='skip the final table')
    parser.add_argument('--python', default=sys.executable)
    parser.add_argument('--plot-loss-curves', metavar='RUN',
                        help='only draw RUN\'s (folder or loss_curves.json) loss curves')
    return parser.parse_args()


def check_split_data(data_root: Optional[str], split: str) -> None:
    """One clear sentence when the tune split is missing from existing demo data."""
    root = data_root or osp.join(ROOT, 'data/demo')
    ann = osp.join(root, 'annotations', f'instances_{split}.json')
    if split != 'val' and osp.isfile(osp.join(root, 'annotations/instances_val.json')) \
            and not osp.isfile(ann):
        raise SystemExit(f'run_board: {ann} does not exist; regenerate the demo data with '
                         f'its {split} split (tools/make_demo_data.py) or pass --data-root')


def pending_runs(specs: List[RunSpec], root: str, runs_dir: str,
                 args) -> Tuple[List[str], List[Tuple[str, RunSpec, str]]]:
    """Finished folders (committing finished work) and the (label, spec, state) still to run."""
    done, todo = [], []
    twins = finished_twins(runs_dir)
    for i, spec in enumerate(specs, 1):
        work, committed = osp.join(root, spec.name), osp.join(runs_dir, spec.name)
        head = f'[board {i}/{len(specs)}] {spec.name}'
        if finished_in(committed, spec):
            print(f'{head}: done (committed)')
            done.append(committed)
            continue
        if finished_in(work, spec):
            if args.commit_results and not args.dry_run:
                commit_run(work, committed, args.git_add)
                done.append(committed)
                print(f'{head}: done, committed to {committed}')
            else:
                done.append(work)
                print(f'{head}: done')
            continue
        twin = twins.get(spec.content)
        if twin is not None:  # another study already ran exactly this config
            if args.dry_run or not args.commit_results:
                print(f'{head}: same config as the finished {osp.basename(twin)}; '
                      + ('would be reused' if args.dry_run else
                         'reused with --commit-results'))
                continue
            reuse_run(twin, committed, spec)
            if args.git_commit:
                git_commit([committed], f'results: {spec.name}: reuses {osp.basename(twin)} '
                                        '(same merged config)')
            done.append(committed)
            print(f'{head}: done, reuses {twin} (same merged config)')
            continue
        stored = _read_json(osp.join(work, 'run_spec.json'))
        if stored is not None and stored.get('fingerprint') != spec.fingerprint:
            if not args.restart_changed:
                print(f'{head}: {work} was made for another spec; skipped '
                      '(--restart-changed moves it aside)')
                continue
            if not args.dry_run:
                os.replace(work, f'{work}.old-{time.strftime("%Y%m%d-%H%M%S")}')
        state = 'resuming' if osp.isdir(work) else 'starting'
        if args.dry_run:
            print(f'{head}: would be {state}: {spec.config} ' +
                  ' '.join(f'{k}={v}' for k, v in spec.cfg_options.items()))
        elif args.max_runs is not None and len(todo) >= args.max_runs:
            print(f'{head}: not started (--max-runs {args.max_runs})')
        else:
            todo.append((head, spec, state))
    return done, todo


def make_runs(todo: List[Tuple[str, RunSpec, str]], root: str, runs_dir: str,
              args) -> Tuple[List[str], List[str]]:
    """Make the pending runs, ``args.jobs`` at a time; (finished folders, failed names)."""
    lock = threading.Lock()  # one thread at a time prints, copies and commits
    done, failed, durations = [], [], []

    def make(item: Tuple[str, RunSpec, str]) -> None:
        head, spec, state = item
        work, committed = osp.join(root, spec.name), osp.join(runs_dir, spec.name)
        with lock:
            left = len(todo) - len(done) - len(failed)
            eta = (f', ~{sum(durations) / len(durations) * left / args.jobs / 3600:.1f} h left'
                   if durations else '')
            print(f'{head}: {state} ({time.strftime("%H:%M")}{eta}); log {work}/run.log',
                  flush=True)
        start = time.time()
        ok = run_one(spec, work, args)
        with lock:
            if not ok:
                failed.append(spec.name)
                print(f'{head}: FAILED, see {work}/run.log', flush=True)
                return
            durations.append(time.time() - start)
            result = _read_json(osp.join(work, 'result.json'))
            summary = (f"mAP {result['quant_metrics'].get('mAP', float('nan')):.3f} in "
                       f'{durations[-1] / 60:.1f} min')
            print(f'{head}: {summary}', flush=True)
            if not args.commit_results:
                done.append(work)
                return
            commit_run(work, committed, args.git_add)
            done.append(committed)
            if args.git_commit:
                git_commit([committed], f'results: {spec.name}: {summary}')

    if args.jobs == 1:
        for item in todo:
            make(item)
    else:
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            list(pool.map(make, todo))  # list() re-raises a worker's exception here
    return done, failed


def main() -> None:
    args = parse_args()
    if args.plot_loss_curves:
        print(plot_loss_curves(args.plot_loss_curves))
        return
    split = args.split or STUDY_SPLIT[args.study]
    if args.study != 'board' and split != 'tune':
        raise SystemExit(f'run_board: the {args.study} study chooses settings, so it runs on '
                         'the tune split only (docs/detptq_study.md)')
    if args.jobs < 1:
        raise SystemExit(f'run_board: --jobs must be at least 1, got {args.jobs}')
    args.commit_results = args.commit_results or args.git_commit
    if args.threads is None and args.jobs > 1 and 'OMP_NUM_THREADS' not in os.environ:
        args.threads = max(1, (os.cpu_count() or 1) // args.jobs)
    specs = all_specs = build_matrix(args.study, split, args.seeds, dict(args.cfg_options))
    if args.only:
        specs = [s for s in specs if re.search(args.only, s.name)]
    if not args.dry_run:
        check_split_data(args.data_root, split)
    root = osp.abspath(args.root)
    runs_dir = osp.join(args.results, 'runs')
    done, todo = pending_runs(specs, root, runs_dir, args)
    made, failed = make_runs(todo, root, runs_dir, args)
    print(f'[board] {len(done) + len(made)}/{len(specs)} finished, {len(failed)} failed'
          + (f': {", ".join(failed)}' if failed else ''))
    if not args.dry_run and not args.no_aggregate:
        # the table covers every finished run of the study, not only those --only selected
        tables = aggregate(args.study, split, finished_folders(all_specs, root, runs_dir), args)
        if args.git_commit and tables:
            git_commit(tables, f'results: {OUTPUTS[args.study]} table from the finished runs')
    if failed:
        sys.exit(1)


if __name__ == '__main__':
    main()
