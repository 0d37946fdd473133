"""Official evaluation modes: image size, borders and box un-mapping equal the
official YOLOv6/YOLOv7 arithmetic (transcribed here, independent of detptq),
rect batches have the official per-batch shapes, both modes are configured."""
import json
import os

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config

from detptq.datasets.rect_batches import official_rect_batches
from detptq.datasets.transforms import YOLOLetterbox
from detptq.models.dense_heads.yolo_postprocess import letterbox_to_original

ROOT = os.path.join(os.path.dirname(__file__), '..')
# odd shapes (h, w): truncation vs rounding, odd borders, both orientations
ODD_SHAPES = [(480, 640), (427, 640), (640, 427), (333, 500), (500, 333),
              (375, 499), (612, 612), (299, 1001), (1001, 299), (640, 640),
              (321, 479), (17, 1000), (97, 131), (1280, 719)]


# ------------------------------------------- the official arithmetic, transcribed
def official_load_image(h0, w0, img_size, shrink_size=0):
    """yolov6/data/datasets.py load_image (v3) / yolov7 utils/datasets.py load_image."""
    ratio = (img_size - shrink_size) / max(h0, w0) if shrink_size else img_size / max(h0, w0)
    if ratio != 1:
        return int(h0 * ratio), int(w0 * ratio)
    return h0, w0


def official_letterbox(h, w, new_shape):
    """data_augment.letterbox(auto=False, scaleup=False): (new h, new w), (dw, dh), borders."""
    r = min(new_shape[0] / h, new_shape[1] / w)
    r = min(r, 1.0)
    new_unpad = int(round(w * r)), int(round(h * r))
    dw, dh = new_shape[1] - new_unpad[0], new_shape[0] - new_unpad[1]
    dw /= 2
    dh /= 2
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    return (new_unpad[1], new_unpad[0]), r, (dw, dh), (top, bottom, left, right)


def official_unmap_v6(xyxy, h0, w0, h, w, ratio, pad):
    """YOLOv6 v3 evaler: shapes = (h0, w0), ((h*ratio/h0, w*ratio/w0), pad); scale_coords."""
    gain = (h * ratio / h0, w * ratio / w0)
    out = np.array(xyxy, dtype=np.float64)
    out[[0, 2]] = (out[[0, 2]] - pad[0]) / gain[1]
    out[[1, 3]] = (out[[1, 3]] - pad[1]) / gain[0]
    out[[0, 2]] = out[[0, 2]].clip(0, w0)
    out[[1, 3]] = out[[1, 3]].clip(0, h0)
    return out


def official_unmap_v7(xyxy, h0, w0, h, w, pad):
    """YOLOv7 test.py: shapes = (h0, w0), ((h/h0, w/w0), pad); general.scale_coords."""
    gain = (h / h0, w / w0)[0]
    out = np.array(xyxy, dtype=np.float64)
    out[[0, 2]] -= pad[0]
    out[[1, 3]] -= pad[1]
    out /= gain
    out[[0, 2]] = out[[0, 2]].clip(0, w0)
    out[[1, 3]] = out[[1, 3]].clip(0, h0)
    return out


def official_rect_shapes_v7(hw, batch_size, img_size=640, stride=32, pad=0.5):
    """yolov7 LoadImagesAndLabels rect: shapes stored (w, h), ar = h / w."""
    s = np.array([(w, h) for h, w in hw], dtype=np.float64)
    n = len(s)
    bi = np.floor(np.arange(n) / batch_size).astype(int)
    nb = bi[-1] + 1
    ar = s[:, 1] / s[:, 0]
    irect = ar.argsort()
    ar = ar[irect]
    shapes = [[1, 1]] * nb
    for i in range(nb):
        ari = ar[bi == i]
        mini, maxi = ari.min(), ari.max()
        if maxi < 1:
            shapes[i] = [maxi, 1]
        elif mini > 1:
            shapes[i] = [1, 1 / mini]
    return irect, bi, np.ceil(np.array(shapes) * img_size / stride + pad).astype(int) * stride


