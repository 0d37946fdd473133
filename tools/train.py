"""Train a detector from a config with mmengine's Runner (resumable).

    python tools/train.py configs/demo/yolov6n_demo.py [--resume] [--work-dir DIR]
"""
import argparse

from mmengine.runner import Runner

from detptq.engine.config_utils import DictAction, check_data, load_config
from detptq.engine.input_checks import check_run_types, ensure_writable_dir
from detptq.utils.cli import run_tool


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a detptq detector.')
    parser.add_argument('config', help='config file')
    parser.add_argument('--work-dir', help='where logs and checkpoints go '
                        '(default: work_dirs/<config name>)')
    parser.add_argument('--resume', nargs='?', const='auto', default=None,
                        help='resume from CKPT, or from the latest checkpoint '
                        'in the work dir when no path is given')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. train_cfg.max_epochs=3')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options, args.work_dir)
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume:
        cfg.resume, cfg.load_from = True, args.resume
    check_run_types(cfg, ['train_dataloader', 'val_dataloader'], ['val_evaluator'])
    check_data(cfg, ['train_dataloader', 'val_dataloader'])
    ensure_writable_dir(cfg.work_dir, 'work dir')
    # --resume needs no trust: detptq's loader allow-lists the Runner's own classes
    Runner.from_cfg(cfg).train()


if __name__ == '__main__':
    run_tool(main)
