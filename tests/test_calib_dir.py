"""Calibration from a plain folder of images: ImageFolderDataset and tools/quantize.py --calib-dir."""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from mmengine.registry import init_default_scope

from detptq.datasets.image_folder import ImageFolderDataset, ImageFolderError, list_images
from test_ptq_pipeline import CONFIG, ROOT, TINY_DATA, tiny_setup  # noqa: F401 (fixture)

PIPELINE = [dict(type='LoadImageFromFile'),
            dict(type='YOLOLetterbox', scale=(96, 96), pad_val=114),
            dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape',
                                                  'img_shape', 'scale_factor', 'pad_param'))]


def make_folder(root: Path, source_images: list) -> Path:
    """Three readable images in nested folders (mixed-case extensions), a corrupt one, a .txt."""
    folder = root / 'my_images'
    (folder / 'sub' / 'deeper').mkdir(parents=True, exist_ok=True)
    img = [cv2.imread(str(p)) for p in source_images[:3]]
    cv2.imwrite(str(folder / 'a.JPG'), img[0])
    cv2.imwrite(str(folder / 'sub' / 'b.png'), img[1])
    cv2.imwrite(str(folder / 'sub' / 'deeper' / 'c.jpeg'), img[2])
    (folder / 'sub' / 'broken.jpg').write_bytes(b'\xff\xd8\xff\xe0 not really a jpeg')
    (folder / 'sub' / 'notes.txt').write_text('not an image')
    return folder


@pytest.fixture(scope='module')
def image_folder(tiny_setup):  # noqa: F811
    tmp, data, _ = tiny_setup
    return make_folder(tmp, sorted((data / 'images' / 'calib').glob('*.jpg')))


def test_folder_sample_is_recursive_seeded_and_skips_unreadable(image_folder) -> None:
    init_default_scope('detptq')
    names = [Path(p).name for p in list_images(str(image_folder))]
    assert names == ['a.JPG', 'b.png', 'broken.jpg', 'c.jpeg']  # sorted paths, no .txt
    full = ImageFolderDataset(data_root=str(image_folder), pipeline=PIPELINE)
    assert sorted(Path(p).name for p in full.file_list()) == ['a.JPG', 'b.png', 'c.jpeg']
    assert [Path(p).name for p in full.skipped] == ['broken.jpg']
    item = full[0]
    assert tuple(item['inputs'].shape) == (3, 96, 96)
    assert 'gt_instances' not in item['data_samples'] or \
        len(item['data_samples'].gt_instances) == 0

    def sample(seed):
        return ImageFolderDataset(data_root=str(image_folder), num_images=2, seed=seed,
                                  pipeline=PIPELINE).file_list()

    assert sample(0) == sample(0)
    assert len({tuple(sample(seed)) for seed in range(6)}) > 1  # the seed decides the sample


def test_folder_without_images_is_an_error(tmp_path) -> None:
    (tmp_path / 'empty' / 'sub').mkdir(parents=True)
    (tmp_path / 'empty' / 'sub' / 'readme.txt').write_text('x')
    with pytest.raises(ImageFolderError, match='no image file'):
        ImageFolderDataset(data_root=str(tmp_path / 'empty'), pipeline=PIPELINE)


def quantize(tmp: Path, data: Path, ckpt: Path, name: str, *args: str):
    """tools/quantize.py with MinMax W8A8 on the tiny model; extra command-line ``args``."""
    cfg_path = tmp / f'{name}.py'
    cfg_path.write_text(CONFIG.format(base=ROOT / 'configs/demo/yolov6n_demo_minmax_w8a8.py',
                                      data=data, demo=TINY_DATA, ckpt=ckpt))
    return subprocess.run(
        [sys.executable, str(ROOT / 'tools/quantize.py'), str(cfg_path),
         '--work-dir', str(tmp / name), *args],
        capture_output=True, text=True, cwd=str(tmp), timeout=600,
        env={**os.environ, 'DETPTQ_CACHE': str(tmp / 'cache'), 'OMP_NUM_THREADS': '1'})


def test_quantize_calibrates_on_a_folder_and_evaluates_on_val(tiny_setup, image_folder) -> None:
    tmp, data, ckpt = tiny_setup
    proc = quantize(tmp, data, ckpt, 'folder', '--calib-dir', str(image_folder),
                    '--num-calib-images', '10')
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert 'skipped 1 unreadable image file(s)' in log
    listed = (tmp / 'folder' / 'calib_files.txt').read_text().split()
    assert sorted(Path(p).name for p in listed) == ['a.JPG', 'b.png', 'c.jpeg']
    result = json.loads((tmp / 'folder' / 'result.json').read_text())
    assert result['calib_images'] == 3
    assert 0.0 <= result['quant_metrics']['mAP'] <= 1.0  # evaluated on the config's val set


def test_quantize_without_labels(tiny_setup, image_folder) -> None:
    tmp, data, ckpt = tiny_setup
    proc = quantize(tmp, data, ckpt, 'nolabels', '--calib-dir', str(image_folder),
                    '--num-calib-images', '2', '--no-eval')
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp / 'nolabels' / 'result.json').read_text())
    assert result['calib_images'] == 2
    assert result['fp_metrics'] == {} and result['quant_metrics'] == {}
    assert 'not evaluated' in result['note']
    assert (tmp / 'nolabels' / 'quantized.pth').stat().st_size > 0


def test_quantize_with_an_empty_folder_says_so(tiny_setup) -> None:
    tmp, data, ckpt = tiny_setup
    empty = tmp / 'no_images'
    empty.mkdir(exist_ok=True)
    proc = quantize(tmp, data, ckpt, 'empty', '--calib-dir', str(empty))
    assert proc.returncode != 0
    assert f"calibration image folder '{empty}' holds no image file" in proc.stderr
    assert 'Traceback' not in proc.stderr