def official_rect_shapes_v6(hw, batch_size, img_size=640, stride=32, pad=0.5):
    """yolov6 (v3) TrainValDataset.sort_files_shapes: shapes stored (h, w), ar = w / h."""
    s = np.array(hw, dtype=np.float64)
    batch_indices = np.floor(np.arange(len(s)) / batch_size).astype(np.int_)
    batch_num = batch_indices[-1] + 1
    ar = s[:, 1] / s[:, 0]
    irect = ar.argsort()
    ar = ar[irect]
    shapes = [[1, 1]] * batch_num
    for i in range(batch_num):
        ari = ar[batch_indices == i]
        mini, maxi = ari.min(), ari.max()
        if maxi < 1:
            shapes[i] = [1, maxi]
        elif mini > 1:
            shapes[i] = [1 / mini, 1]
    return irect, batch_indices, (np.ceil(np.array(shapes) * img_size / stride + pad)
                                  .astype(np.int_) * stride)


def run_letterbox(transform, h0, w0, batch_shape=None):
    img = np.full((h0, w0, 3), 7, dtype=np.uint8)
    results = dict(img=img, img_shape=(h0, w0), ori_shape=(h0, w0))
    if batch_shape is not None:
        results['batch_shape'] = batch_shape
    return transform.transform(results)


# ------------------------------------------------------------------- tests
@pytest.mark.parametrize('shrink', [0, 2, 4, 6])
@pytest.mark.parametrize('h0,w0', ODD_SHAPES)
def test_square_reproduce_mode_matches_official_yolov6(h0, w0, shrink):
    """--reproduce_640_eval: size, borders, pixels and un-mapped boxes."""
    t = YOLOLetterbox(scale=(640, 640), resize_mode='official', shrink_size=shrink,
                      unmap='yolov6')
    out = run_letterbox(t, h0, w0)
    h, w = official_load_image(h0, w0, 640, shrink)
    (nh, nw), r, pad, (top, bottom, left, right) = official_letterbox(h, w, (640, 640))
    assert out['img'].shape[:2] == (nh + top + bottom, nw + left + right) == (640, 640)
    img = out['img']
    assert (img[top:top + nh, left:left + nw] == 7).all()  # the image where official puts it
    assert (img[:top] == 114).all() and (img[top + nh:] == 114).all()
    assert (img[:, :left] == 114).all() and (img[:, left + nw:] == 114).all()
    box = [left + 3.25, top + 1.5, left + nw - 2.0, top + nh - 0.75]
    ours = letterbox_to_original(torch.tensor([box], dtype=torch.float64), out)[0].numpy()
    ref = official_unmap_v6(box, h0, w0, h, w, r, pad)
    assert np.abs(ours - ref).max() < 1e-3  # float32 meta; official is float too


@pytest.mark.parametrize('h0,w0', ODD_SHAPES)
def test_rect_mode_matches_official_yolov7(h0, w0):
    """YOLOv7 test.py rect: canvas = the batch shape, un-mapping with h/h0 on both axes."""
    h, w = official_load_image(h0, w0, 640)
    _, _, shapes = official_rect_shapes_v7([(h0, w0)], 32)
    canvas = tuple(int(v) for v in shapes[0])
    t = YOLOLetterbox(scale=(640, 640), resize_mode='official', unmap='yolov7')
    out = run_letterbox(t, h0, w0, batch_shape=canvas)
    (nh, nw), r, pad, (top, bottom, left, right) = official_letterbox(h, w, canvas)
    assert out['img'].shape[:2] == canvas == (nh + top + bottom, nw + left + right)
    assert (out['img'][top:top + nh, left:left + nw] == 7).all()
    box = [left + 1.0, top + 2.5, left + nw - 1.5, top + nh - 3.0]
    ours = letterbox_to_original(torch.tensor([box], dtype=torch.float64), out)[0].numpy()
    assert np.abs(ours - official_unmap_v7(box, h0, w0, h, w, pad)).max() < 1e-3


