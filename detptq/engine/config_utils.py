"""Config loading shared by the command-line tools: overrides, work dirs, data checks.

Every check here runs before the model is built, so a bad config, data set or
value stops the tool with one sentence (``UserInputError``) naming the file,
key or value instead of a traceback minutes into the run.
"""
from __future__ import annotations

import ast
import re
import os
import os.path as osp
import traceback
from pathlib import Path
from typing import Iterable, List, Optional

from mmengine.config import Config, DictAction

from detptq.engine.input_checks import (check_checkpoint_readable, check_loader_data,
                                        check_quant_types,
                                        check_recon_cfg, check_run_types,
                                        ensure_writable_dir, read_annotation_file,
                                        resolve_num_calib_images)
from detptq.utils.cli import UserInputError

__all__ = ['DictAction', 'build_eval_runner', 'load_config', 'load_ptq_config', 'check_data',
           'is_ptq_loop', 'PTQ_LOOP',
           'check_checkpoint', 'resolve_checkpoint', 'set_data_root', 'dataloader_cfgs',
           'select_eval_split', 'require_checkpoint', 'UserInputError',
           'calib_dir_dataloader', 'apply_deploy_backend']

DATALOADER_KEYS = ('train_dataloader', 'val_dataloader', 'test_dataloader',
                   'calib_dataloader', 'tune_dataloader')
EVALUATOR_KEYS = ('val_evaluator', 'test_evaluator', 'tune_evaluator')
EVAL_SPLITS = ('val', 'tune')
#: the test loop of a PTQ config (configs/_base_/ptq/minmax.py declares it)
PTQ_LOOP = 'PTQLoop'
# The demo configs' data_root; the tools read it as default_demo_root()
# ($DETPTQ_DEMO_DATA when set) so one generated copy serves every checkout.
DEMO_CONFIG_ROOT = 'data/demo'


def _config_syntax_error(path: str) -> Optional[str]:
    """'file, line N: message' for a config (or a _base_ file) Python cannot parse."""
    try:
        with open(path, encoding='utf-8') as f:
            ast.parse(f.read(), filename=path)
    except SyntaxError as err:
        return f'{path}, line {err.lineno}: {err.msg}'
    except (OSError, UnicodeDecodeError) as err:
        return f'{path}: cannot be read ({err})'
    return None


def _read_config(path: str) -> Config:
    """Config.fromfile with one sentence (file and line) for a broken file."""
    problem = _config_syntax_error(path)
    if problem:
        raise UserInputError(f'config has a syntax error: {problem}')
    try:
        return Config.fromfile(path)
    except SyntaxError as err:  # a _base_ file
        raise UserInputError(f'config {path!r} cannot be parsed: {err}') from err
    except Exception as err:  # noqa: BLE001 - running the config file is the user's code
        frames = [f for f in traceback.extract_tb(err.__traceback__)
                  if osp.basename(f.filename) == osp.basename(path)]
        where = f', line {frames[-1].lineno}' if frames else ''
        raise UserInputError(f'config {path!r}{where} cannot be loaded: '
                             f'{type(err).__name__}: {err}') from err


def select_eval_split(cfg: Config) -> None:
    """``eval_split='tune'`` makes the test loader and evaluator those of the tune split."""
    split = cfg.get('eval_split', 'val')
    if split not in EVAL_SPLITS:
        raise UserInputError(f'eval_split={split!r} is invalid; use one of {EVAL_SPLITS}')
    if split == 'tune':
        if cfg.get('tune_dataloader') is None or cfg.get('tune_evaluator') is None:
            raise UserInputError('eval_split=\'tune\': the config has no tune_dataloader / '
                                 'tune_evaluator (see configs/_base_/datasets/demo_detection.py)')
        cfg.test_dataloader = cfg.tune_dataloader
        cfg.test_evaluator = cfg.tune_evaluator


def load_config(path: str, cfg_options: Optional[dict] = None,
                work_dir: Optional[str] = None, test_loop: str = 'TestLoop') -> Config:
    """Read a config file, apply --cfg-options, pick the eval split and a work_dir.

    A config that declares no ``test_cfg`` gets ``dict(type=test_loop)``: the
    model and data configs cannot declare one (configs/_base_/default_runtime.py
    says why), and the Runner needs it whenever there is a test data loader.
    """
    if not osp.isfile(path):
        raise UserInputError(f'config file {path!r} does not exist')
    cfg = _read_config(path)
    if cfg.get('test_cfg') is None:
        cfg.test_cfg = dict(type=test_loop)
    if cfg_options:
        try:
            cfg.merge_from_dict(cfg_options)
        except (KeyError, TypeError, ValueError) as err:
            raise UserInputError(f'--cfg-options {cfg_options}: {err}') from err
    select_eval_split(cfg)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('work_dirs',
                                osp.splitext(osp.basename(path))[0])
    return cfg


