"""Evaluate a detector checkpoint with mmdet's CocoMetric.

    python tools/test.py configs/demo/yolov6n_demo.py checkpoints/yolov6n_demo.pth
    python tools/test.py configs/yolov6s_coco.py yolov6s.pth --data-root /data/coco
    tools/dist_test.sh configs/yolov6s_coco.py yolov6s.pth 8 --data-root /data/coco

Deploy-form checkpoints (RepVGG blocks already fused, as the demo checkpoints
and converted official files are) are detected from their keys, and the model
is switched to deploy form before loading. A PTQ config's test loop (PTQLoop)
is replaced by mmengine's TestLoop: this tool evaluates, tools/quantize.py quantizes.
"""
import argparse
import json
import os.path as osp

from detptq.engine.config_utils import (DictAction, build_eval_runner, check_data, is_ptq_loop,
                                        load_config, require_checkpoint, set_data_root)
from detptq.engine.input_checks import check_run_types, ensure_writable_dir
from detptq.utils.cli import run_tool
from detptq.utils.distributed import add_launcher_args, init_distributed, is_main_process
from detptq.utils.io import write_json_atomic


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='COCO mAP of a checkpoint.')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint: a detptq .pth, or an official YOLOv6/YOLOv7 .pt '
                        'release (converted on the fly into the work dir)')
    parser.add_argument('--work-dir', help='where logs go')
    parser.add_argument('--data-root', help='data set root (default: the config\'s)')
    parser.add_argument('--out', help='write the metrics to this JSON file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys')
    add_launcher_args(parser)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options, args.work_dir)
    init_distributed(cfg, args)
    if is_ptq_loop(cfg.test_cfg):
        cfg.test_cfg = dict(type='TestLoop')  # evaluate the checkpoint as it is, do not quantize
    if args.data_root:
        set_data_root(cfg, args.data_root)
    require_checkpoint(args.checkpoint)
    check_run_types(cfg, ['test_dataloader'], ['test_evaluator'])
    check_data(cfg, ['test_dataloader'])
    ensure_writable_dir(cfg.work_dir, 'work dir')
    if args.out:
        ensure_writable_dir(osp.dirname(osp.abspath(args.out)), '--out folder')
    metrics = build_eval_runner(cfg, args.checkpoint).test()
    if not is_main_process():  # every rank has the metrics; one prints and writes
        return
    print(json.dumps(metrics, indent=2))
    if args.out:
        write_json_atomic(dict(config=osp.abspath(args.config),
                               checkpoint=osp.abspath(args.checkpoint),
                               metrics=metrics), args.out, indent=2)


if __name__ == '__main__':
    run_tool(main)
