"""YOLOv7 / YOLOv7-tiny: configs build and run, deploy folding is exact, the
head decodes as official YOLOv7 and maps boxes back through the letterbox,
parameter counts equal the official ones."""
import pytest
import torch

import detptq.models  # noqa: F401  (registers everything)
from detptq.models.layers import ImplicitPredConv, RepVGGBlock
from helpers import build_model, randomise_bn_

# YOLOv7 channels / 16: every official layer is kept, only narrower
SMALL_L = dict(backbone=dict(widen_factor=1 / 16),
               neck=dict(in_channels=[32, 64, 64], out_channels=[8, 16, 32]),
               bbox_head=dict(in_channels=[16, 32, 64]))


def build(name: str, overrides: dict = None) -> torch.nn.Module:
    return build_model(name, overrides).eval()


@torch.no_grad()
def randomise(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics, BN affine and implicit vectors."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            randomise_bn_(m, gen)
        if isinstance(m, ImplicitPredConv):
            m.implicit_add.implicit.normal_(0, 0.3, generator=gen)
            m.implicit_mul.implicit.normal_(1, 0.3, generator=gen)
            m.conv.bias.normal_(0, 0.3, generator=gen)


def fused_param_count(model: torch.nn.Module) -> int:
    """Parameters after switch_to_deploy and BN folding (each BN -> conv bias)."""
    model.switch_to_deploy()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    return (sum(p.numel() for p in model.parameters())
            - sum(bn.num_features for bn in bns))


def test_tiny_builds_and_forwards_with_official_shapes():
    model = build('yolov7_tiny')
    x = torch.randn(2, 3, 64, 96)
    cls_scores, bbox_preds = model(x, mode='tensor')
    assert [tuple(c.shape) for c in cls_scores] == [
        (2, 3 * 81, 8, 12), (2, 3 * 81, 4, 6), (2, 3 * 81, 2, 3)]
    assert [tuple(b.shape) for b in bbox_preds] == [
        (2, 12, 8, 12), (2, 12, 4, 6), (2, 12, 2, 3)]
    acts = {type(m).__name__ for m in model.backbone.modules()}
    assert 'LeakyReLU' in acts and 'SiLU' not in acts
    cls_prob, ltrb = model.bbox_head.dense_outputs(cls_scores, bbox_preds)
    n = 3 * (8 * 12 + 4 * 6 + 2 * 3)
    assert cls_prob.shape == (2, n, 80) and ltrb.shape == (2, n, 4)
    assert 0 <= cls_prob.min() and cls_prob.max() <= 1


def test_parameter_counts_equal_official():
    tiny = build('yolov7_tiny')
    assert sum(p.numel() for p in tiny.parameters()) == 6_228_762  # training
    assert fused_param_count(tiny) == 6_219_709  # official 6.2M (fused)
    big = build('yolov7')
    assert sum(p.numel() for p in big.parameters()) == 37_622_682
    assert fused_param_count(big) == 36_905_341  # official 36.9M (fused)
    assert all(m.deploy for m in big.modules() if isinstance(m, RepVGGBlock))


@pytest.mark.parametrize('name,overrides', [('yolov7', SMALL_L),
                                            ('yolov7_tiny', None)])
def test_switch_to_deploy_is_exact(name, overrides):
    torch.manual_seed(0)
    model = build(name, overrides)
    randomise(model)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x, mode='tensor')
        model.switch_to_deploy()
        out = model(x, mode='tensor')
    for a, b in zip(ref[0] + ref[1], out[0] + out[1]):
        assert (a - b).abs().max().item() < 1e-4
    names = [n for n, _ in model.named_modules()]
    assert not any('implicit' in n or 'rbr_dense' in n for n in names)
    # the deploy state dict has only plain biased 1x1 prediction convs
    head_keys = [k for k in model.state_dict() if k.startswith('bbox_head.')]
    assert sorted(head_keys) == sorted(
        f'bbox_head.pred_layers.{i}.conv.{p}' for i in range(3)
        for p in ('weight', 'bias'))


