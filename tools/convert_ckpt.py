"""Convert an official YOLOv6 / YOLOv7 release or an mmyolo checkpoint to a detptq checkpoint.

    python tools/convert_ckpt.py yolov6s.pt work_dirs/yolov6s_detptq.pth
    python tools/convert_ckpt.py yolov7.pt yolov7.pth --config configs/_base_/models/yolov7.py
    python tools/convert_ckpt.py mmyolo_v6n.pth out.pth --model-type mmyolo

Official ``.pt`` files are pickled whole models; they are read with a
restricted unpickler that never imports ``yolov6``/``models`` nor runs code
from the file. The output holds plain tensors only:
``{'state_dict': ..., 'meta': {...}}``, loadable by mmengine (``load_from``).
Without ``--config`` the base model config is chosen from the class names
pickled in an official file (QARepVGG v1 and v2 share every key) and the
tensor shapes; a ``--config`` contradicting those class names is refused.
"""
import argparse
import json

from detptq.models.converters import ConversionError, convert_checkpoint
from detptq.utils.cli import UserInputError, run_tool


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert official YOLOv6/YOLOv7 or mmyolo checkpoints.')
    parser.add_argument('src', help='source checkpoint (.pt / .pth)')
    parser.add_argument('out', help='output detptq checkpoint (.pth)')
    parser.add_argument('--config', default=None,
                        help='detptq config whose model the weights are for '
                        '(default: chosen from the pickled class names and '
                        'the tensor shapes)')
    parser.add_argument('--model-type', default='auto',
                        choices=['auto', 'yolov6', 'yolov7', 'mmyolo'],
                        help='source format (default: detected)')
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    try:
        ckpt = convert_checkpoint(args.src, args.out, config=args.config,
                                  model_type=args.model_type)
    except ConversionError as err:
        raise UserInputError(str(err)) from err
    meta = ckpt['meta']
    print(f"converted {meta['source_format']} -> {args.out}")
    print(f"  model: {meta['looks_like']}  config: {meta['config']}")
    print(f"  {meta['num_source_keys']} source keys, {meta['num_model_keys']} "
          f"model keys, {len(meta['dropped_keys'])} dropped, "
          f"{len(meta['filled_keys'])} filled by rule")
    for key, why in list(meta['dropped_keys'].items())[:5]:
        print(f'  dropped {key}: {why}')
    for warning in meta['warnings']:
        print(f'  warning: {warning}')
    if meta['filled_keys']:
        print('  filled: ' + json.dumps(dict(list(meta['filled_keys'].items())[:5])))
    return 0


if __name__ == '__main__':
    run_tool(main)
