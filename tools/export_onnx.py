"""Export a quantized detector (tools/quantize.py's quantized.pth) to a Q/DQ ONNX model.

    python tools/export_onnx.py configs/demo/yolov6n_demo_minmax_w8a8.py \\
        --checkpoint work_dirs/yolov6n_demo_minmax_w8a8/quantized.pth --verify --eval
    python tools/export_onnx.py CONFIG --checkpoint Q.pth --decode --out model.onnx
    python tools/export_onnx.py CONFIG --checkpoint Q.pth --int8-conv-outputs --eval  # onnxruntime

Default output: next to the checkpoint, ``quantized.onnx`` (``quantized_decode.onnx``
with ``--decode``), plus ``<out>.json`` with the export notes and the figures of
``--verify`` (ORT vs PyTorch on calibration images) and ``--eval`` (COCO mAP of
the ONNX model through mmdet's CocoMetric). The graph input is the data
preprocessor's output (RGB, /255, letterboxed), named ``images``.
"""
from __future__ import annotations

import argparse
import json
import os.path as osp
from typing import Any, Dict, List, Optional, Sequence


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    from detptq.engine.config_utils import DictAction
    parser = argparse.ArgumentParser(description='Quantized detector -> Q/DQ ONNX.')
    parser.add_argument('config', help='the config the checkpoint was quantized with')
    parser.add_argument('--checkpoint', required=True, help='WORK_DIR/quantized.pth')
    parser.add_argument('--out', help='ONNX file (default: next to the checkpoint)')
    parser.add_argument('--decode', action='store_true',
                        help='outputs boxes (xyxy) + scores instead of raw head maps (no NMS)')
    parser.add_argument('--verify', action='store_true',
                        help='compare onnxruntime with the PyTorch fake-quant model')
    parser.add_argument('--eval', action='store_true', help='COCO mAP of the ONNX model')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input size (default: the test pipeline\'s letterbox size)')
    parser.add_argument('--opset', type=int, default=13, help='ONNX opset (>= 13)')
    parser.add_argument('--no-unify', action='store_true',
                        help='keep each layer\'s own activation scale (not TensorRT-friendly)')
    parser.add_argument('--int8-conv-outputs', action='store_true',
                        help='onnxruntime: add a calibrated output Q/DQ to convs that feed '
                             'float ops (the head\'s SiLU convs) so they run as QLinearConv; '
                             'one extra rounding, not needed for TensorRT')
    parser.add_argument('--num-verify-images', type=int, default=32,
                        help='calibration images used by --verify and --int8-conv-outputs')
    parser.add_argument('--threads', type=int, default=None, help='onnxruntime threads')
    parser.add_argument('--data-root', help='data set root (default: the config\'s)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys')
    return parser.parse_args(argv)


def letterbox_shape(cfg) -> List[int]:
    """(H, W) of the test pipeline's YOLOLetterbox, else 640 x 640."""
    loader = cfg.get('test_dataloader') or {}
    pipeline = (loader.get('dataset') or {}).get('pipeline') or []
    for step in pipeline:
        if step.get('type') == 'YOLOLetterbox' and step.get('scale') is not None:
            scale = step['scale']
            scale = [scale, scale] if isinstance(scale, int) else list(scale)
            return [int(scale[1]), int(scale[0])]  # mmdet scales are (w, h)
    return [640, 640]


def _print_export(result, out: str) -> None:
    print(f'wrote {out}  outputs: {", ".join(result.output_names)}')
    for note in result.notes:
        print(f'note: {note}')
    for group in result.groups:
        print(f'  scale group -> {group["chosen"]} (scale {group["scale"]:.4g}, zero point '
              f'{group["zero_point"]}); members: {", ".join(group["members"])}')
    if result.tensorrt_issues:
        print('TensorRT rules: ' + '; '.join(result.tensorrt_issues))
    else:
        print('TensorRT rules: all satisfied')


def _print_compare(stats: Dict[str, Dict[str, Dict[str, Any]]]) -> None:
    print('onnxruntime vs PyTorch (dense predictions before NMS; boxes in input pixels):')
    for session_label, rows in stats.items():
        print(f'  {session_label}')
        for label, s in rows.items():
            print(f'    vs {label:30s} images {s["images"]:4d}  scores |d| max '
                  f'{s["scores_max_abs"]:.3g} mean {s["scores_mean_abs"]:.3g}   boxes |d| max '
                  f'{s["boxes_max_abs"]:.3g} mean {s["boxes_mean_abs"]:.3g}')


