"""The runs of the demo board and of the DetPTQ / lr studies: matrix, fingerprints, results.

``tools/run_board.py`` makes the runs; this module says which runs a study has
(``build_matrix``), when a run is finished (``finished_in``: result.json plus a
run_spec.json whose fingerprint equals the spec's), which committed run has
the same merged config (``finished_twins``), and how finished runs are copied
to results/runs/ and committed with git.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import os.path as osp
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from detptq.utils.io import write_json_atomic

# the repository: configs/board/ and tools/ are read from here
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
BOARD_DIR = 'configs/board'
RESULTS = 'results'
MODEL = 'yolov6n_demo'
# brecq_cfws is the control for detptq_cfws: CFWS + reconstruction without the ODOL p search
BOARD_METHODS = ('minmax', 'mse', 'kl_improved', 'kl_cfws', 'adaround', 'brecq', 'qdrop',
                 'detptq', 'detptq_cfws', 'brecq_cfws')
SEEDS = (0, 1, 2)
BITS_SEEDS = (((4, 8), SEEDS), ((4, 4), SEEDS), ((8, 8), (0,)))
# DetPTQ ablation (docs/detptq_study.md): one option each, on the published method
ABLATION_CONFIG = f'{BOARD_DIR}/detptq_paper.py'
ABLATION = {
    'detptq': {},
    'fixed_p2': {'recon_cfg.p_search.fixed_p': 2.0},
    'brecq_base': {'recon_cfg.mode': 'brecq'},
}
# The QDrop base cost DetPTQ 0.12 mAP at W4A4 (docs/detptq_study.md), so every other
# axis is measured on the BRECQ base (round 2, then round 3)
BRECQ_BASE = {'recon_cfg.mode': 'brecq'}
for _name, _opts in {'fixed_p2': {'recon_cfg.p_search.fixed_p': 2.0},
                     'p_scale_only': {'recon_cfg.p_use': 'scale'},
                     'p_loss_only': {'recon_cfg.p_use': 'loss'},
                     'cumulative': {'recon_cfg.p_search.context': 'cumulative'},
                     'fixed_p2.4': {'recon_cfg.p_search.fixed_p': 2.4}}.items():
    ABLATION[f'brecq_base_{_name}'] = {**BRECQ_BASE, **_opts}
# Round 3's other ODOL axes change one option of the round-2 winner (the default), so
# each answers "does this help the default?" rather than "does it help a variant it beat"
LOSS_ONLY = ABLATION['brecq_base_p_loss_only']
for _name, _opts in {'p_rule_mean': {'recon_cfg.p_rule': 'mean'},
                     'psearch_32img': {'recon_cfg.p_search_images': 32},
                     'odol_cls2': {'recon_cfg.p_search.cls_weight': 2.0},
                     'odol_box2': {'recon_cfg.p_search.box_weight': 2.0}}.items():
    ABLATION[f'brecq_base_p_loss_only_{_name}'] = {**LOSS_ONLY, **_opts}
ABLATION_BITS = ((4, 4), (4, 8))
# controls without the ODOL p search: they can show it does not help, not become DetPTQ's default
ABLATION_CONTROLS = ('fixed_p2', 'brecq_base_fixed_p2', 'brecq_base_fixed_p2.4')
# the variant configs/_base_/ptq/detptq.py (our DetPTQ default) spells out; a test checks both
DEFAULT_VARIANT = 'brecq_base_p_loss_only'
LR_VALUES = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
LR_METHODS = ('adaround', 'brecq', 'qdrop', 'detptq')
# the lr study ran before the default was chosen: its DetPTQ is the published one
LR_CONFIGS = {'detptq': 'detptq_paper'}
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


# ------------------------------------------------------------------ the matrix
@functools.lru_cache(maxsize=None)
def _read_config(path: str):
    from mmengine.config import Config
    return Config.fromfile(osp.join(ROOT, path), import_custom_modules=False)


def load_config(path: str):
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


def run_fingerprint(config: str, opts: Dict[str, Any], split: str) -> str:
    """What runs: the split and the merged content of ``config`` with ``opts``."""
    cfg = load_config(config)
    cfg.merge_from_dict(opts)
    content = _sha1(json.dumps(hashed_content(cfg), sort_keys=True, default=str))
    # not how the run is spelled: an option that becomes a config default keeps it finished
    return _sha1(json.dumps(dict(split=split, content=content), sort_keys=True))


def make_spec(study: str, label: str, config: str, bits: Tuple[int, int], seed: int,
              split: str, extra: Dict[str, Any], variant: Optional[str] = None) -> RunSpec:
    """A RunSpec with the bits/seed/split options and its fingerprint."""
    cfg = load_config(config)
    opts = {'quant_cfg.w_bits': bits[0], 'quant_cfg.a_bits': bits[1], 'calib_seed': seed,
            'randomness.seed': seed}
    if cfg.get('recon_cfg'):
        opts['recon_cfg.seed'] = seed
    opts.update(split_options(cfg, split))
    opts.update(extra)
    name = f'{study}_{MODEL}_{label}_w{bits[0]}a{bits[1]}_s{seed}_{split}'
    return RunSpec(name=name, study=study, config=config, split=split, seed=seed, bits=bits,
                   variant=variant, cfg_options=opts,
                   fingerprint=run_fingerprint(config, opts, split))


def build_matrix(study: str, split: str, seeds: Optional[List[int]],
                 extra: Dict[str, Any]) -> List[RunSpec]:
    """Every run of a study, in the order they are run."""
    specs = []
    if study == 'board':
        for bits, default_seeds in BITS_SEEDS:
            for method in BOARD_METHODS:
                for seed in seeds if seeds is not None else default_seeds:
                    specs.append(make_spec(study, method, f'{BOARD_DIR}/{method}.py', bits, seed,
                                           split, extra))
    elif study == 'ablation':
        for bits in ABLATION_BITS:
            for variant, opts in ABLATION.items():
                for seed in seeds if seeds is not None else (0,):
                    specs.append(make_spec(study, variant, ABLATION_CONFIG, bits, seed,
                                           split, {**opts, **extra}, variant=variant))
    elif study == 'lr':
        for method in LR_METHODS:
            for lr in LR_VALUES:
                for seed in seeds if seeds is not None else (0,):
                    label = f'{method}_lr{lr:g}'
                    config = f'{BOARD_DIR}/{LR_CONFIGS.get(method, method)}.py'
                    specs.append(make_spec(study, label, config, (4, 4), seed,
                                           split, {'recon_cfg.lr_round': lr, **extra},
                                           variant=label))
    else:
        raise SystemExit(f'run_board: --study {study!r} is not one of {sorted(STUDY_SPLIT)}')
    return specs


# --------------------------------------------------------------- run states
def read_json(path: str) -> Optional[dict]:
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def finished_in(folder: str, spec: RunSpec) -> bool:
    """True when ``folder`` holds this spec's result.json."""
    stored = read_json(osp.join(folder, 'run_spec.json'))
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


