"""Turn a training checkpoint into a small deploy-ready one, with a JSON record.

    python tools/publish_ckpt.py configs/demo/yolov6n_demo.py \
        /root/detptq_runs/yolov6n_demo/epoch_8.pth checkpoints/yolov6n_demo.pth --fp16

The output holds plain tensors only (RepVGG blocks fused, training-only
branches dropped, FP16 on request), so it loads with torch's weights_only and
mmengine's load_checkpoint. Evaluate it with tools/test.py and record the
measured mAP with --metrics-json.
"""
import argparse
import json
import os.path as osp
import time

import torch
from mmengine.registry import init_default_scope

from detptq.engine.config_utils import check_checkpoint, load_config
from detptq.engine.hooks.strict_load_hook import (CheckpointMismatchError, checkpoint_state,
                                                  mismatch_message)
from detptq.engine.input_checks import ensure_writable_dir
from detptq.models.deploy import switch_to_deploy
from detptq.registry import MODELS
from detptq.utils.checkpoint import load_checkpoint_file, save_checkpoint_file
from detptq.utils.cli import UserInputError, run_tool
from detptq.utils.io import write_json_atomic


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='the config the checkpoint was trained with')
    parser.add_argument('checkpoint', help='a checkpoint tools/train.py wrote '
                        '(e.g. work_dirs/x/epoch_5.pth); read weights-only, never unpickled')
    parser.add_argument('out', help='output .pth')
    parser.add_argument('--fp16', action='store_true', help='store weights as FP16')
    parser.add_argument('--metrics-json', help='tools/test.py --out file to record')
    parser.add_argument('--note', default='', help='free text for the JSON record')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    cfg = load_config(args.config)
    if not osp.isfile(args.checkpoint):
        raise UserInputError(f'checkpoint {args.checkpoint!r} does not exist')
    ensure_writable_dir(osp.dirname(osp.abspath(args.out)), 'output folder')
    init_default_scope(cfg.get('default_scope', 'detptq'))
    model = MODELS.build(cfg.model)
    check_checkpoint(args.checkpoint)
    # weights-only with mmengine's MessageHub classes allowed: nothing in the file runs
    source = load_checkpoint_file(args.checkpoint)
    if not isinstance(source, dict):
        raise CheckpointMismatchError(f'{args.checkpoint!r} holds a {type(source).__name__}, '
                                      'not a checkpoint dict')
    state = checkpoint_state(source)  # its state_dict holds the EMA weights
    meta = source.get('meta') if isinstance(source.get('meta'), dict) else None
    problem = mismatch_message(args.checkpoint, state, model.state_dict(), meta)
    if problem:
        raise CheckpointMismatchError(problem)
    model.load_state_dict(state, strict=True)
    switch_to_deploy(model)
    state = {k: (v.half() if args.fp16 and v.is_floating_point() else v)
             for k, v in model.state_dict().items()}
    meta = source.get('meta', {}) if isinstance(source, dict) else {}
    record = dict(config=args.config, source=osp.basename(args.checkpoint),
                  epoch=meta.get('epoch'), iter=meta.get('iter'),
                  seed=meta.get('seed'), fp16=args.fp16, deploy=True,
                  created=time.strftime('%Y-%m-%dT%H:%M:%S'), note=args.note,
                  params=sum(v.numel() for v in state.values()))
    if args.metrics_json:
        with open(args.metrics_json) as f:
            record['metrics'] = json.load(f).get('metrics')
    save_checkpoint_file({'state_dict': state, 'meta': record}, args.out)
    write_json_atomic(record, osp.splitext(args.out)[0] + '.json', indent=2)
    size = osp.getsize(args.out) / 2 ** 20
    print(f'wrote {args.out} ({size:.1f} MiB) and its .json: {record}')


if __name__ == '__main__':
    torch.set_grad_enabled(False)
    run_tool(main)