def test_default_round_mode_is_unchanged_and_differs_from_official():
    """The demo's square letterbox keeps rounding (375x499 -> 481 rows); the
    official resize truncates (480 rows)."""
    out = run_letterbox(YOLOLetterbox(scale=(640, 640)), 375, 499)
    assert out['img'].shape[:2] == (640, 640)
    assert out['pad_param'].tolist() == [79, 80, 0, 0]
    off = run_letterbox(YOLOLetterbox(scale=(640, 640), resize_mode='official'), 375, 499)
    assert off['pad_param'].tolist() == [80, 80, 0, 0]
    h, w = official_load_image(375, 499, 640)
    assert (h, w) == (480, 640)
    with pytest.raises(ValueError, match="need resize_mode='official'"):
        YOLOLetterbox(unmap='yolov6')


def test_rect_batches_equal_the_official_shapes():
    rng = np.random.default_rng(0)
    hw = [(int(h), int(w)) for h, w in rng.integers(120, 900, size=(70, 2))]
    hw += [(480, 640)] * 20 + [(640, 480)] * 10  # ties, as COCO has
    order, bi, shapes = official_rect_batches(hw, 32, family='yolov7')
    ref_order, ref_bi, ref_shapes = official_rect_shapes_v7(hw, 32)
    assert (order == ref_order).all() and (bi == ref_bi).all()
    assert (shapes == ref_shapes).all()
    # YOLOv6 sorts by w / h: the reverse order, so the short last batch sits
    # at the other end and the batches differ from YOLOv7's
    order6, bi6, shapes6 = official_rect_batches(hw, 32, family='yolov6')
    ref6 = official_rect_shapes_v6(hw, 32)
    assert (order6 == ref6[0]).all() and (bi6 == ref6[1]).all()
    assert (shapes6 == ref6[2]).all() and shapes6.tolist() != shapes.tolist()
    assert {tuple(s) for s in shapes.tolist()} >= {(672, 672)}  # mixed batch: 640/32+0.5 -> 21


def _tiny_coco(tmp_path, shapes):
    img_dir = tmp_path / 'val'
    img_dir.mkdir()
    images, anns = [], []
    for i, (h, w) in enumerate(shapes):
        name = f'{i:03d}.jpg'
        cv2.imwrite(str(img_dir / name), np.full((h, w, 3), 50 + i, np.uint8))
        images.append(dict(id=i + 1, file_name=name, height=h, width=w))
        anns.append(dict(id=i + 1, image_id=i + 1, category_id=1, iscrowd=0,
                         bbox=[1, 1, w / 2, h / 2], area=w * h / 4))
    ann_file = tmp_path / 'ann.json'
    ann_file.write_text(json.dumps(dict(images=images, annotations=anns,
                                        categories=[dict(id=1, name='thing')])))
    return str(ann_file), str(img_dir) + '/'


