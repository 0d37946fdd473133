"""The generated demo data set: deterministic, COCO-valid, loadable by mmdet, not trivial."""
import hashlib
import json
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO

import pytest

from detptq.datasets.demo_data import (DEMO_CLASSES, ensure_demo_dataset,
                                       is_demo_dataset_complete, make_demo_dataset)
from detptq.datasets.demo_folder import DemoDataError

SMALL = dict(num_train=12, num_val=6, num_calib=4, img_size=128)


def digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob('*')) if p.is_file()}


def test_same_seed_is_byte_identical_and_worker_count_does_not_matter(tmp_path) -> None:
    make_demo_dataset(tmp_path / 'a', seed=3, workers=1, **SMALL)
    make_demo_dataset(tmp_path / 'b', seed=3, workers=2, **SMALL)
    make_demo_dataset(tmp_path / 'c', seed=4, workers=1, **SMALL)
    a, b, c = (digest(tmp_path / n) for n in 'abc')
    assert len(a) == 12 + 6 + 4 + 6 + 4 + 1  # images (tune as big as val), 4 annotation files, manifest
    assert a == b
    assert a['images/train/000000.jpg'] != c['images/train/000000.jpg']


def test_coco_format_and_content(tmp_path) -> None:
    make_demo_dataset(tmp_path, seed=0, num_train=40, num_val=2, num_calib=2, img_size=160)
    coco = COCO(str(tmp_path / 'annotations/instances_train.json'))
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(DEMO_CLASSES)
    per_image = [len(coco.getAnnIds(imgIds=i)) for i in coco.getImgIds()]
    assert len(per_image) == 40 and 1 <= min(per_image) and max(per_image) <= 20
    boxes = np.array([a['bbox'] for a in coco.loadAnns(coco.getAnnIds())])
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] > 0).all()
    assert (boxes[:, 0] + boxes[:, 2] <= 160).all() and (boxes[:, 1] + boxes[:, 3] <= 160).all()
    used = {a['category_id'] for a in coco.loadAnns(coco.getAnnIds())}
    assert len(used) >= 8
    # sizes from small to large objects
    sides = np.sqrt(boxes[:, 2] * boxes[:, 3])
    assert sides.min() < 16 and sides.max() > 48


def test_mmdet_coco_dataset_loads_it(tmp_path) -> None:
    from mmdet.datasets import CocoDataset
    ensure_demo_dataset(tmp_path, seed=0, **SMALL)
    dataset = CocoDataset(data_root=str(tmp_path), ann_file='annotations/instances_val.json',
                          data_prefix=dict(img='images/val/'), metainfo=dict(classes=DEMO_CLASSES),
                          pipeline=[], test_mode=True)
    coco = COCO(str(tmp_path / 'annotations/instances_val.json'))
    assert len(dataset) == 6
    assert sum(len(dataset[i]['instances']) for i in range(6)) == len(coco.getAnnIds())


def test_ensure_regenerates_an_incomplete_folder(tmp_path) -> None:
    ensure_demo_dataset(tmp_path, seed=0, **SMALL)
    assert is_demo_dataset_complete(tmp_path, seed=0, **SMALL)
    (tmp_path / 'images/val/000001.jpg').unlink()
    assert not is_demo_dataset_complete(tmp_path, seed=0, **SMALL)
    ensure_demo_dataset(tmp_path, seed=0, **SMALL)
    assert (tmp_path / 'images/val/000001.jpg').is_file()


