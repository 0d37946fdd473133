"""YOLOv6 models: configs build, re-parameterisation is exact, loss trains,
predictions map back through the letterbox, parameter counts match upstream."""
import types

import numpy as np
import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData

import detptq.models  # noqa: F401  (registers everything)
from detptq.engine.hooks import SwitchToDeployHook
from detptq.models.deploy import is_deployed, switch_to_deploy
from detptq.models.layers import QARepVGGBlock, QARepVGGBlockV2, RepVGGBlock
from helpers import build_model, randomise_bn
import official_yolo_fakes as fakes

ALL_CONFIGS = ['yolov6_n', 'yolov6_n_qa', 'yolov6_s', 'yolov6_s_qa',
               'yolov6_m', 'yolov6_m_qa', 'yolov6_t_v2', 'yolov6_s_v2',
               'yolov6_n_qa_v1']


def build(name: str, **head_overrides) -> torch.nn.Module:
    return build_model(name, dict(bbox_head=head_overrides))


# ------------------------------------------------------------------ blocks
@pytest.mark.parametrize('block_cls,kwargs', [
    (RepVGGBlock, {}), (QARepVGGBlock, {}), (QARepVGGBlockV2, {}),
    (RepVGGBlock, {'act': 'SiLU'}),
])
@pytest.mark.parametrize('cin,cout,stride,groups', [
    (8, 8, 1, 1), (8, 16, 1, 1), (8, 8, 2, 1), (8, 8, 1, 2)])
def test_block_deploy_is_exact(block_cls, kwargs, cin, cout, stride, groups):
    torch.manual_seed(0)
    block = block_cls(cin, cout, 3, stride, groups=groups, **kwargs)
    randomise_bn(block)
    block.eval()
    x = torch.randn(2, cin, 11, 11)
    ref = block(x)
    block.switch_to_deploy()
    assert block.deploy and list(dict(block.named_children())) == [
        'nonlinearity', 'rbr_reparam']
    assert (block(x) - ref).abs().max().item() < 1e-4
    block.switch_to_deploy()  # idempotent
    assert (block(x) - ref).abs().max().item() < 1e-4


def test_qarepvgg_has_the_qa_layout():
    block = QARepVGGBlock(8, 8)
    assert isinstance(block.rbr_1x1, torch.nn.Conv2d)  # no BN on 1x1
    assert isinstance(block.rbr_identity, torch.nn.Identity)  # no BN
    assert isinstance(block.bn, torch.nn.BatchNorm2d)  # one BN after sum
    assert isinstance(RepVGGBlock(8, 8).rbr_identity, torch.nn.BatchNorm2d)
    assert not hasattr(block, 'rbr_avg')  # v1 has no average pool


@pytest.mark.parametrize('cin,cout,stride,groups', [
    (8, 8, 1, 1), (8, 16, 1, 1), (8, 8, 2, 1), (8, 8, 1, 2)])
def test_qarepvgg_v2_matches_official_semantics_and_official_fusion(cin, cout, stride,
                                                                   groups):
    """Ours vs an independent official-semantics block (float64): training
    forward, our deploy fold, and the official fused form (post-BN kept)."""
    torch.manual_seed(0)
    ours = QARepVGGBlockV2(cin, cout, 3, stride, groups=groups).double()
    randomise_bn(ours)
    with torch.no_grad():
        ours.rbr_1x1.weight.normal_()
    ours.eval()
    official = fakes.swap_in_official_qa_v2(torch.nn.Sequential(ours))[0].eval()
    assert isinstance(official, fakes.QARepVGGBlockV2)
    assert (official.rbr_avg is not None) == (cin == cout and stride == 1)
    x = torch.randn(2, cin, 9, 11, dtype=torch.float64)
    ref = official(x)
    assert (ours(x) - ref).abs().max().item() < 1e-12
    without_avg = QARepVGGBlock(cin, cout, 3, stride, groups=groups).double().eval()
    without_avg.load_state_dict(ours.state_dict())
    if official.rbr_avg is not None:  # the average pool matters
        assert (without_avg(x) - ref).abs().max().item() > 1e-2
    official.official_switch_to_deploy()
    assert (official(x) - ref).abs().max().item() < 1e-12
    ours.switch_to_deploy()
    assert list(dict(ours.named_children())) == ['nonlinearity', 'rbr_reparam']
    assert (ours(x) - ref).abs().max().item() < 1e-12