def test_decode_follows_the_official_formula():
    torch.manual_seed(1)
    head = build('yolov7_tiny').bbox_head
    sizes = [(4, 6), (2, 3), (1, 2)]
    cls_scores = [torch.randn(2, 3 * 81, h, w) for h, w in sizes]
    bbox_preds = [torch.randn(2, 12, h, w) for h, w in sizes]
    scores, boxes = head.decode(cls_scores, bbox_preds)
    # official IDetect inference, written out independently
    ref_boxes, ref_scores = [], []
    anchors = torch.tensor([[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119],
                            [116, 90, 156, 198, 373, 326]], dtype=torch.float32)
    for lvl, ((h, w), stride) in enumerate(zip(sizes, (8, 16, 32))):
        box = bbox_preds[lvl].view(2, 3, 4, h, w).permute(0, 1, 3, 4, 2).sigmoid()
        obj_cls = cls_scores[lvl].view(2, 3, 81, h, w).permute(0, 1, 3, 4, 2)
        gy, gx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing='ij')
        grid = torch.stack([gx, gy], -1).view(1, 1, h, w, 2).float()
        xy = (box[..., :2] * 2 - 0.5 + grid) * stride
        wh = (box[..., 2:] * 2) ** 2 * anchors[lvl].view(1, 3, 1, 1, 2)
        ref_boxes.append(torch.cat([xy - wh / 2, xy + wh / 2], -1).reshape(2, -1, 4))
        ref_scores.append((obj_cls[..., :1].sigmoid() * obj_cls[..., 1:].sigmoid())
                          .reshape(2, -1, 80))
    assert torch.allclose(boxes, torch.cat(ref_boxes, 1), atol=1e-4)
    assert torch.allclose(scores, torch.cat(ref_scores, 1), atol=1e-6)


def test_predict_thresholds_obj_times_cls_and_undoes_the_letterbox():
    head = build('yolov7_tiny').bbox_head
    sizes = [(8, 8), (4, 4), (2, 2)]  # 64x64 network input
    cls_scores = [torch.full((1, 3 * 81, h, w), -12.0) for h, w in sizes]
    bbox_preds = [torch.zeros(1, 12, h, w) for h, w in sizes]
    obj_cls = cls_scores[0].view(1, 3, 81, 8, 8)
    obj_cls[0, 0, 0, 2, 3] = 5.0   # anchor 0 (10x13), cell row 2, col 3: obj
    obj_cls[0, 0, 1 + 7, 2, 3] = 5.0  # class 7 -> score 0.987
    obj_cls[0, 1, 0, 5, 5] = 5.0   # obj*cls 0.018: kept at the official conf 0.001
    obj_cls[0, 1, 1 + 2, 5, 5] = -4.0  # (YOLOv6's 0.03 would drop it)
    obj_cls[0, 2, 0, 6, 6] = 5.0   # obj*cls 0.0003: below 0.001, dropped
    obj_cls[0, 2, 1 + 4, 6, 6] = -8.0
    meta = dict(scale_factor=(0.5, 0.5), pad_param=[8, 8, 0, 0],
                ori_shape=(96, 128), img_shape=(64, 64))
    res = head.predict_by_feat(cls_scores, bbox_preds, batch_img_metas=[meta],
                               rescale=True)[0]
    assert res.labels.tolist() == [7, 2]
    assert abs(res.scores[0].item() - torch.sigmoid(torch.tensor(5.0)) ** 2) < 1e-5
    # centre (28, 20), size 10x13 in the input -> minus pad (0, 8), / 0.5
    assert torch.allclose(res.bboxes[0], torch.tensor([46.0, 11.0, 66.0, 37.0]),
                          atol=1e-4)


@pytest.mark.parametrize('name', ['yolov7', 'yolov7_tiny'])
def test_configs_use_the_official_test_py_thresholds(name):
    """YOLOv7 test.py: --conf-thres 0.001 --iou-thres 0.65 (not YOLOv6's 0.03)."""
    cfg = build(name).bbox_head.test_cfg
    assert (cfg.score_thr, cfg.nms.iou_threshold, cfg.max_per_img) == (0.001, 0.65, 300)
    from detptq.models.dense_heads.yolov7_head import YOLOv7Head
    assert YOLOv7Head(in_channels=[8, 16, 32]).test_cfg.score_thr == 0.001  # head default
    assert YOLOv7Head(in_channels=[8, 16, 32],
                      test_cfg=dict(score_thr=0.2)).test_cfg.nms.iou_threshold == 0.65


def test_training_loss_is_not_available():
    head = build('yolov7_tiny').bbox_head
    with pytest.raises(NotImplementedError, match='no training loss'):
        head.loss_by_feat([], [], [], [])