def finished_twins(runs_dir: str) -> Dict[str, str]:
    """Fingerprint -> committed folder of every finished run (equal fingerprint, same run)."""
    twins: Dict[str, str] = {}
    for name in sorted(os.listdir(runs_dir)) if osp.isdir(runs_dir) else []:
        folder = osp.join(runs_dir, name)
        stored = read_json(osp.join(folder, 'run_spec.json'))
        if stored is not None and osp.isfile(osp.join(folder, 'result.json')):
            twins.setdefault(stored.get('fingerprint'), folder)
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


def _mean_maps(folders: List[str], key) -> Dict[Any, float]:
    """Mean quant mAP of the finished runs in ``folders``, grouped by ``key(run_spec, result)``."""
    maps: Dict[Any, List[float]] = {}
    for folder in folders:
        spec = read_json(osp.join(folder, 'run_spec.json'))
        result = read_json(osp.join(folder, 'result.json'))
        maps.setdefault(key(spec, result), []).append(result['quant_metrics']['mAP'])
    return {k: sum(v) / len(v) for k, v in maps.items()}


def _cell(mean: Dict[Any, float], key: Any) -> str:
    return f'{mean[key]:.3f}' if key in mean else '-'


def lr_choice(folders: List[str]) -> str:
    """Method x lr_round table of mean mAP and the lr with the best mean over all LR_METHODS."""
    mean = _mean_maps(folders, lambda spec, result: (
        result['method'], float(spec['cfg_options']['recon_cfg.lr_round'])))
    lrs = sorted({lr for _, lr in mean})
    rows = ['| method | ' + ' | '.join(f'{lr:g}' for lr in lrs) + ' |',
            '|---|' + '---|' * len(lrs)]
    for m in LR_METHODS:
        rows.append(f'| {m} | ' + ' | '.join(_cell(mean, (m, lr)) for lr in lrs) + ' |')
    complete = {lr: sum(mean[m, lr] for m in LR_METHODS) / len(LR_METHODS) for lr in lrs
                if all((m, lr) in mean for m in LR_METHODS)}
    rows.append('| mean of all methods | ' + ' | '.join(_cell(complete, lr) for lr in lrs) + ' |')
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


def ablation_choice(folders: List[str]) -> str:
    """Variant x bits table of mean mAP and the variant with the best mean over ABLATION_BITS."""
    mean = _mean_maps(folders, lambda spec, result: (
        spec['variant'], (result['w_bits'], result['a_bits'])))
    complete = {v: sum(mean[v, b] for b in ABLATION_BITS) / len(ABLATION_BITS)
                for v in ABLATION if all((v, b) in mean for b in ABLATION_BITS)}
    rows = ['| variant | ' + ' | '.join(f'W{w}A{a}' for w, a in ABLATION_BITS) + ' | mean |',
            '|---|' + '---|' * (len(ABLATION_BITS) + 1)]
    for v in ABLATION:
        rows.append(f'| {v} | ' + ' | '.join(_cell(mean, (v, b)) for b in ABLATION_BITS)
                    + f' | {_cell(complete, v)} |')
    bits = ' and '.join(f'W{w}A{a}' for w, a in ABLATION_BITS)
    methods = {v: m for v, m in complete.items() if v not in ABLATION_CONTROLS}
    controls = {v: m for v, m in complete.items() if v in ABLATION_CONTROLS}
    if methods:  # ties go to the variant listed first (the plain method comes first)
        best = max(methods, key=lambda v: methods[v])
        verdict = (f'Default on this split: `{best}` (best mean mAP {methods[best]:.3f} over '
                   f'{bits} among the ODOL variants with a run at both; options: '
                   f'{ABLATION[best]}).')
        if controls and max(controls.values()) > methods[best]:
            control = max(controls, key=lambda v: controls[v])
            verdict += (f' The control `{control}` without the ODOL p search scores higher '
                        f'({controls[control]:.3f}).')
        if best != DEFAULT_VARIANT:
            verdict += (f' The configs still default to `{DEFAULT_VARIANT}`: switch '
                        'configs/_base_/ptq/detptq.py and DEFAULT_VARIANT.')
    else:
        verdict = f'No choice yet: no ODOL variant has finished runs at {bits}.'
    return ('# DetPTQ ablation (mean quant mAP per variant and bit width)\n\n'
            + '\n'.join(rows) + '\n\n' + verdict + '\n')
