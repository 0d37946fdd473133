"""Reconstruction units: residuals/concats never split, head branches chained, every layer once."""
import pytest
import torch
from torch import nn

from detptq.quantization import quantize_model
from detptq.reconstruction import ChainUnit, partition_units
from detptq.reconstruction.partition import check_partition, find_unit, unit_layer_names


class Residual(nn.Module):  # unknown type with a residual add: must stay whole
    def __init__(self, c):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(c, c, 3, 1, 1), nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x):
        return x + self.conv2(torch.relu(self.conv1(x)))


class RepVGGBlock(nn.Module):  # known unit type by class name
    def __init__(self, cin, cout):
        super().__init__()
        self.rbr_reparam, self.act = nn.Conv2d(cin, cout, 3, 1, 1), nn.ReLU()

    def forward(self, x):
        return self.act(self.rbr_reparam(x))


class RepBlock(nn.Module):  # transparent: a plain chain of RepVGG blocks
    def __init__(self, c, n):
        super().__init__()
        self.conv1 = RepVGGBlock(c, c)
        self.block = nn.Sequential(*[RepVGGBlock(c, c) for _ in range(n)])

    def forward(self, x):
        return self.block(self.conv1(x))


class Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = RepVGGBlock(3, 8)
        self.stage = nn.Sequential(RepBlock(8, 2), Residual(8))

    def forward(self, x):
        return self.stage(self.stem(x))


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.stems = nn.ModuleList([nn.Conv2d(8, 8, 1)])
        self.cls_convs = nn.ModuleList([nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1), nn.ReLU())])
        self.cls_preds = nn.ModuleList([nn.Conv2d(8, 3, 1)])
        self.reg_convs = nn.ModuleList([nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1), nn.ReLU())])
        self.reg_preds = nn.ModuleList([nn.Conv2d(8, 4, 1)])

    def forward(self, x):
        x = self.stems[0](x)
        return self.cls_preds[0](self.cls_convs[0](x)), self.reg_preds[0](self.reg_convs[0](x))


class Detector(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone, self.bbox_head = Backbone(), Head()

    def forward(self, x):
        return self.bbox_head(self.backbone(x))


@pytest.fixture(scope='module')
def qdet():
    return quantize_model(Detector().eval(), dict(switch_to_deploy=False, fold_bn=False))


def test_block_partition_of_a_detector(qdet):
    units = partition_units(qdet)
    names = [n for n, _ in units]
    assert names == ['backbone.stem', 'backbone.stage.0.conv1', 'backbone.stage.0.block.0',
                     'backbone.stage.0.block.1', 'backbone.stage.1', 'bbox_head.stems.0',
                     'bbox_head.cls_convs.0+bbox_head.cls_preds.0',
                     'bbox_head.reg_convs.0+bbox_head.reg_preds.0']
    residual = dict(units)['backbone.stage.1']
    assert isinstance(residual, Residual)  # the residual add stays inside one unit
    chain = dict(units)['bbox_head.cls_convs.0+bbox_head.cls_preds.0']
    assert isinstance(chain, ChainUnit)
    assert unit_layer_names('bbox_head.cls_convs.0+bbox_head.cls_preds.0', chain) == [
        'bbox_head.cls_convs.0.0', 'bbox_head.cls_preds.0']
    x = torch.randn(1, 8, 6, 6)
    assert torch.equal(chain(x), qdet.bbox_head.cls_preds[0](qdet.bbox_head.cls_convs[0](x)))
    assert find_unit(units, 'backbone.stage.1.conv2') == 'backbone.stage.1'


def test_layer_partition_and_coverage(qdet):
    layers = partition_units(qdet, 'layer')
    assert len(layers) == 11 and all(hasattr(m, 'weight_quantizer') for _, m in layers)
    blocks = partition_units(qdet)
    with pytest.raises(ValueError, match='outside every unit'):
        check_partition(qdet, blocks[1:])
    with pytest.raises(ValueError, match='two units'):
        check_partition(qdet, blocks + blocks[:1])
    with pytest.raises(ValueError):
        partition_units(qdet, 'bogus')


def test_extra_unit_types_and_opaque_root_children():
    q = quantize_model(Detector().eval(), dict(switch_to_deploy=False, fold_bn=False))
    # declaring RepBlock a unit type keeps each RepBlock whole
    names = [n for n, _ in partition_units(q, unit_types=['RepBlock'])]
    assert 'backbone.stage.0' in names
    # a root child not named backbone/neck/bbox_head with opaque forward is one unit
    wrapper = nn.Module()
    wrapper.body = q.backbone
    assert [n for n, _ in partition_units(wrapper)] == ['body']


def build_yolov6_n():
    from helpers import build_model
    return build_model('yolov6_n').eval()


def test_yolov6_n_units_and_a_short_reconstruction():
    from detptq.quantization import calibrate
    from detptq.reconstruction import ReconConfig, reconstruct
    from detptq.reconstruction.partition import quant_layers

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        q = quantize_model(build_yolov6_n(), dict(w_bits=4, a_bits=8))
        units = dict(partition_units(q))
        kinds = {n: type(m).__name__ for n, m in units.items()}
        assert kinds['backbone.stem'] == 'RepVGGBlock'  # fused RepVGG block: one unit
        assert kinds['backbone.ERBlock_2.1.conv1'] == 'RepVGGBlock'  # RepBlock walked into
        assert kinds['backbone.ERBlock_5.2'] in ('SimCSPSPPF', 'SimSPPF', 'CSPSPPF', 'SPPF')
        assert kinds['neck.Bifusion0'] == 'BiFusion'  # concat of three inputs kept whole
        assert kinds['bbox_head.cls_convs.0+bbox_head.cls_preds.0'] == 'ChainUnit'
        assert len(partition_units(q, 'layer')) == len(quant_layers(q))
        data = [torch.randn(2, 3, 64, 64)]
        calibrate(q, data, num_batches=1, progress=False)
        chosen = [(n, units[n]) for n in ('neck.Bifusion0',
                                          'bbox_head.reg_convs.1+bbox_head.reg_preds.1')]
        stats = reconstruct(None, q, chosen, data, ReconConfig(iters=3, batch_size=2,
                                                                progress=False))
        assert [s['unit'] for s in stats] == [n for n, _ in chosen]
        assert all(s['rows'] == 2 and s['rounders'] > 0 for s in stats)
    finally:
        torch.set_num_threads(threads)