def dataloader_cfgs(cfg: Config) -> Iterable[tuple]:
    """Yield (key, dataloader cfg) for every data loader the config defines."""
    for key in DATALOADER_KEYS:
        loader = cfg.get(key)
        if loader is not None:
            yield key, loader


def set_data_root(cfg: Config, data_root: str, given_by_user: bool = True) -> None:
    """Point every data loader and COCO evaluator of ``cfg`` at ``data_root``.

    A root the user gave (``--data-root``) is remembered: the demo generator
    never creates a data set there on its own (see ``check_data``).
    """
    old = cfg.get('data_root')
    cfg.data_root = data_root
    if given_by_user:
        cfg.user_data_root = data_root
    for _, loader in dataloader_cfgs(cfg):
        loader.dataset.data_root = data_root
    for key in EVALUATOR_KEYS:
        evaluator = cfg.get(key)
        if evaluator is None or 'ann_file' not in evaluator:
            continue
        ann = evaluator.ann_file
        if old and ann.startswith(old):
            ann = ann[len(old):]
        evaluator.ann_file = osp.join(data_root, ann.lstrip('/'))


def _demo_splits(cfg: Config, keys: Iterable[str]) -> Optional[List[str]]:
    """The demo splits the loaders ``keys`` read (None: some loader reads another file, so all)."""
    from detptq.datasets.demo_data import SPLITS
    splits = []
    for key in keys:
        loader = cfg.get(key)
        ann = (loader.dataset.get('ann_file') or '') if loader is not None else ''
        match = re.fullmatch(r'(?:.*/)?instances_(\w+)\.json', ann)
        if loader is not None and (match is None or match.group(1) not in SPLITS):
            return None
        if match is not None and match.group(1) not in splits:
            splits.append(match.group(1))
    return splits


def _prepare_demo_data(cfg: Config, demo: dict, splits: Optional[List[str]]) -> None:
    """Generate or repair the demo data set where that is allowed; never write elsewhere.

    Rule: the generator runs on its own only in the configured root (the
    demo configs' ``data/demo`` means ``default_demo_root()``, i.e.
    ``$DETPTQ_DEMO_DATA`` when set), and there only if the folder is new,
    empty or a set it generated. A ``--data-root`` the user gave must exist;
    it is repaired only if it holds a generated set. A folder with other
    files is the user's data set: used as it is (``check_data`` checks it).
    """
    from detptq.datasets.demo_data import default_demo_root, ensure_demo_dataset
    from detptq.datasets.demo_folder import LOCK_FILE, read_manifest
    given = cfg.get('user_data_root')
    if not given and osp.normpath(cfg.data_root) == DEMO_CONFIG_ROOT:
        set_data_root(cfg, str(default_demo_root()) + '/', given_by_user=False)
    root = given or cfg.data_root
    empty = not osp.isdir(root) or not [e for e in os.listdir(root) if e != LOCK_FILE]
    if given and empty:
        raise UserInputError(
            f'--data-root {given!r} does not exist or is empty; demo data is generated '
            f'automatically only in {default_demo_root()} ($DETPTQ_DEMO_DATA): to generate it '
            f'here run `python tools/make_demo_data.py --out {given}`, or drop --data-root')
    if (empty and not given) or read_manifest(Path(root)) is not None:
        ensure_demo_dataset(root, splits=splits, progress=True, **demo)