# ------------------------------------------------------------------ models
def deploy_param_count(model: torch.nn.Module) -> int:
    """Inference parameters: RepVGG folded, each BN folded into a conv bias."""
    switch_to_deploy(model)
    count = 0
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            count += m.weight.numel()
            count += m.bias.numel() if m.bias is not None else 0
        elif isinstance(m, torch.nn.BatchNorm2d):
            count += m.num_features  # becomes the bias of the conv before it
    return count + sum(p.numel() for n, p in model.named_parameters()
                       if n.endswith('alpha'))


# Params (M) of the upstream README tables (deploy models, COCO 80 classes).
# Ours (deploy, BN folded): N 4.647, S 18.537, M 34.856, S-v2 17.220,
# T-v2 14.973. N is 1.1% under its 4.7 (N + the unused anchor-based branch
# would be 4.704; S with it would be 18.65, so upstream is not consistent
# about that); the others round to the published figure. 1.5% catches any
# real layout error (e.g. SimSPPF instead of SimCSPSPPF in N is -7%).
OFFICIAL_PARAMS_M = {'yolov6_n': 4.7, 'yolov6_n_qa': 4.7, 'yolov6_s': 18.5,
                     'yolov6_s_qa': 18.5, 'yolov6_m': 34.9,
                     'yolov6_m_qa': 34.9, 'yolov6_s_v2': 17.2, 'yolov6_n_qa_v1': 4.7,
                     'yolov6_t_v2': 15.0}


@pytest.mark.parametrize('name', ALL_CONFIGS)
def test_config_builds_forwards_deploys_exactly_and_counts(name):
    torch.manual_seed(0)
    model = build(name)
    randomise_bn(model)
    model.eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        outs = model.bbox_head(model.neck(model.backbone(x)))
        cls_ref, box_ref = model.bbox_head.dense_outputs(*outs)
    assert [c.shape[-1] for c in outs[0]] == [8, 4, 2]
    assert cls_ref.shape == (1, 64 + 16 + 4, 80) and box_ref.shape[-1] == 4
    model.switch_to_deploy()
    assert is_deployed(model)
    with torch.no_grad():
        cls_dep, box_dep = model.bbox_head.dense_outputs(
            *model.bbox_head(model.neck(model.backbone(x))))
    assert (cls_dep - cls_ref).abs().max().item() < 1e-4
    assert (box_dep - box_ref).abs().max().item() < 1e-4
    count = deploy_param_count(model) / 1e6
    official = OFFICIAL_PARAMS_M[name]
    assert abs(count - official) / official < 0.015, (name, count)


# -------------------------------------------------------------------- loss
def make_batch(num_classes: int, size: int = 64, batch: int = 2):
    gen = torch.Generator().manual_seed(1)
    inputs = torch.rand(batch, 3, size, size, generator=gen)
    samples = []
    for i in range(batch):
        sample = DetDataSample(metainfo=dict(
            img_shape=(size, size), ori_shape=(size, size),
            pad_shape=(size, size), batch_input_shape=(size, size),
            scale_factor=(1.0, 1.0)))
        boxes = torch.tensor([[5., 6., 30., 35.], [35., 15., 60., 50.],
                              [15., 45., 25., 55.]])[: 3 - i] * size / 64
        sample.gt_instances = InstanceData(
            bboxes=boxes, labels=torch.arange(len(boxes)) % num_classes)
        samples.append(sample)
    return inputs, samples


