"""Everything follows the model's device: run on CPU always and on CUDA where a GPU exists.

Each test builds its tensors on ``device`` and checks that results stay there
and (for the deterministic parts) equal the CPU result, so the same file
proves GPU behaviour on any machine that has one.
"""
import pytest
import torch

from detptq.quantization import UniformQuantizer, calibrate, iter_quantizers, quantize_model
from detptq.reconstruction import PSearchConfig, partition_units, reconstruct, search_p
from detptq.reconstruction.adaround import AdaRoundQuantizer
from detptq.registry import RECONSTRUCTORS
from test_p_search import FakeDetector, dense_fn

pytestmark = pytest.mark.usefixtures('single_thread')

DEVICES = ['cpu', pytest.param('cuda', marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason='no CUDA device on this machine'))]
CALIBRATORS = [dict(type='MinMaxCalibrator'), dict(type='EMAMinMaxCalibrator'),
               dict(type='PercentileCalibrator'), dict(type='LpSearchCalibrator', p=2.0),
               dict(type='KLCalibrator'), dict(type='ImprovedKLCalibrator')]


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    """Each available device in turn (CUDA is skipped where there is none)."""
    return torch.device(request.param)


def on(device: torch.device, *tensors: torch.Tensor) -> bool:
    """True when every tensor lives on ``device`` (any index of its type)."""
    return all(t.device.type == device.type for t in tensors)


def tiny_quantized(device: torch.device, w_bits: int = 4, a_bits: int = 4):
    """The fake detector quantized and MinMax-calibrated on ``device``, with its data."""
    torch.manual_seed(0)
    model = FakeDetector().eval().to(device)
    gen = torch.Generator().manual_seed(0)
    data = [torch.randn(3, 3, 16, 16, generator=gen).to(device) for _ in range(2)]
    q = quantize_model(model, dict(w_bits=w_bits, a_bits=a_bits, first_last_bits=None))
    calibrate(q, data, num_batches=len(data), progress=False)
    return q, data


def test_quantizers_follow_the_device(device):
    x = torch.randn(6, 4, 5, 5, generator=torch.Generator().manual_seed(0))
    for kwargs in (dict(symmetric=False), dict(per_channel=True, narrow_range=True),
                   dict(symmetric=True, unsigned=True)):
        results = []
        for dev in (torch.device('cpu'), device):
            q = UniformQuantizer(bits=4, **kwargs).to(dev)
            q.observe(x.to(dev))
            q.compute_params()
            q.set_learn_scale(True)
            xd = x.to(dev).requires_grad_()
            y = q(xd)
            y.square().sum().backward()
            assert on(dev, q.scale, q.zero_point, y, xd.grad, q.scale.grad)
            results.append(y.detach().cpu())
        torch.testing.assert_close(results[0], results[1])


@pytest.mark.parametrize('calibrator', CALIBRATORS, ids=lambda c: c['type'])
def test_calibrators_follow_the_device(device, calibrator):
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(4, 3, 8, 8, generator=gen) * (i + 1) for i in range(2)]
    params = []
    for dev in (torch.device('cpu'), device):
        q = UniformQuantizer(bits=8, symmetric=False, calibrator=dict(calibrator)).to(dev)
        for b in batches:
            q.observe(b.to(dev))
        scale, zero_point = q.compute_params()
        assert on(dev, scale, zero_point, q.scale, q.zero_point)
        params.append((scale.cpu(), zero_point.cpu()))
    torch.testing.assert_close(params[0][0], params[1][0], rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(params[0][1], params[1][1], rtol=0, atol=1.0)


def test_adaround_follows_the_device(device):
    weight = torch.randn(8, 4, 3, 3, generator=torch.Generator().manual_seed(2)).to(device)
    base = UniformQuantizer(bits=4, per_channel=True, narrow_range=True).to(device)
    base.observe(weight)
    base.compute_params()
    rounder = AdaRoundQuantizer(base, weight)
    soft = rounder(weight)
    loss = rounder.rounding_loss(beta=10.0)
    (soft.square().sum() + loss).backward()
    assert on(device, soft, loss, *[p.grad for p in rounder.parameters() if p.grad is not None])
    rounder.hard()
    hard = rounder(weight)
    assert on(device, hard)
    codes = hard / base.scale.reshape(-1, 1, 1, 1)
    assert torch.allclose(codes, codes.round(), atol=1e-4)  # on the grid


def test_one_unit_reconstruction_follows_the_device(device):
    q, data = tiny_quantized(device)
    units = partition_units(q)
    stats = reconstruct(None, q, units[:2], data,
                        dict(iters=4, batch_size=3, progress=False, warm_up=0.2))
    assert len(stats) == 2 and all(s['loss_after'] == s['loss_after'] for s in stats)
    assert on(device, *[t for t in q.state_dict().values() if torch.is_tensor(t)])


def test_p_search_follows_the_device(device):
    q, data = tiny_quantized(device)
    results = search_p(q, data, dense_fn, PSearchConfig(progress=False))
    assert set(results) == {'backbone.0', 'backbone.2', 'neck', 'cls_pred', 'reg_pred'}
    assert on(device, *[qq.scale for _, qq in iter_quantizers(q)])


def test_ptq_steps_follow_the_device(device, tmp_path):
    """What PTQLoop runs: quantize, calibrate, DetPTQ (p search + QDrop), then inference."""
    q, data = tiny_quantized(device)
    recon = RECONSTRUCTORS.build(dict(type='DetPTQReconstructor', iters=3, batch_size=3,
                                      progress=False, p_search_images=3,
                                      p_search=dict(progress=False)))
    stats = recon(q, data, work_dir=str(tmp_path), dense_fn=dense_fn)
    assert len(stats) == len(partition_units(q))
    with torch.no_grad():
        cls, reg = q(data[0])
    assert on(device, cls, reg, *[t for t in q.state_dict().values() if torch.is_tensor(t)])
