"""CFWS weight splitting: lower error on centre-heavy kernels, exact deploy split, BOPs."""
import torch
import torch.nn.functional as F
from torch import nn

from detptq.quantization import (CFWSWeightQuantizer, QuantConv2d, UniformQuantizer,
                                 cfws_extra_bops, count_bops)
from detptq.registry import QUANTIZERS


def reparam_like_kernel(seed: int = 0) -> torch.Tensor:
    """A fused RepVGG-style kernel: small surround, centre boosted by 1x1 and identity branches."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(16, 8, 3, 3, generator=gen) * 0.02
    w[:, :, 1, 1] += torch.randn(16, 8, generator=gen) * 0.5
    return w


def calibrated(quantizer: UniformQuantizer, w: torch.Tensor) -> UniformQuantizer:
    quantizer.observe(w)
    quantizer.compute_params()
    return quantizer


def test_cfws_beats_per_channel_minmax_at_4_bit():
    w = reparam_like_kernel()
    plain = calibrated(UniformQuantizer(bits=4, per_channel=True, narrow_range=True), w)
    cfws = calibrated(CFWSWeightQuantizer(bits=4), w)
    assert cfws.split
    err_plain = (plain(w) - w).pow(2).mean()
    err_cfws = (cfws(w) - w).pow(2).mean()
    assert err_cfws < 0.5 * err_plain
    # The surround taps in particular are no longer crushed to zero.
    surround = torch.ones(3, 3, dtype=torch.bool)
    surround[1, 1] = False
    assert (cfws(w)[..., surround] != 0).float().mean() > (plain(w)[..., surround]
                                                           != 0).float().mean()


def test_coarse_scale_is_centre_minmax_and_fine_covers_union():
    w = reparam_like_kernel(1)
    q = calibrated(CFWSWeightQuantizer(bits=4, narrow_range=True), w)
    centre_max = w[:, :, 1, 1].abs().amax(dim=1)
    assert torch.allclose(q.coarse_scale, centre_max / 7)
    union = w - q.coarse_part(w, q.coarse_scale)
    assert torch.allclose(union[:, :, 1, 1],
                          w[:, :, 1, 1] - q.coarse_part(w, q.coarse_scale)[:, :, 1, 1])
    assert torch.allclose(q.scale, union.abs().flatten(1).amax(dim=1) / 7)


def test_deploy_split_reproduces_fake_quant_conv():
    w = reparam_like_kernel(2)
    q = calibrated(CFWSWeightQuantizer(bits=4), w)
    fine, coarse = q.split_weight(w)
    assert coarse.shape == (16, 8, 1, 1)
    x = torch.randn(2, 8, 7, 7)
    fused = F.conv2d(x, q(w), padding=1, stride=2)
    two_convs = F.conv2d(x, fine, padding=1, stride=2) + F.conv2d(x, coarse, padding=0, stride=2)
    assert torch.allclose(fused, two_convs, atol=1e-5)


def test_non_square_or_1x1_kernels_fall_back_to_plain():
    w = torch.randn(4, 3, 1, 1)
    plain = calibrated(UniformQuantizer(bits=4, per_channel=True, narrow_range=True), w)
    cfws = calibrated(CFWSWeightQuantizer(bits=4), w)
    assert not cfws.split
    assert torch.equal(cfws(w), plain(w))


def test_cfws_gradients_and_state_dict():
    w = reparam_like_kernel(3).requires_grad_()
    q = QUANTIZERS.build(dict(type='CFWSWeightQuantizer', bits=4, learn_scale=True))
    calibrated(q, w.detach())
    q(w).sum().backward()
    assert w.grad is not None and q.scale.grad is not None
    fresh = CFWSWeightQuantizer(bits=4)
    fresh.load_state_dict(q.state_dict())
    assert fresh.split and torch.equal(fresh(w.detach()), q(w.detach()))


def test_extra_bops_counts_the_centre_1x1_conv():
    conv = nn.Conv2d(8, 16, 3, padding=1, stride=2)
    w_q = CFWSWeightQuantizer(bits=4)
    model = nn.Sequential(QuantConv2d(conv, w_q, UniformQuantizer(bits=8, symmetric=False)))
    calibrated(w_q, conv.weight.detach())
    x = torch.randn(1, 8, 10, 10)
    report = cfws_extra_bops(model, x)
    out_pixels = 5 * 5
    assert report['cfws_extra_bops'] == 16 * 8 * out_pixels * 4 * 8
    assert report['total_bops'] == 16 * 8 * 9 * out_pixels * 4 * 8 + report['cfws_extra_bops']
    assert abs(report['extra_ratio'] - 1 / 9) < 1e-9
    float_model = nn.Sequential(conv)
    assert count_bops(float_model, x)['total_bops'] == 16 * 8 * 9 * out_pixels * 32 * 32
