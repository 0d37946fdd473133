"""Config loading shared by the command-line tools: overrides, work dirs, data checks."""
from __future__ import annotations

import os.path as osp
from typing import Iterable, Optional

from mmengine.config import Config, DictAction

__all__ = ['DictAction', 'build_eval_runner', 'load_config', 'load_ptq_config', 'check_data',
           'check_checkpoint', 'resolve_checkpoint', 'set_data_root', 'dataloader_cfgs']

DATALOADER_KEYS = ('train_dataloader', 'val_dataloader', 'test_dataloader',
                   'calib_dataloader')
EVALUATOR_KEYS = ('val_evaluator', 'test_evaluator')


def load_config(path: str, cfg_options: Optional[dict] = None,
                work_dir: Optional[str] = None) -> Config:
    """Read a config file, apply --cfg-options and pick a work_dir."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'config file not found: {path!r}')
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
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


def set_data_root(cfg: Config, data_root: str) -> None:
    """Point every data loader and COCO evaluator of ``cfg`` at ``data_root``."""
    old = cfg.get('data_root')
    cfg.data_root = data_root
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


def _dataset_files(loader_cfg) -> list:
    dataset = loader_cfg.dataset
    root = dataset.get('data_root') or ''
    files = []
    if dataset.get('ann_file'):
        files.append(osp.join(root, dataset.ann_file))
    img_dir = (dataset.get('data_prefix') or {}).get('img')
    if img_dir:
        files.append(osp.join(root, img_dir))
    return files


def check_data(cfg: Config, keys: Iterable[str]) -> None:
    """Fail with one clear sentence when a data set the run needs is missing.

    Demo data (configs with ``demo_data``) is generated on first use instead.
    """
    demo = cfg.get('demo_data')
    if demo is not None:
        from detptq.datasets.demo_data import ensure_demo_dataset
        ensure_demo_dataset(cfg.data_root, **demo)
        return
    for key in keys:
        loader = cfg.get(key)
        if loader is None:
            continue
        for path in _dataset_files(loader):
            if not osp.exists(path):
                raise FileNotFoundError(
                    f'{key}: {path!r} does not exist. Put COCO 2017 there '
                    '(images in val2017/ and train2017/, annotations in '
                    'annotations/instances_*2017.json, from cocodataset.org) '
                    'or point the run at your copy with --data-root DIR.')


def check_checkpoint(path: Optional[str]) -> None:
    """Fail with one clear sentence (CheckpointError) when a checkpoint path is missing."""
    from detptq.utils.checkpoint import CheckpointError
    if path and not osp.isfile(path) and '://' not in path:
        raise CheckpointError(
            f'checkpoint {path!r} does not exist. For official YOLOv6/YOLOv7 '
            'releases download the .pt file and convert it with '
            '`python tools/convert_ckpt.py SRC.pt OUT.pth`; demo checkpoints '
            'are in checkpoints/.')


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
    checkpoint = resolve_checkpoint(cfg, checkpoint)
    cfg.load_from = checkpoint
    # a checkpoint's state_dict already holds the EMA weights
    cfg.custom_hooks = [h for h in cfg.get('custom_hooks', [])
                        if h.get('type') != 'EMAHook'] + [dict(type='StrictLoadCheckpointHook')]
    runner = Runner.from_cfg(cfg)
    if is_deploy_checkpoint(checkpoint):
        switch_to_deploy(runner.model)
    return runner


def load_ptq_config(args) -> tuple:
    """Config and FP checkpoint of a PTQ tool run (tools/quantize.py, analyze_sensitivity.py).

    ``args`` has config, cfg_options, work_dir, data_root and checkpoint.
    Exits with one sentence naming what is missing or invalid.
    """
    from detptq.quantization import merge_qcfg
    cfg = load_config(args.config, args.cfg_options, args.work_dir)
    if args.data_root:
        set_data_root(cfg, args.data_root)
    for key in ('quant_cfg', 'calib_dataloader'):
        if cfg.get(key) is None:
            raise SystemExit(f'{args.config}: no `{key}` in the config; inherit a '
                             'configs/_base_/ptq/*.py file and a data set config')
    try:
        merge_qcfg(cfg.quant_cfg)
    except ValueError as err:
        raise SystemExit(f'{args.config}: {err}')
    checkpoint = args.checkpoint or cfg.get('load_from')
    if not checkpoint:
        raise SystemExit(f'{args.config}: no checkpoint; pass --checkpoint or set load_from')
    return cfg, checkpoint
