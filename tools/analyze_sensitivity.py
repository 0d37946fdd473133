"""Per-layer quantization sensitivity of a detector: which layers hurt most when quantized.

    python tools/analyze_sensitivity.py configs/demo/yolov6n_demo_minmax_w4a8.py
    python tools/analyze_sensitivity.py configs/yolov6s_minmax_w4a8.py --checkpoint yolov6s.pth \\
        --data-root data/coco --num-images 32 --metric odol --mode both --top 10

Quantizes the model with the config's ``quant_cfg``, calibrates once on N
images of ``calib_dataloader``, then measures the error of the dense head
outputs vs. the float model with only one layer quantized (``one``) and/or
all layers but one (``all-but-one``). Writes WORK_DIR/sensitivity.json and
WORK_DIR/sensitivity.png and prints the most sensitive layers.
"""
import argparse
import os.path as osp
import time

from mmengine.config import DictAction

# the same as detptq.analysis.sensitivity's (a test checks); spelled out here so that
# bad arguments fail before the slow torch/mmdet imports
METRICS = ('odol', 'mse')
MODES = ('one', 'all-but-one', 'both')


def positive_int(text: str) -> int:
    """argparse type: an int >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not an integer')
    if value < 1:
        raise argparse.ArgumentTypeError(f'{value} is not a positive integer')
    return value


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Per-layer quantization sensitivity.')
    parser.add_argument('config', help='PTQ config (model + data + quant_cfg + calib_dataloader)')
    parser.add_argument('--checkpoint', help="FP checkpoint (default: the config's load_from)")
    parser.add_argument('--work-dir', help='output folder (default: work_dirs/<config name>)')
    parser.add_argument('--data-root', help="data set root (default: the config's)")
    parser.add_argument('--num-images', type=positive_int, default=32,
                        help='calibration images, used both to calibrate and to measure (32)')
    parser.add_argument('--metric', choices=METRICS, default='odol',
                        help='error of the dense outputs vs. float: ODOL (KL + L1) or MSE')
    parser.add_argument('--mode', choices=MODES, default='both',
                        help='one: only this layer quantized; all-but-one: all but this layer')
    parser.add_argument('--top', type=positive_int, default=10, help='rows of the printed table')
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. quant_cfg.w_bits=4')
    return parser.parse_args()


def main() -> None:
    args = parse_args()  # bad arguments fail before the slow imports
    from detptq.utils.cli import run_tool
    run_tool(lambda: run(args))


def run(args: argparse.Namespace) -> None:
    """Quantize, calibrate, measure every layer, write the JSON/PNG and print the table."""
    from detptq.engine.config_utils import (build_eval_runner, check_data,
                                            load_ptq_config)
    from detptq.quantization import calibrate, quantize_model
    from detptq.quantization.calibration_set import CalibrationSet
    from detptq.analysis.sensitivity import (format_top_table, layer_sensitivity,
                                                 save_sensitivity)
    from detptq.models.dense_outputs import default_dense_fn

    cfg, checkpoint = load_ptq_config(args)
    check_data(cfg, ['calib_dataloader'])
    start = time.time()
    runner = build_eval_runner(cfg, checkpoint)
    runner.load_or_resume()  # runner.test() would do it; we never call test()
    model = runner.model.eval()

    calib = CalibrationSet.from_loader(runner.build_dataloader(cfg.calib_dataloader),
                                       model.data_preprocessor,
                                       num_images=args.num_images).first(args.num_images)
    if calib.num_images < args.num_images:
        print(f'warning: the calibration set has only {calib.num_images} images '
              f'(asked for {args.num_images})')
    model_q = quantize_model(model, cfg.quant_cfg)
    # the same tensors and forward as the measurement, so every layer sees what it is scored on
    calibrate(model_q, calib, forward_fn=default_dense_fn, progress=not args.no_progress)
    results = layer_sensitivity(model_q, calib, metric=args.metric, mode=args.mode,
                                progress=not args.no_progress)

    json_path = osp.join(cfg.work_dir, 'sensitivity.json')
    png_path = osp.join(cfg.work_dir, 'sensitivity.png')
    meta = dict(config=args.config, checkpoint=checkpoint, quant_cfg=cfg.quant_cfg.to_dict()
                if hasattr(cfg.quant_cfg, 'to_dict') else dict(cfg.quant_cfg),
                num_images=results['images'], batch_size=calib.sizes[0],
                seconds=round(time.time() - start, 1))
    save_sensitivity(results, json_path, png_path, meta)
    print(format_top_table(results, args.top))
    print(f'wrote {json_path} and {png_path}')


if __name__ == '__main__':
    main()
