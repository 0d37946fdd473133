"""BN folding, quantize_model on a tiny net with a re-parameterizable block, calibration, hook."""
import logging
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from detptq.quantization import (CFWSWeightQuantizer, QuantConfig, QuantConv2d, QuantLinear,
                                 calibrate, fold_bn, quantize_model)


def randomize_bn(module: nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    for bn in module.modules():
        if isinstance(bn, nn.BatchNorm2d):
            n = bn.num_features
            bn.running_mean.copy_(torch.randn(n, generator=gen) * 0.3)
            bn.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            bn.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            bn.bias.data.copy_(torch.randn(n, generator=gen) * 0.2)


class ConvBN(nn.Module):

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class BNFirst(nn.Module):
    """Has .conv and .bn but applies bn to the input: must not be folded."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 1)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        return self.conv(self.bn(x))


class RepBlock(nn.Module):
    """RepVGG-like: 3x3 conv+BN + 1x1 conv+BN + identity BN, summed, ReLU; fuses on deploy."""

    def __init__(self, c: int):
        super().__init__()
        self.dense = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))
        self.one = nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c))
        self.identity = nn.BatchNorm2d(c)
        self.act = nn.ReLU()
        self.deploy = False

    def forward(self, x):
        if self.deploy:
            return self.act(self.reparam(x))
        return self.act(self.dense(x) + self.one(x) + self.identity(x))

    @torch.no_grad()
    def switch_to_deploy(self):

        def fuse(weight, bn):
            std = (bn.running_var + bn.eps).sqrt()
            return weight * (bn.weight / std).view(-1, 1, 1,
                                                   1), bn.bias - bn.running_mean * bn.weight / std

        c = self.identity.num_features
        w3, b3 = fuse(self.dense[0].weight, self.dense[1])
        w1, b1 = fuse(nn.functional.pad(self.one[0].weight, [1, 1, 1, 1]), self.one[1])
        eye = torch.zeros(c, c, 3, 3)
        eye[range(c), range(c), 1, 1] = 1
        wi, bi = fuse(eye, self.identity)
        self.reparam = nn.Conv2d(c, c, 3, 1, 1)
        self.reparam.weight.copy_(w3 + w1 + wi)
        self.reparam.bias.copy_(b3 + b1 + bi)
        del self.dense, self.one, self.identity
        self.deploy = True


class TinyDet(nn.Module):

    def __init__(self):
        super().__init__()
        self.stem = ConvBN(3, 8, 3, 2)
        self.block = RepBlock(8)
        self.neck = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.cls_preds = nn.Conv2d(8, 4, 1)
        self.reg_preds = nn.Conv2d(8, 4, 1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = self.neck(self.block(self.stem(x)))
        return torch.cat([self.cls_preds(x), self.reg_preds(x)],
                         1), self.fc(self.cls_preds(x).mean((2, 3)))


def tiny_model() -> TinyDet:
    torch.manual_seed(0)
    model = TinyDet()
    randomize_bn(model)
    return model.eval()


def images(n: int = 4, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 3, 16, 16, generator=gen) for _ in range(n)]


def test_bn_fold_is_exact_and_skips_other_patterns():
    model = nn.Sequential(ConvBN(3, 6), nn.Conv2d(6, 6, 3, padding=1), nn.BatchNorm2d(6),
                          BNFirst(6))
    randomize_bn(model)
    model.eval()
    x = torch.randn(2, 3, 9, 9)
    reference = model(x)
    folded = fold_bn(model)
    assert sorted(folded) == ['0.bn', '2']
    assert isinstance(model[0].bn, nn.Identity) and isinstance(model[2], nn.Identity)
    assert isinstance(model[3].bn, nn.BatchNorm2d)
    assert torch.allclose(model(x), reference, atol=1e-5)


def test_quantize_model_structure_bits_and_overrides():
    model = tiny_model()
    qcfg = dict(w_bits=4,
                a_bits=6,
                act=dict(symmetric=True, unsigned=True),
                overrides=[
                    dict(pattern='neck.*', a_bits=8, calibrator=dict(type='PercentileCalibrator')),
                    dict(pattern='fc', skip=True)
                ])
    model_q = quantize_model(model, qcfg)
    assert isinstance(model.stem.conv, nn.Conv2d) and hasattr(model.block, 'dense')  # deep copy
    assert isinstance(model_q.block.reparam, QuantConv2d)  # switch_to_deploy ran
    assert isinstance(model_q.stem.conv, QuantConv2d) and isinstance(model_q.stem.bn, nn.Identity)
    assert isinstance(model_q.neck[0], QuantConv2d) and isinstance(model_q.neck[1], nn.Identity)
    assert isinstance(model_q.fc, nn.Linear) and not isinstance(model_q.fc, QuantLinear)
    bits = {
        n: (m.weight_quantizer.bits, m.input_quantizer.bits)
        for n, m in model_q.named_modules() if isinstance(m, QuantConv2d)
    }
    assert bits == {
        'stem.conv': (8, 8),
        'block.reparam': (4, 6),
        'neck.0': (4, 8),
        'cls_preds': (8, 8),
        'reg_preds': (8, 8)
    }
    neck_act = model_q.neck[0].input_quantizer
    assert type(neck_act.calibrator).__name__ == 'PercentileCalibrator'
    assert neck_act.unsigned and neck_act.qmin == 0
    w_q = model_q.block.reparam.weight_quantizer
    assert w_q.per_channel and w_q.symmetric and w_q.narrow_range
    assert model_q.quant_layer_cfgs['fc']['skip']


def test_w8a8_close_to_float_and_w4_further():
    model = tiny_model()
    x = images(1, seed=9)[0]
    reference = model(x)[0]
    errors = {}
    for bits in (8, 4):
        model_q = quantize_model(model, dict(w_bits=bits, a_bits=bits, first_last_bits=None))
        calibrate(model_q, images(), num_batches=3, progress=False)
        out = model_q(x)[0]
        errors[bits] = ((out - reference).norm() / reference.norm()).item()
        model_q.eval()
    assert errors[8] < 0.02
    assert errors[4] > 3 * errors[8]


def test_calibrate_restores_state_and_sets_scales():
    model_q = quantize_model(tiny_model(),
                            dict(act=dict(calibrator=dict(type='KLCalibrator', bins=256))))
    calibrate(model_q, iter(images()), num_batches=2, progress=False)
    for name, module in model_q.named_modules():
        if isinstance(module, QuantConv2d):
            assert module.weight_quantizer.enabled and module.input_quantizer.enabled
            assert not module.input_quantizer.observing
            assert module.weight_quantizer.scale.shape == (module.out_channels, )
            assert module.input_quantizer.scale.dim() == 0 and module.input_quantizer.scale > 1e-6
    model_q.stem.conv.set_quant_state(weight=False, act=False)
    x = images(1)[0]
    assert torch.allclose(model_q.stem.conv(x), model_q.stem.conv.org_forward(x))
    assert torch.allclose(model_q.stem.conv.org_module(x), model_q.stem.conv.org_forward(x))


def test_cfws_scope_reparam_only_from_a_typed_config():
    model_q = quantize_model(tiny_model(), QuantConfig(w_bits=4, cfws='reparam'))
    assert isinstance(model_q.block.reparam.weight_quantizer, CFWSWeightQuantizer)
    assert not isinstance(model_q.neck[0].weight_quantizer, CFWSWeightQuantizer)
    calibrate(model_q, images(), 1, progress=False)
    assert model_q.block.reparam.weight_quantizer.split


def test_last_patterns_match_yolov7_detect_convs():
    model = nn.Module()
    model.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3))
    model.m = nn.ModuleList([nn.Conv2d(4, 6, 1)])
    model.head = nn.Module()
    model.head.m = nn.ModuleList([nn.Conv2d(4, 6, 1)])
    model_q = quantize_model(model, dict(w_bits=4, a_bits=4))
    bits = {
        n: m.weight_quantizer.bits
        for n, m in model_q.named_modules() if isinstance(m, QuantConv2d)
    }
    assert bits == {'backbone.0': 8, 'backbone.1': 4, 'm.0': 8, 'head.m.0': 8}


@pytest.mark.parametrize('qcfg, key', [
    (dict(wbits=4), 'wbits'),
    (dict(w_bits=3.5), 'w_bits=3.5'),
    (dict(a_bits=12), 'a_bits=12'),
    (dict(weight=dict(bits=4)), 'w_bits'),
    (dict(act=dict(symetric=True)), 'symetric'),
    (dict(act=dict(calibrator='KL')), "calibrator='KL'"),
    (dict(cfws=True), 'cfws=True'),
    (dict(overrides=[dict(w_bits=4)]), 'pattern'),
    (dict(overrides=[dict(pattern='x', abits=4)]), 'abits'),
])
def test_bad_configs_name_the_key(qcfg, key):
    with pytest.raises(ValueError, match=key):
        quantize_model(tiny_model(), qcfg)


def test_quant_wrapper_hook_quantizes_runner_model_once():
    from detptq.engine.hooks.quant_wrapper_hook import QuantWrapperHook
    built = []

    def build_dataloader(cfg, seed=None):
        built.append(cfg)
        return images(cfg['n'])

    runner = SimpleNamespace(model=tiny_model(),
                             build_dataloader=build_dataloader,
                             seed=0,
                             logger=logging.getLogger('test'))
    hook = QuantWrapperHook(quant_cfg=dict(w_bits=4), calib_dataloader=dict(n=3), num_batches=2)
    hook.before_val(runner)
    assert isinstance(runner.model.block.reparam, QuantConv2d)
    scale = runner.model.block.reparam.input_quantizer.scale.clone()
    hook.before_test(runner)
    assert len(built) == 1 and torch.equal(runner.model.block.reparam.input_quantizer.scale, scale)
    with pytest.raises(ValueError, match='stages'):
        QuantWrapperHook(stages='after_run')


def test_transposed_conv_quantized_per_output_channel_with_bops():
    from detptq.quantization import QuantConvTranspose2d, count_bops
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.ConvTranspose2d(4, 6, 2, 2))
    x = images(1)[0]
    model_q = quantize_model(model, dict(first_last_bits=None))
    deconv = model_q[2]
    assert isinstance(deconv, QuantConvTranspose2d) and deconv.weight_quantizer.ch_axis == 1
    calibrate(model_q, images(), 2, progress=False)
    assert deconv.weight_quantizer.scale.shape == (6, )
    reference = model(x)
    assert ((model_q(x) - reference).norm() / reference.norm()) < 0.02
    assert torch.allclose(deconv.org_module(model_q[1](model_q[0].org_forward(x))),
                          reference,
                          atol=1e-6)
    layers = {layer['name']: layer for layer in count_bops(model_q, x)['layers']}
    assert layers['2']['macs'] == 16 * 16 * 4 * 6 * 2 * 2  # input pixels x Cin x Cout x k x k
