"""Quantize a trained detector after training and report FP vs quantized COCO mAP.

    python tools/quantize.py configs/demo/yolov6n_demo_detptq_w4a8.py
    python tools/quantize.py configs/yolov6s_detptq.py --checkpoint yolov6s.pth --data-root data/coco
    python tools/quantize.py CONFIG --cfg-options quant_cfg.w_bits=4 recon_cfg.iters=500
    python tools/quantize.py CONFIG --calib-dir my_images/ --num-calib-images 256 [--no-eval]
    tools/dist_quantize.sh CONFIG 8 [args]   # torchrun: rank 0 quantizes, evaluation is sharded

Writes WORK_DIR/result.json (the leaderboard row) and WORK_DIR/quantized.pth.
Re-running the same command resumes: FP metrics and finished reconstruction
units are reused.

The shape of mmdet's tools/test.py: load the config, apply the options (the
flags below become config settings: --num-calib-images -> num_calib_images,
--calib-dir -> calib_dataloader, --no-fp-eval / --no-eval -> test_cfg.eval_fp /
test_cfg.run_eval), build the Runner and call ``runner.test()``, which runs the
config's test loop, PTQLoop (detptq/engine/loops/ptq_loop.py).
"""
import argparse
import os
import os.path as osp

from detptq.datasets.image_folder import DEFAULT_CALIB_SEED
from detptq.engine.config_utils import (DictAction, build_eval_runner, calib_dir_dataloader,
                                        check_data, load_ptq_config)
from detptq.utils.cli import UserInputError, run_tool
from detptq.utils.distributed import add_launcher_args, init_distributed, is_main_process

# Ranks other than 0 wait in one broadcast while rank 0 calibrates and reconstructs
# (detptq.utils.distributed); torch's default 30-minute collective timeout is too short.
PTQ_DIST_TIMEOUT_S = 24 * 3600


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Post-training quantization.')
    parser.add_argument('config', help='PTQ config (model + data + quant_cfg)')
    parser.add_argument('--checkpoint', help='FP checkpoint (default: the config\'s load_from)')
    parser.add_argument('--work-dir', help='output folder (default: work_dirs/<config name>)')
    parser.add_argument('--data-root', help='data set root (default: the config\'s)')
    parser.add_argument('--num-calib-images', type=int,
                        help='calibration images (default: the config\'s)')
    parser.add_argument('--calib-dir',
                        help='calibrate on the jpg/png files under this folder (recursive, '
                             'no annotations) instead of the config\'s calibration set')
    parser.add_argument('--calib-seed', type=int, default=DEFAULT_CALIB_SEED,
                        help='seed of the --calib-dir image sample (default: %(default)s)')
    parser.add_argument('--no-fp-eval', action='store_true',
                        help='skip evaluating the FP model')
    parser.add_argument('--no-eval', action='store_true',
                        help='no evaluation at all (no labelled val set): result.json has no mAP')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. quant_cfg.w_bits=4')
    add_launcher_args(parser)
    return parser.parse_args()


def use_calib_dir(cfg, calib_dir: str, num_images: int, seed: int) -> None:
    """Calibrate on a folder of images; write the chosen files to WORK_DIR/calib_files.txt.

    The sample is drawn here once so that an empty folder stops the run with one
    sentence before anything is built; the loop redraws the same files (same seed).
    """
    from mmengine.registry import init_default_scope

    from detptq.datasets.image_folder import ImageFolderError
    from detptq.registry import DATASETS
    cfg.calib_dataloader = calib_dir_dataloader(cfg, calib_dir, num_images, seed)
    init_default_scope(cfg.get('default_scope', 'detptq'))
    try:
        dataset = DATASETS.build(cfg.calib_dataloader['dataset'])
    except ImageFolderError as err:
        raise UserInputError(str(err)) from None
    if not is_main_process():  # one writer
        return
    os.makedirs(cfg.work_dir, exist_ok=True)
    with open(osp.join(cfg.work_dir, 'calib_files.txt'), 'w') as f:
        f.writelines(path + '\n' for path in dataset.file_list())


def skip_evaluation(cfg) -> None:
    """--no-eval: the test loader reads the calibration images and no annotation file is opened."""
    cfg.test_dataloader = cfg.calib_dataloader
    cfg.test_evaluator = dict(type='CocoMetric', metric='bbox')  # never computed


def apply_flags(cfg, args: argparse.Namespace) -> None:
    """The command-line flags as config settings, checked before the Runner is built."""
    if args.calib_dir:
        use_calib_dir(cfg, args.calib_dir, cfg.num_calib_images, args.calib_seed)
    if args.no_eval:
        skip_evaluation(cfg)
        cfg.test_cfg.run_eval = False
    if args.no_fp_eval or args.no_eval:
        cfg.test_cfg.eval_fp = False
    needed = ([] if args.no_eval else ['test_dataloader']) + \
        ([] if args.calib_dir else ['calib_dataloader'])
    check_data(cfg, needed, min_images=None if args.calib_dir
               else {'calib_dataloader': cfg.num_calib_images})


def main() -> None:
    args = parse_args()
    cfg, checkpoint = load_ptq_config(args)  # every setting checked before any work
    init_distributed(cfg, args, default_timeout=PTQ_DIST_TIMEOUT_S)
    apply_flags(cfg, args)
    # the config's test loop is PTQLoop (configs/_base_/ptq/): runner.test() quantizes
    build_eval_runner(cfg, checkpoint).test()


if __name__ == '__main__':
    run_tool(main)