def _pytorch_metrics(checkpoint: str) -> Optional[Dict[str, float]]:
    result = osp.join(osp.dirname(osp.abspath(checkpoint)), 'result.json')
    if not osp.isfile(result):
        return None
    with open(result) as f:
        return json.load(f).get('quant_metrics')


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    from detptq.engine.config_utils import check_data, load_config, set_data_root
    from detptq.export import (DetectorExportWrapper, export_qdq_onnx, load_quantized_model)
    from detptq.export.verify import (calibration_images, compare_with_pytorch,
                                      evaluate_onnx, make_session)
    from detptq.engine.input_checks import ensure_writable_dir
    from detptq.utils.cli import UserInputError
    from detptq.utils.io import write_json_atomic

    if not osp.isfile(args.config):
        raise UserInputError(f'config file {args.config!r} does not exist')
    if not osp.isfile(args.checkpoint):
        raise UserInputError(f'checkpoint {args.checkpoint!r} does not exist '
                             '(tools/quantize.py writes WORK_DIR/quantized.pth)')
    if args.opset < 13:
        raise UserInputError(f'--opset {args.opset}: per-channel Q/DQ needs opset >= 13')
    if args.num_verify_images < 1:
        raise UserInputError(f'--num-verify-images {args.num_verify_images}: expected >= 1')
    cfg = load_config(args.config, args.cfg_options)
    if args.data_root:
        set_data_root(cfg, args.data_root)
    out = args.out or osp.join(osp.dirname(osp.abspath(args.checkpoint)),
                               'quantized_decode.onnx' if args.decode else 'quantized.onnx')
    ensure_writable_dir(osp.dirname(osp.abspath(out)), 'export folder')
    if args.verify or args.int8_conv_outputs:
        check_data(cfg, ['calib_dataloader'])
    if args.eval:
        check_data(cfg, ['test_dataloader'])
    model_q = load_quantized_model(cfg, args.checkpoint)  # CheckpointError: one sentence
    height, width = args.shape or letterbox_shape(cfg)
    images = None
    if args.verify or args.int8_conv_outputs:
        images = calibration_images(cfg, model_q, args.num_verify_images)
    result = export_qdq_onnx(model_q, out, (1, 3, height, width), decode=args.decode,
                             opset=args.opset, unify=not args.no_unify,
                             conv_output_images=images if args.int8_conv_outputs else None)
    _print_export(result, out)
    summary: Dict[str, Any] = dict(
        onnx=osp.abspath(out), config=args.config, checkpoint=args.checkpoint,
        input_shape=[1, 3, height, width], decode=args.decode, opset=args.opset,
        outputs=result.output_names, notes=result.notes, scale_groups=result.groups,
        tensorrt_issues=result.tensorrt_issues, int8_output_convs=result.int8_output_convs)

    if args.verify:
        references = {'export form (deployed scales)': result.reference,
                      'fake-quant model': DetectorExportWrapper(model_q, args.decode).eval()}
        # as written: Q/DQ run literally (the export's own exactness); optimized: what
        # deployment runs (integer kernels, bias rounded to int32 at scale s_in * s_w)
        sessions = {'onnxruntime, Q/DQ as written': make_session(out, args.threads, False),
                    'onnxruntime, optimized (integer kernels)': make_session(out, args.threads)}
        stats = {label: compare_with_pytorch(session, references, model_q.bbox_head, images,
                                             args.decode)
                 for label, session in sessions.items()}
        _print_compare(stats)
        summary['verify'] = stats
    if args.eval:
        metrics = evaluate_onnx(make_session(out, args.threads), model_q, cfg, args.decode)
        summary['onnx_metrics'] = metrics
        print('ONNX (onnxruntime) COCO: ' + '  '.join(f'{k} {v:.3f}' for k, v in metrics.items()))
        reference = _pytorch_metrics(args.checkpoint)
        if reference:
            summary['pytorch_metrics'] = reference
            print('PyTorch fake-quant (result.json): ' + '  '.join(
                f'{k} {v:.3f}' for k, v in reference.items() if k in metrics))
    write_json_atomic(summary, out + '.json', indent=2)
    print(f'summary: {out}.json')
    return 0


if __name__ == '__main__':
    from detptq.utils.cli import run_tool
    run_tool(main)