def test_ensure_keeps_a_complete_folder_and_honours_the_env_root(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv('DETPTQ_DEMO_DATA', str(tmp_path / 'cache'))
    assert ensure_demo_dataset(seed=0, **SMALL) == str(tmp_path / 'cache')
    manifest = tmp_path / 'cache' / 'manifest.json'
    first = manifest.stat().st_mtime_ns
    ensure_demo_dataset(seed=0, **SMALL)
    assert manifest.stat().st_mtime_ns == first  # not regenerated
    before = digest(tmp_path / 'cache')
    with pytest.raises(DemoDataError, match='seed=0'):  # other settings: refused, not replaced
        ensure_demo_dataset(seed=1, **SMALL)
    assert digest(tmp_path / 'cache') == before
    make_demo_dataset(tmp_path / 'cache', seed=1, force=True, **SMALL)
    assert json.loads(manifest.read_text())['seed'] == 1


# sha1 of the annotation files generator version 1 wrote before the tune split existed
# (commit ea36a91, seed=3, SMALL): adding a split must not change any existing split.
V1_ANNOTATIONS = {
    'train': '0d43151e023ebe98546b1f13e711ae9998a0a225',
    'val': 'a6bf006c04ceffcd20d6b35b5b2c3297268201f9',
    'calib': 'c63f037f2fe4fe8672de523eac5ea41e347cee65',
}


def test_tune_split_leaves_the_other_splits_unchanged(tmp_path) -> None:
    make_demo_dataset(tmp_path / 'a', seed=3, workers=1, **SMALL)
    a = digest(tmp_path / 'a')
    for split, sha in V1_ANNOTATIONS.items():
        assert a[f'annotations/instances_{split}.json'] == sha, split
    # its own stream: no tune image repeats a val image
    vals = {h for k, h in a.items() if k.startswith('images/val/')}
    tunes = {h for k, h in a.items() if k.startswith('images/tune/')}
    assert len(tunes) == SMALL['num_val'] and not vals & tunes

    # a version-1 folder (no tune split in its manifest) only gains the split
    old = tmp_path / 'a'
    for path in (old / 'images' / 'tune').iterdir():
        path.unlink()
    (old / 'annotations' / 'instances_tune.json').unlink()
    manifest = json.loads((old / 'manifest.json').read_text())
    for key in ('files', 'annotations'):
        del manifest[key]['tune']
    del manifest['num_tune']
    (old / 'manifest.json').write_text(json.dumps(manifest))
    stamps = {p: p.stat().st_mtime_ns for p in old.rglob('*.jpg')}
    ensure_demo_dataset(old, seed=3, **SMALL)
    assert digest(old) == a
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # none rewritten


def test_generator_never_deletes_foreign_files(tmp_path) -> None:
    ensure_demo_dataset(tmp_path, seed=0, **SMALL)
    mine = tmp_path / 'images' / 'val' / 'mine.png'
    mine.write_bytes(b'\x89PNG user file')
    (tmp_path / 'images/val/000001.jpg').unlink()
    before = digest(tmp_path)
    with pytest.raises(DemoDataError, match='images/val/mine.png'):
        ensure_demo_dataset(tmp_path, seed=0, **SMALL)
    assert digest(tmp_path) == before


def test_interrupted_generation_is_finished_on_the_next_call(tmp_path, monkeypatch) -> None:
    import detptq.datasets.demo_data as demo_data
    calls = []

    def fail_after_manifest(*args, **kwargs):
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(demo_data, '_render_splits', fail_after_manifest)
    with pytest.raises(KeyboardInterrupt):
        ensure_demo_dataset(tmp_path, seed=0, **SMALL)
    monkeypatch.undo()
    assert calls and (tmp_path / 'manifest.json').is_file()  # ours, though unfinished
    ensure_demo_dataset(tmp_path, seed=0, **SMALL)
    assert is_demo_dataset_complete(tmp_path, seed=0, **SMALL)


def test_demo_config_matches_the_generator() -> None:
    from mmengine.config import Config
    cfg = Config.fromfile(str(Path(__file__).parents[1] / 'configs/_base_/datasets/demo_detection.py'))
    assert tuple(cfg.classes) == DEMO_CLASSES
    assert cfg.val_evaluator.ann_file == cfg.data_root + 'annotations/instances_val.json'
    assert cfg.calib_dataloader.dataset.ann_file == 'annotations/instances_calib.json'
    assert cfg.tune_dataloader.dataset.ann_file == 'annotations/instances_tune.json'
    assert cfg.tune_evaluator.ann_file == cfg.data_root + 'annotations/instances_tune.json'
    assert cfg.eval_split == 'val'
    assert cfg.demo_data.img_size == cfg.img_scale[0] == cfg.img_scale[1]


def test_only_the_splits_a_run_reads_are_generated(tmp_path) -> None:
    part = tmp_path / 'part'
    ensure_demo_dataset(part, seed=3, splits=['val', 'calib'], **SMALL)
    assert sorted(p.name for p in (part / 'images').iterdir()) == ['calib', 'val']
    assert is_demo_dataset_complete(part, seed=3, splits=['calib', 'val'], **SMALL)
    assert not is_demo_dataset_complete(part, seed=3, **SMALL)
    stamps = {p: p.stat().st_mtime_ns for p in part.rglob('*.jpg')}
    ensure_demo_dataset(part, seed=3, splits=['train'], **SMALL)  # a later training run
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # val/calib untouched
    ensure_demo_dataset(part, seed=3, **SMALL)
    make_demo_dataset(tmp_path / 'all', seed=3, workers=1, **SMALL)
    assert digest(part) == digest(tmp_path / 'all')  # same bytes as one full generation
    with pytest.raises(ValueError, match='trian'):
        ensure_demo_dataset(part, seed=3, splits=['trian'], **SMALL)


def test_check_data_generates_only_what_the_tool_reads(tmp_path) -> None:
    from mmengine.config import Config

    from detptq.engine.config_utils import check_data
    cfg = Config.fromfile('configs/demo/yolov6n_demo_detptq_w4a8.py')
    cfg.demo_data.update(SMALL)
    cfg.num_calib_images = SMALL['num_calib']
    root = str(tmp_path / 'data') + '/'
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader', 'calib_dataloader'):
        cfg[key].dataset.data_root = root
    cfg.data_root = root
    cfg.test_evaluator.ann_file = root + 'annotations/instances_val.json'
    check_data(cfg, ['test_dataloader', 'calib_dataloader'])
    assert sorted(p.name for p in (tmp_path / 'data' / 'images').iterdir()) == ['calib', 'val']
