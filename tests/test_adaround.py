"""AdaRound quantizer: soft init equals FP weights, hard rounding is floor or ceil, beta schedule."""
import pytest
import torch

from detptq.quantization import QuantConv2d, UniformQuantizer
from detptq.reconstruction import AdaRoundQuantizer, LinearTempDecay


def calibrated(weight: torch.Tensor, **kwargs) -> UniformQuantizer:
    q = UniformQuantizer(per_channel=True, ch_axis=0, **kwargs)
    q.observe(weight)
    q.compute_params()
    return q


@pytest.mark.parametrize('kwargs', [dict(bits=4, narrow_range=True),
                                    dict(bits=3, symmetric=False)])
def test_init_soft_weight_equals_fp_weight(kwargs):
    torch.manual_seed(0)
    w = torch.randn(6, 4, 3, 3)
    base = calibrated(w, **kwargs)
    rounder = AdaRoundQuantizer(base, w)
    scale, zp = base.broadcast_params(w)
    inside = ((w / scale + zp) >= base.qmin) & ((w / scale + zp) <= base.qmax)
    # asymmetric MinMax can clip a little (rounded zero point), symmetric never
    assert inside.float().mean() > 0.9
    # inside the grid the soft value is exactly the FP weight
    soft = rounder(w)
    assert torch.allclose(soft[inside], w[inside], atol=1e-5)
    assert torch.allclose(soft[~inside], base(w)[~inside], atol=1e-5)  # clipped values
    # and it differs from nearest rounding, which the base quantizer does
    assert not torch.allclose(base(w), w, atol=1e-3)


def test_hard_rounding_is_floor_or_ceil_and_init_is_nearest():
    torch.manual_seed(1)
    w = torch.randn(5, 3, 3, 3)
    base = calibrated(w, bits=4, narrow_range=True)
    rounder = AdaRoundQuantizer(base, w)
    scale = base.scale.reshape(-1, 1, 1, 1)
    with torch.no_grad():
        hard_init = AdaRoundQuantizer(base, w).hard()(w)
        assert torch.allclose(hard_init, base(w), atol=1e-6)  # V >= 0 <=> frac >= 0.5
        rounder.v.add_(torch.randn_like(rounder.v) * 3)  # arbitrary learnt state
        soft = rounder(w)
        rounder.hard()
        hard = rounder(w)
    codes = hard / scale
    floor, ceil = torch.floor(w / scale), torch.floor(w / scale) + 1
    lo, hi = base.qmin, base.qmax
    assert torch.all((codes - floor.clamp(lo, hi)).abs().lt(1e-4)
                     | (codes - ceil.clamp(lo, hi)).abs().lt(1e-4))
    assert torch.allclose(codes, codes.round(), atol=1e-4)  # on the grid
    assert not torch.allclose(soft, hard)  # soft values lie between grid points
    assert not rounder.v.requires_grad


def test_gradient_reaches_v_only_and_regulariser_behaves():
    torch.manual_seed(2)
    w = torch.randn(4, 2, 3, 3)
    base = calibrated(w, bits=4, narrow_range=True)
    rounder = AdaRoundQuantizer(base, w)
    rounder(w).pow(2).sum().backward()
    assert rounder.v.grad is not None and rounder.v.grad.abs().sum() > 0
    assert base.scale.grad is None
    reg = rounder.rounding_loss(beta=2.0)
    assert reg.item() > 0
    with torch.no_grad():
        rounder.v.copy_(torch.sign(torch.randn_like(rounder.v)) * 10)  # h in {0, 1}
    assert rounder.rounding_loss(beta=2.0).item() == pytest.approx(0.0, abs=1e-6)


def test_enabled_flag_goes_through_quant_module():
    conv = torch.nn.Conv2d(2, 3, 3)
    layer = QuantConv2d(conv, calibrated(conv.weight.detach(), bits=4, narrow_range=True))
    rounder = AdaRoundQuantizer(layer.weight_quantizer, conv.weight.detach())
    layer.weight_quantizer = rounder
    layer.set_quant_state(False, False)
    assert not rounder.base.enabled and not rounder.active
    assert torch.equal(rounder(conv.weight), conv.weight)
    layer.set_quant_state(True, False)
    assert rounder.base.enabled


def test_linear_temp_decay_values():
    decay = LinearTempDecay(iters=101, warm_up=0.2, start_b=20, end_b=2)
    assert decay.start_decay == 20
    assert decay.in_warmup(19) and not decay.in_warmup(20)
    assert decay(0) == 20 and decay(20) == 20
    assert decay(60) == pytest.approx(11.0)  # half way through the decay
    assert decay(100) == pytest.approx(2.0)  # last iteration reaches end_b
    values = [decay(t) for t in range(101)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    with pytest.raises(ValueError):
        LinearTempDecay(iters=0)
