"""Quantize a trained detector after training and report FP vs quantized COCO mAP.

    python tools/quantize.py configs/demo/yolov6n_demo_detptq_w4a8.py
    python tools/quantize.py configs/yolov6s_detptq.py --checkpoint yolov6s.pth --data-root data/coco
    python tools/quantize.py CONFIG --cfg-options quant_cfg.w_bits=4 recon_cfg.iters=500

Writes WORK_DIR/result.json (the leaderboard row) and WORK_DIR/quantized.pth.
Re-running the same command resumes: FP metrics and finished reconstruction
units are reused.
"""
import argparse

from detptq.engine.config_utils import (DictAction, build_eval_runner,
                                        check_data, load_ptq_config)
from detptq.utils.cli import run_tool


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Post-training quantization.')
    parser.add_argument('config', help='PTQ config (model + data + quant_cfg)')
    parser.add_argument('--checkpoint', help='FP checkpoint (default: the config\'s load_from)')
    parser.add_argument('--work-dir', help='output folder (default: work_dirs/<config name>)')
    parser.add_argument('--data-root', help='data set root (default: the config\'s)')
    parser.add_argument('--num-calib-images', type=int,
                        help='calibration images (default: the config\'s)')
    parser.add_argument('--no-fp-eval', action='store_true',
                        help='skip evaluating the FP model')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. quant_cfg.w_bits=4')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    cfg, checkpoint = load_ptq_config(args)  # every setting checked before any work
    check_data(cfg, ['test_dataloader', 'calib_dataloader'],
               min_images={'calib_dataloader': cfg.num_calib_images})
    cfg.test_cfg = dict(
        type='PTQLoop', calib_dataloader=cfg.calib_dataloader,
        quant_cfg=cfg.quant_cfg, recon_cfg=cfg.get('recon_cfg'),
        num_calib_images=cfg.num_calib_images,
        eval_fp=not args.no_fp_eval, method=cfg.get('method', 'ptq'),
        model_name=cfg.get('model_name'))
    build_eval_runner(cfg, checkpoint).test()


if __name__ == '__main__':
    run_tool(main)
