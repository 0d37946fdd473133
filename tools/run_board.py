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
equals the current spec's (the split and the merged config content); such
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
import os
import os.path as osp
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import List, Optional, Tuple

from detptq.analysis.board_runs import (OUTPUTS, RESULTS, ROOT, STUDY_SPLIT, RunSpec,
                                        ablation_choice, build_matrix, commit_run,
                                        finished_folders, finished_in, finished_twins,
                                        git_commit, lr_choice, read_json, reuse_run)
from detptq.reconstruction.loss_history import plot_loss_curves
from detptq.utils.io import write_json_atomic


# --------------------------------------------------------------- making runs
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
    choice = {'lr': lr_choice, 'ablation': ablation_choice}.get(study)
    if choice is not None:  # the table a study's choice is read from, and the choice
        with open(out + '_choice.md', 'w') as f:
            f.write(choice(folders))
        tables.append(out + '_choice.md')
    return tables


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
        twin = twins.get(spec.fingerprint)
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
        stored = read_json(osp.join(work, 'run_spec.json'))
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
            result = read_json(osp.join(work, 'result.json'))
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
