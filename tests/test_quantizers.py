"""UniformQuantizer: hand-computed values per mode, STE and LSQ gradients, config errors."""
import pytest
import torch
from torch import nn

from detptq.quantization import UniformQuantizer
from detptq.registry import QUANTIZERS


def calibrated(x: torch.Tensor, **kwargs) -> UniformQuantizer:
    quantizer = UniformQuantizer(**kwargs)
    quantizer.observe(x)
    quantizer.compute_params()
    return quantizer


def test_code_ranges_per_mode():
    assert (UniformQuantizer(bits=4).qmin, UniformQuantizer(bits=4).qmax) == (-8, 7)
    narrow = UniformQuantizer(bits=8, narrow_range=True)
    assert (narrow.qmin, narrow.qmax) == (-127, 127)
    unsigned = UniformQuantizer(bits=4, unsigned=True)
    assert (unsigned.qmin, unsigned.qmax) == (0, 15)
    asym = UniformQuantizer(bits=3, symmetric=False)
    assert (asym.qmin, asym.qmax) == (0, 7)


def test_symmetric_4bit_known_vector():
    x = torch.tensor([-1.0, -0.45, 0.0, 0.33, 0.71, 1.4])
    q = calibrated(x, bits=4, symmetric=True)
    # MinMax: s = max|x| / (2^3 - 1) = 1.4 / 7 = 0.2; codes [-5, -2, 0, 2, 4, 7].
    assert q.scale.item() == pytest.approx(0.2)
    assert q.zero_point.item() == 0
    assert torch.equal(q.to_int(x), torch.tensor([-5.0, -2.0, 0.0, 2.0, 4.0, 7.0]))
    assert torch.allclose(q(x), torch.tensor([-1.0, -0.4, 0.0, 0.4, 0.8, 1.4]), atol=1e-6)


def test_clipping_full_vs_narrow_range():
    x = torch.tensor([-2.0, 2.0])
    full = UniformQuantizer(bits=4)
    full.set_params(torch.tensor(0.1))
    assert torch.allclose(full(x), torch.tensor([-0.8, 0.7]))
    narrow = UniformQuantizer(bits=4, narrow_range=True)
    narrow.set_params(torch.tensor(0.1))
    assert torch.allclose(narrow(x), torch.tensor([-0.7, 0.7]))


def test_asymmetric_3bit_known_vector():
    x = torch.tensor([-0.5, 0.2, 1.26, 3.0])
    q = calibrated(x, bits=3, symmetric=False)
    # s = 3.5 / 7 = 0.5, z = -round(-0.5 / 0.5) = 1; codes [0, 1, 4, 7].
    assert q.scale.item() == pytest.approx(0.5)
    assert q.zero_point.item() == 1
    assert torch.equal(q.to_int(x), torch.tensor([0.0, 1.0, 4.0, 7.0]))
    assert torch.allclose(q(x), torch.tensor([-0.5, 0.0, 1.5, 3.0]))


def test_unsigned_4bit_clips_negatives():
    q = calibrated(torch.tensor([0.0, 3.0]), bits=4, unsigned=True)
    assert q.scale.item() == pytest.approx(0.2)  # 3 / 15
    assert torch.allclose(q(torch.tensor([-0.3, 0.55, 3.1])), torch.tensor([0.0, 0.6, 3.0]))


def test_per_channel_scales_along_axis():
    w = torch.tensor([[1.0, -0.5, 0.25], [10.0, 3.0, -7.0]])
    q = calibrated(w, bits=8, per_channel=True, ch_axis=0, narrow_range=True)
    assert torch.allclose(q.scale, torch.tensor([1.0 / 127, 10.0 / 127]))
    assert torch.allclose(q(w), w, atol=10.0 / 127 / 2 + 1e-6)
    # Axis 1 (activation-style NCHW channels).
    x = torch.stack([torch.full((2, 2), 1.0), torch.full((2, 2), 4.0)]).unsqueeze(0)
    qa = calibrated(x, bits=8, per_channel=True, ch_axis=1)
    assert qa.scale.shape == (2, )
    assert torch.allclose(qa.scale, torch.tensor([1.0, 4.0]) / 127)


def test_pass_through_and_disabled():
    x = torch.randn(10)
    q16 = calibrated(x, bits=16)
    assert torch.equal(q16(x), x)
    q4 = calibrated(x, bits=4)
    assert not torch.equal(q4(x), x)
    q4.enabled = False
    assert torch.equal(q4(x), x)


def test_ste_gradient_inside_and_outside_range():
    q = UniformQuantizer(bits=4)
    q.set_params(torch.tensor(0.1))
    x = torch.tensor([0.03, 0.26, 5.0, -5.0], requires_grad=True)
    q(x).sum().backward()
    assert torch.equal(x.grad, torch.tensor([1.0, 1.0, 0.0, 0.0]))


def test_lsq_scale_is_parameter_with_scaled_gradient():
    q = UniformQuantizer(bits=4, learn_scale=True)
    q.set_params(torch.tensor(0.1))
    assert isinstance(q.scale, nn.Parameter)
    assert 'scale' in dict(q.named_parameters())
    x = torch.tensor([0.03, 0.26, 5.0, -5.0])
    q(x).sum().backward()
    # d x_hat / d s: round(x/s) - x/s inside, qmax / qmin when clipped (LSQ).
    raw = (0 - 0.3) + (3 - 2.6) + 7 + (-8)
    factor = 1.0 / (4 * 7)**0.5  # 1 / sqrt(N * Q_p)
    assert q.scale.grad.item() == pytest.approx(raw * factor, rel=1e-4)
    q.set_learn_scale(False)
    assert not isinstance(q.scale, nn.Parameter) and q.scale.item() == pytest.approx(0.1)


def test_state_dict_adopts_calibrated_shapes():
    w = torch.randn(6, 3, 3, 3)
    q = calibrated(w, bits=4, per_channel=True)
    fresh = UniformQuantizer(bits=4, per_channel=True)
    fresh.load_state_dict(q.state_dict())
    assert torch.equal(fresh(w), q(w))


def test_built_from_registry_with_calibrator_config():
    q = QUANTIZERS.build(
        dict(type='UniformQuantizer',
             bits=6,
             symmetric=False,
             calibrator=dict(type='PercentileCalibrator', percentile=99.0)))
    assert type(q.calibrator).__name__ == 'PercentileCalibrator'
    assert q.calibrator.percentile == 99.0


@pytest.mark.parametrize('kwargs, key', [
    (dict(bits=1), 'bits=1'),
    (dict(bits=9), 'bits=9'),
    (dict(bits=4.0), 'bits=4.0'),
    (dict(symmetric='yes'), "symmetric='yes'"),
    (dict(symmetric=False, unsigned=True), 'unsigned=True'),
    (dict(symmetric=False, narrow_range=True), 'narrow_range=True'),
    (dict(ch_axis='0'), "ch_axis='0'"),
    (dict(calibrator=dict(percentile=99)), 'no "type"'),
])
def test_bad_config_values_raise_clear_errors(kwargs, key):
    with pytest.raises(ValueError, match=key.replace('(', r'\(')):
        UniformQuantizer(**kwargs)