@pytest.mark.parametrize('name', ['yolov6_n', 'yolov6_m'])
def test_loss_step_is_finite_with_gradients(name):
    torch.manual_seed(0)
    model = build(name, num_classes=10)
    model.train()
    inputs, samples = make_batch(10)
    losses = model.loss(inputs, samples)
    expected = {'loss_cls', 'loss_bbox'} | ({'loss_dfl'} if 'm' in name
                                            else set())
    assert set(losses) == expected
    total = sum(losses.values())
    assert torch.isfinite(total) and total.item() > 0
    total.backward()
    head = model.bbox_head
    # official init: prediction convs start at zero weight, so only they
    # get gradients at the first step ...
    for p in [head.cls_preds[0].weight, head.reg_preds[0].weight,
              head.cls_preds[1].bias]:
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    torch.optim.SGD(model.parameters(), lr=0.01).step()
    model.zero_grad()
    sum(model.loss(inputs, samples).values()).backward()
    # ... and after one update the whole network does
    for p in [head.stems[0].conv.weight,
              model.backbone.stem.rbr_dense.conv.weight]:
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_loss_without_objects_is_finite():
    model = build('yolov6_n', num_classes=10)
    model.train()
    inputs, samples = make_batch(10)
    for s in samples:
        s.gt_instances = InstanceData(bboxes=torch.zeros(0, 4),
                                      labels=torch.zeros(0, dtype=torch.long))
    losses = model.loss(inputs, samples)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()


def test_yolov6_n_at_320_with_10_classes_trains_one_step():
    torch.manual_seed(0)
    model = build('yolov6_n', num_classes=10)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    inputs, samples = make_batch(10, size=320, batch=1)
    data = model.data_preprocessor(
        dict(inputs=[(i * 255).to(torch.uint8) for i in inputs],
             data_samples=samples), training=True)
    losses = model(**data, mode='loss')
    sum(losses.values()).backward()
    opt.step()
    assert all(torch.isfinite(v) for v in losses.values())


# ----------------------------------------------------------------- predict
def test_predict_maps_box_back_through_letterbox():
    head = build('yolov6_n', num_classes=5).bbox_head
    head.eval()
    sizes = [(8, 8), (4, 4), (2, 2)]  # a 64x64 letterboxed input
    cls_scores = [torch.full((1, 5, h, w), -20.) for h, w in sizes]
    bbox_preds = [torch.ones(1, 4, h, w) for h, w in sizes]
    # one object at stride 8, cell (x=3, y=2): anchor point (28, 20)
    cls_scores[0][0, 4, 2, 3] = 5.0
    bbox_preds[0][0, :, 2, 3] = torch.tensor([1.0, 0.5, 2.0, 1.5])
    box_in = torch.tensor([28 - 8., 20 - 4., 28 + 16., 20 + 12.])
    meta = dict(img_shape=(64, 64), ori_shape=(40, 100),
                scale_factor=(0.64, 0.64),
                pad_param=np.array([11., 13., 0., 0.], dtype=np.float32))
    result = head.predict_by_feat(cls_scores, bbox_preds,
                                  batch_img_metas=[meta], rescale=True)[0]
    assert result.labels.tolist() == [4]
    assert abs(result.scores.item() - torch.sigmoid(torch.tensor(5.))) < 1e-6
    expected = (box_in - torch.tensor([0., 11., 0., 11.])) / 0.64
    expected[1::2] = expected[1::2].clamp(0, 40)
    assert torch.allclose(result.bboxes[0], expected, atol=1e-4)

    no_pad = dict(meta, scale_factor=(0.5, 0.25))
    del no_pad['pad_param']
    result = head.predict_by_feat(cls_scores, bbox_preds,
                                  batch_img_metas=[no_pad], rescale=True)[0]
    expected = box_in / torch.tensor([0.5, 0.25, 0.5, 0.25])
    expected[0::2] = expected[0::2].clamp(0, 100)
    expected[1::2] = expected[1::2].clamp(0, 40)
    assert torch.allclose(result.bboxes[0], expected, atol=1e-4)


