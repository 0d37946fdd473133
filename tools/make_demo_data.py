"""Generate the demo COCO-format data set (byte-identical for the same seed and size).

    python tools/make_demo_data.py --out data/demo
    python tools/make_demo_data.py --out /tmp/small --num-train 100 --num-val 50 --img-size 256

The tools generate it on first use anyway (in data/demo or $DETPTQ_DEMO_DATA);
this is for doing it ahead of time, elsewhere or with other sizes. It writes
only into an empty or new folder or one it generated itself, and completes
or repairs such a folder (files it wrote that are missing are regenerated);
--force also replaces a set it generated with other settings. It never
deletes a file it did not write.
"""
import argparse
import time

from detptq.datasets.demo_data import (default_demo_root, is_demo_dataset_complete,
                                       make_demo_dataset)
from detptq.utils.cli import run_tool


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default=str(default_demo_root()),
                        help='output folder (default: data/demo or $DETPTQ_DEMO_DATA)')
    parser.add_argument('--seed', type=int, default=0, help='random seed (default 0)')
    parser.add_argument('--num-train', type=int, default=4000, help='training images')
    parser.add_argument('--num-val', type=int, default=500, help='validation images')
    parser.add_argument('--num-calib', type=int, default=256, help='calibration images')
    parser.add_argument('--num-tune', type=int, default=None,
                        help='tune-split images for choosing hyper-parameters (default: as val)')
    parser.add_argument('--img-size', type=int, default=320, help='square image side in px')
    parser.add_argument('--workers', type=int, default=None,
                        help='processes (default: up to 2); the output does not depend on it')
    parser.add_argument('--force', action='store_true',
                        help='regenerate even a complete set, or one generated with other '
                        'settings (never touches files the generator did not write)')
    args = parser.parse_args()
    for name in ('num_train', 'num_val', 'num_calib', 'num_tune'):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1')
    if args.seed < 0:
        parser.error('--seed must be >= 0')
    if args.img_size < 64:
        parser.error('--img-size must be >= 64')
    return args


def main() -> None:
    args = parse_args()
    params = dict(seed=args.seed, num_train=args.num_train, num_val=args.num_val,
                  num_calib=args.num_calib, num_tune=args.num_tune, img_size=args.img_size)
    if not args.force and is_demo_dataset_complete(args.out, **params):
        print(f'{args.out}: complete data set with these settings already there (--force to redo)')
        return
    start = time.time()
    manifest = make_demo_dataset(args.out, workers=args.workers, progress=True,
                                 force=args.force, **params)
    print(f'{args.out}: {manifest["files"]} images, {manifest["annotations"]} objects '
          f'in {time.time() - start:.1f} s')


if __name__ == '__main__':
    run_tool(main)