def test_rect_dataloader_yields_official_batches(tmp_path):
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner
    init_default_scope('detptq')
    shapes = [(200, 300), (300, 200), (250, 260), (120, 400), (400, 120), (333, 500),
              (210, 210)]
    ann_file, img_dir = _tiny_coco(tmp_path, shapes)
    pipeline = [dict(type='LoadImageFromFile'),
                dict(type='YOLOLetterbox', scale=(640, 640), resize_mode='official',
                     unmap='yolov7'),
                dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape',
                                                      'img_shape', 'scale_factor',
                                                      'pad_param', 'batch_shape'))]
    def loader_cfg(batch_size):
        return dict(
            batch_size=batch_size, num_workers=0,
            sampler=dict(type='DefaultSampler', shuffle=False),
            batch_sampler=dict(type='YOLORectBatchSampler'),
            dataset=dict(type='YOLORectCocoDataset', ann_file=ann_file,
                         data_prefix=dict(img=img_dir), test_mode=True,
                         metainfo=dict(classes=('thing',)), pipeline=pipeline,
                         batch_shapes_cfg=dict(type='YOLOBatchShapePolicy',
                                               batch_size=3, family='yolov7')))

    cfg = loader_cfg(3)
    loader = Runner.build_dataloader(cfg)
    names = sorted(f'{i:03d}.jpg' for i in range(len(shapes)))  # official: file-name order
    hw = [shapes[int(n[:3])] for n in names]
    order, bi, ref_shapes = official_rect_shapes_v7(hw, 3)
    seen = []
    for b, batch in enumerate(loader):
        sizes = {tuple(img.shape[-2:]) for img in batch['inputs']}
        assert sizes == {tuple(int(v) for v in ref_shapes[b])}
        seen += [os.path.basename(s.img_path) for s in batch['data_samples']]
    assert seen == [names[i] for i in order]
    with pytest.raises(ValueError, match='differs from batch_shapes_cfg.batch_size 3'):
        Runner.build_dataloader(loader_cfg(2))


# ------------------------------------------------------------------- configs
def _cfg(name):
    return Config.fromfile(os.path.join(ROOT, 'configs', name))


def _letterbox(pipeline):
    return next(t for t in pipeline if t['type'] == 'YOLOLetterbox')


@pytest.mark.parametrize('name,shrink', [('yolov6n_coco.py', 4), ('yolov6s_coco.py', 6),
                                         ('yolov6m_coco.py', 4), ('yolov6n_qa_coco.py', 2),
                                         ('yolov6s_qa_coco.py', 2), ('yolov6m_qa_coco.py', 2)])
def test_yolov6_coco_configs_use_the_reproduce_640_mode(name, shrink):
    cfg = _cfg(name)
    lb = _letterbox(cfg.test_dataloader.dataset.pipeline)
    assert (lb.resize_mode, lb.shrink_size, lb.unmap, tuple(lb.scale)) == (
        'official', shrink, 'yolov6', (640, 640))
    assert cfg.model.bbox_head.test_cfg.score_thr == 0.03
    assert cfg.test_dataloader.dataset.type == 'CocoDataset'


@pytest.mark.parametrize('name', ['yolov7_coco.py', 'yolov7_tiny_coco.py'])
def test_yolov7_coco_configs_use_rect_mode_and_conf_0001(name):
    cfg = _cfg(name)
    assert cfg.model.bbox_head.test_cfg.score_thr == 0.001
    assert cfg.model.bbox_head.test_cfg.nms.iou_threshold == 0.65
    dl = cfg.test_dataloader
    assert dl.batch_size == 32 and dl.batch_sampler.type == 'YOLORectBatchSampler'
    assert dl.dataset.type == 'YOLORectCocoDataset'
    assert dl.dataset.batch_shapes_cfg == dict(type='YOLOBatchShapePolicy', batch_size=32,
                                               img_size=640, stride=32, pad=0.5,
                                               family='yolov7')
    lb = _letterbox(dl.dataset.pipeline)
    assert (lb.resize_mode, lb.unmap) == ('official', 'yolov7')


def test_both_official_modes_are_named_in_the_base_dataset_config():
    cfg = _cfg('_base_/datasets/coco_detection.py')
    pipelines = cfg.yolov6_reproduce_640_pipelines
    assert {k: _letterbox(p).shrink_size for k, p in pipelines.items()} == dict(
        yolov6n=4, yolov6t=6, yolov6s=6, yolov6m=4, yolov6l=4, default=2)
    assert _letterbox(pipelines.default).unmap == 'yolov6'
    for family in ('yolov6', 'yolov7'):
        dl = cfg[f'{family}_rect_dataloader']
        assert dl.dataset.batch_shapes_cfg.family == family
        assert _letterbox(dl.dataset.pipeline).unmap == family