def test_predict_multilabel_threshold_and_nms():
    head = build('yolov6_n', num_classes=3).bbox_head
    sizes = [(8, 8), (4, 4), (2, 2)]
    cls_scores = [torch.full((1, 3, h, w), -20.) for h, w in sizes]
    bbox_preds = [torch.ones(1, 4, h, w) for h, w in sizes]
    # two neighbouring anchors, same box size, classes 0 and 1 on both
    for x in (3, 4):
        cls_scores[0][0, 0, 2, x] = 2.0 - 0.1 * x
        cls_scores[0][0, 1, 2, x] = 1.0
    cls_scores[0][0, 2, 5, 5] = -3.6  # sigmoid 0.0266 < 0.03: dropped
    bbox_preds[0][0, :, 2, 3:5] = 2.0  # 32x32 boxes overlapping IoU 0.6
    result = head.predict_by_feat(cls_scores, bbox_preds,
                                  batch_img_metas=[dict(img_shape=(64, 64))],
                                  rescale=False)[0]
    # IoU 0.6 < 0.65: nothing suppressed; 2 anchors x 2 classes
    assert sorted(result.labels.tolist()) == [0, 0, 1, 1]
    bbox_preds[0][0, :, 2, 3:5] = 4.0  # 64x64 boxes: IoU 0.78 > 0.65
    result = head.predict_by_feat(cls_scores, bbox_preds,
                                  batch_img_metas=[dict(img_shape=(64, 64))],
                                  rescale=False)[0]
    assert sorted(result.labels.tolist()) == [0, 1]


def test_detector_predict_end_to_end():
    model = build('yolov6_n', num_classes=10)
    model.eval()
    inputs, samples = make_batch(10, size=64, batch=1)
    with torch.no_grad():
        out = model.predict(inputs, samples)
    assert isinstance(out[0].pred_instances, InstanceData)
    assert out[0].pred_instances.bboxes.shape[-1] == 4


# -------------------------------------------------------------------- hook
def test_switch_to_deploy_hook():
    model = build('yolov6_n', num_classes=10, aux_branch='ab')
    assert hasattr(model.bbox_head, 'cls_preds_ab')
    runner = types.SimpleNamespace(model=model, logger=types.SimpleNamespace(
        info=lambda *a, **k: None))
    SwitchToDeployHook().before_test(runner)
    assert is_deployed(model)
    assert not hasattr(model.bbox_head, 'cls_preds_ab')


def test_official_names_present():
    keys = set(build('yolov6_n', aux_branch='distill_ns').state_dict())
    for k in ['backbone.stem.rbr_dense.conv.weight',
              'backbone.ERBlock_2.0.rbr_dense.conv.weight',
              'backbone.ERBlock_2.1.conv1.rbr_1x1.bn.running_var',
              'backbone.ERBlock_5.2.cv7.conv.weight',
              'neck.Rep_p4.conv1.rbr_identity.weight',
              'neck.Bifusion0.upsample.upsample_transpose.weight',
              'neck.reduce_layer0.conv.weight', 'neck.Rep_n4.block.0.rbr_dense.bn.bias',
              'bbox_head.stems.0.conv.weight', 'bbox_head.cls_preds.0.bias',
              'bbox_head.reg_preds.2.weight', 'bbox_head.reg_preds_dist.0.weight',
              'bbox_head.proj', 'bbox_head.proj_conv.weight']:
        assert k in keys, k
    m_keys = set(build('yolov6_m_qa').state_dict())
    for k in ['backbone.ERBlock_3.1.m.conv1.conv1.rbr_1x1.weight',
              'backbone.ERBlock_3.1.m.conv1.alpha',
              'backbone.ERBlock_3.1.cv3.bn.weight',
              'backbone.ERBlock_2.0.bn.running_mean']:
        assert k in m_keys, k