def check_data(cfg: Config, keys: Iterable[str], min_images: Optional[dict] = None) -> None:
    """Fail with one clear sentence when a data set the run needs is missing or broken.

    Checks every annotation file (valid COCO JSON) and image (exists, looks
    like an image) of the loaders ``keys`` and their evaluators' annotation
    files. Demo data (configs with ``demo_data``) is generated first where
    allowed (see ``_prepare_demo_data``). ``min_images`` maps a loader key to
    the images the run needs from it (default 1).
    """
    demo = cfg.get('demo_data')
    if demo is not None:  # only the splits this run reads: a PTQ run needs no training images
        _prepare_demo_data(cfg, demo, _demo_splits(cfg, keys))
    min_images = min_images or {}
    for key in keys:
        loader = cfg.get(key)
        if loader is None:
            continue
        dataset = loader.dataset
        root = dataset.get('data_root') or ''
        ann = osp.join(root, dataset.get('ann_file') or '')
        if dataset.get('ann_file') and not osp.exists(ann):
            raise UserInputError(f'{key}: {ann!r} does not exist. ' + _data_hint(cfg))
        check_loader_data(key, loader, min_images.get(key, 1))
    evaluators = {'test_dataloader': 'test_evaluator', 'val_dataloader': 'val_evaluator'}
    for key in keys:
        evaluator = cfg.get(evaluators.get(key, ''))
        if isinstance(evaluator, dict) and evaluator.get('ann_file'):
            read_annotation_file(evaluator.ann_file)


def _data_hint(cfg: Config) -> str:
    if cfg.get('demo_data') is not None:
        return ('It is not a complete demo data set: generate one with `python '
                'tools/make_demo_data.py --out DIR`, or drop --data-root.')
    return ('Put COCO 2017 there (images in val2017/ and train2017/, annotations in '
            'annotations/instances_*2017.json, from cocodataset.org) or point the run at '
            'your copy with --data-root DIR.')


def check_checkpoint(path: Optional[str]) -> None:
    """Fail with one clear sentence (CheckpointError) when a checkpoint path is missing."""
    from detptq.utils.checkpoint import CheckpointError
    if path and not osp.isfile(path) and '://' not in path:
        raise CheckpointError(
            f'checkpoint {path!r} does not exist. For official YOLOv6/YOLOv7 '
            'releases download the .pt file and convert it with '
            '`python tools/convert_ckpt.py SRC.pt OUT.pth`; demo checkpoints '
            'are in checkpoints/.')



def require_checkpoint(path: str) -> None:
    """check_checkpoint plus a cheap readability look, as one sentence (UserInputError)."""
    try:
        check_checkpoint(path)
    except FileNotFoundError as err:
        raise UserInputError(str(err)) from err
    check_checkpoint_readable(path)


def resolve_checkpoint(cfg: Config, checkpoint: str) -> str:
    """The checkpoint to load: official pickled releases are converted first.

    An official YOLOv6/YOLOv7 ``.pt`` file cannot be loaded safely as it is;
    it is converted once (restricted unpickler, see tools/convert_ckpt.py)
    into ``work_dir/converted_<name>_<digest>.pth``: the source's content
    digest in the name means a replaced source file is converted again.
    """
    import glob

    from detptq.models.converters import ConversionError, convert_checkpoint
    from detptq.utils.checkpoint import CheckpointError, load_checkpoint_file
    from detptq.utils.fingerprint import file_digest
    check_checkpoint(checkpoint)
    if not checkpoint.endswith('.pt'):
        return checkpoint  # the runner's loader names the file if it is unsafe
    try:
        load_checkpoint_file(checkpoint)  # a .pt may still be plain tensors
        return checkpoint
    except CheckpointError:
        pass
    stem = osp.join(cfg.work_dir, 'converted_' + osp.splitext(osp.basename(checkpoint))[0])
    out = f'{stem}_{file_digest(checkpoint)[:12]}.pth'
    if not osp.isfile(out):
        older = sorted(glob.glob(f'{stem}_*.pth'))
        why = (f' ({older[-1]} was converted from other bytes of that file)' if older else '')
        print(f'{checkpoint} is a pickled official release: converting it to {out}{why}')
        try:
            convert_checkpoint(checkpoint, out, config=cfg.filename)
        except ConversionError as err:
            raise CheckpointError(f'{checkpoint!r} cannot be loaded: {err}') from err
    return out


def build_eval_runner(cfg: Config, checkpoint: str):
    """A Runner that evaluates ``checkpoint``; deploy-form files get a fused model first.

    Loading is strict (StrictLoadCheckpointHook): a file whose keys or shapes
    do not fit the config's model is an error naming the keys, not a warning.
    """
    from mmengine.runner import Runner

    from detptq.models.deploy import switch_to_deploy
    from detptq.utils.checkpoint import is_deploy_checkpoint
    try:
        checkpoint = resolve_checkpoint(cfg, checkpoint)
    except FileNotFoundError as err:  # check_checkpoint's sentence
        raise UserInputError(str(err)) from err
    cfg.load_from = checkpoint
    # a checkpoint's state_dict already holds the EMA weights
    cfg.custom_hooks = [h for h in cfg.get('custom_hooks', [])
                        if h.get('type') != 'EMAHook'] + [dict(type='StrictLoadCheckpointHook')]
    runner = Runner.from_cfg(cfg)
    if is_deploy_checkpoint(checkpoint):
        switch_to_deploy(runner.model)
    return runner


def is_ptq_loop(test_cfg: Optional[dict]) -> bool:
    """True when ``test_cfg`` declares detptq's PTQLoop."""
    return bool(test_cfg) and test_cfg.get('type') in (PTQ_LOOP, f'detptq.{PTQ_LOOP}')


def load_ptq_config(args) -> tuple:
    """Config and FP checkpoint of a PTQ tool run (tools/quantize.py, analyze_sensitivity.py).

    ``args`` has config, cfg_options, work_dir, data_root and checkpoint (and
    optionally num_calib_images). Every setting the run needs -- bit widths,
    counts, probabilities, learning rates and every registry ``type`` -- is
    checked here, before any data is read; ``cfg.num_calib_images`` is set.
    Raises UserInputError naming the key and value.
    """
    from detptq.quantization import merge_qcfg
    cfg = load_config(args.config, args.cfg_options, args.work_dir, test_loop=PTQ_LOOP)
    if args.data_root:
        set_data_root(cfg, args.data_root)
    for key in ('quant_cfg', 'calib_dataloader'):
        if cfg.get(key) is None:
            raise UserInputError(f'{args.config}: no `{key}` in the config; inherit a '
                                 'configs/_base_/ptq/*.py file and a data set config')
    if not is_ptq_loop(cfg.test_cfg):
        raise UserInputError(f'{args.config}: test_cfg.type={cfg.test_cfg.get("type")!r}, but a PTQ run is the '
                             f'config\'s test loop and must be {PTQ_LOOP!r} (inherit a '
                             'configs/_base_/ptq/*.py file, or drop test_cfg)')
    apply_deploy_backend(cfg)
    try:
        merged = merge_qcfg(cfg.quant_cfg)
    except ValueError as err:
        raise UserInputError(f'{args.config}: {err}') from err
    cfg.num_calib_images = resolve_num_calib_images(getattr(args, 'num_calib_images', None), cfg)
    check_quant_types(merged)
    check_recon_cfg(cfg.get('recon_cfg'))
    check_run_types(cfg, ('test_dataloader', 'calib_dataloader'), ('test_evaluator',))
    checkpoint = args.checkpoint or cfg.get('load_from')
    if not checkpoint:
        raise UserInputError(f'{args.config}: no checkpoint; pass --checkpoint or set load_from')
    require_checkpoint(checkpoint)
    ensure_writable_dir(cfg.work_dir, 'work dir')
    return cfg, checkpoint


def calib_dir_dataloader(cfg: Config, calib_dir: str, num_images: int, seed: int) -> dict:
    """A calibration loader over a folder of images (``ImageFolderDataset``), no annotations.

    The pipeline is the config's test pipeline without ``LoadAnnotations``, so the
    images are letterboxed exactly as at evaluation; batch size and workers are
    the config's calibration loader's.
    """
    base = cfg.get('calib_dataloader') or cfg.test_dataloader
    pipeline = [dict(step) for step in cfg.test_dataloader.dataset.pipeline
                if step.get('type') != 'LoadAnnotations']
    return dict(
        batch_size=base.get('batch_size', 8), num_workers=base.get('num_workers', 0),
        persistent_workers=False, drop_last=False,
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dict(type='ImageFolderDataset', data_root=calib_dir, num_images=num_images,
                     seed=seed, pipeline=pipeline,
                     backend_args=cfg.test_dataloader.dataset.get('backend_args')))


def apply_deploy_backend(cfg: Config) -> None:
    """Copy a config's ``deploy_backend`` (configs/_base_/ptq/tensorrt.py) into ``quant_cfg.backend``.

    A separate top-level key, because mmengine refuses two ``_base_`` files
    defining the same key (the method file already defines ``quant_cfg``).
    """
    backend = cfg.get('deploy_backend')
    if backend is None:
        return
    current = cfg.quant_cfg.get('backend')
    if current not in (None, backend):
        raise UserInputError(f'{cfg.filename}: deploy_backend={backend!r} but '
                         f'quant_cfg.backend={current!r}; set one of them')
    cfg.quant_cfg.backend = backend
