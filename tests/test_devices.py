"""Everything follows the model's device: run on CPU always and on CUDA where a GPU exists.

Each test builds its tensors on ``device`` and checks that results stay there
and (for the deterministic parts) equal the CPU result, so the same file
proves GPU behaviour on any machine that has one.
"""
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

from detptq.quantization import (CalibrationSet, UniformQuantizer, calibrate, iter_quantizers,
                                 quantize_model)
from detptq.reconstruction import (PSearchConfig, ReconConfig, UnitDataCache, partition_units,
                                   reconstruct, search_p)
from detptq.reconstruction.adaround import AdaRoundQuantizer
from detptq.reconstruction.drop_masks import bernoulli_mask
from detptq.registry import RECONSTRUCTORS
from detptq.utils.devices import module_device, seeded_generator
from helpers import build_model, randomise_bn
from test_p_search import FakeDetector, dense_fn

pytestmark = pytest.mark.usefixtures('single_thread')

DEVICES = ['cpu', pytest.param('cuda', marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason='no CUDA device on this machine'))]
CALIBRATORS = [dict(type='MinMaxCalibrator'), dict(type='EMAMinMaxCalibrator'),
               dict(type='PercentileCalibrator'), dict(type='LpSearchCalibrator', p=2.0),
               dict(type='KLCalibrator'), dict(type='ImprovedKLCalibrator')]


@pytest.fixture(params=DEVICES)
def device(request):
    """Each available device in turn (CUDA is skipped where there is none).

    On CUDA, TF32 convolutions/matmuls are off during the test so that device
    results can be compared with CPU ones at float32 tolerances.
    """
    flags = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    if request.param == 'cuda':
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield torch.device(request.param)
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


def assert_mostly_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float,
                        share: float, name: str = '') -> None:
    """All but ``share`` of the elements within ``rtol`` (AdaRound codes may flip at V ~ 0)."""
    off = (actual - expected).abs() > rtol * expected.abs().clamp_min(1e-6)
    assert off.float().mean() <= share, (name, int(off.sum()), off.numel())


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


# ------------------------------------------------------------------------------------------
# Device-clean internals (issue 15, section 2): generators, masks, histograms, the unit cache
# tiers, CPU-vs-device agreement, and (CPU-only) no tensor factory without a device.
# ------------------------------------------------------------------------------------------


def cpu_state(model) -> dict:
    """Every tensor of the model's state dict, on the CPU."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items() if torch.is_tensor(v)}


def test_seeded_generator_keeps_the_cpu_stream(device):
    """CPU: exactly the old torch.Generator() stream; elsewhere: a generator on that device."""
    old, new = torch.Generator().manual_seed(7), seeded_generator(7, 'cpu')
    assert torch.equal(torch.randperm(50, generator=old), torch.randperm(50, generator=new))
    assert torch.equal(bernoulli_mask((3, 70), 0.5, old), bernoulli_mask((3, 70), 0.5, new))
    gen = seeded_generator(7, device)
    assert gen.device.type == device.type
    mask = bernoulli_mask((4, 33), 0.5, gen, device)
    assert on(device, mask) and mask.dtype == torch.bool
    again = bernoulli_mask((4, 33), 0.5, seeded_generator(7, device), device)
    assert torch.equal(mask, again)  # reproducible on its own device
    # a CPU generator still works for a model elsewhere: drawn on the CPU, moved over
    assert on(device, bernoulli_mask((5,), 0.3, torch.Generator().manual_seed(1), device))


def test_histograms_and_subsampling_follow_the_device(device):
    """KL counts accumulate on the data's device; Lp/percentile subsample there too."""
    gen = torch.Generator().manual_seed(3)
    batches = [torch.randn(2, 4, 16, 16, generator=gen) * s for s in (1.0, 3.0)]  # 2nd extends
    counts, scales = [], []
    for dev in (torch.device('cpu'), device):
        kl = UniformQuantizer(bits=8, symmetric=True, calibrator=dict(type='KLCalibrator')).to(dev)
        for b in batches:
            kl.observe(b.to(dev))
        hist = kl.calibrator.histogram
        assert hist.num_bins > 2048 and on(dev, hist.counts)
        kl.compute_params()
        counts.append(hist.counts.cpu())
        lp = UniformQuantizer(bits=4, calibrator=dict(type='LpSearchCalibrator',
                                                      max_samples=300)).to(dev)
        for b in batches:
            lp.observe(b.to(dev))  # 2048 values per batch > 300: random columns kept
        assert on(dev, lp.calibrator.samples.values(), lp.compute_params()[0])
        scales.append((kl.scale.cpu(), lp.scale.cpu()))
    if device.type == 'cpu':
        assert torch.equal(counts[0], counts[1])
    else:  # CUDA's histc may put a value on a bin edge into the neighbouring bin
        assert counts[1].sum() == counts[0].sum()
        assert (counts[1] - counts[0]).abs().sum() <= 1e-3 * counts[0].sum()
    torch.testing.assert_close(scales[0][0], scales[1][0], rtol=1e-2, atol=0)
    # CUDA samples other columns than CPU (other random stream): the MSE step stays close
    torch.testing.assert_close(scales[0][1], scales[1][1], rtol=0.15, atol=0)


def filled_cache(**kwargs) -> UnitDataCache:
    """Two groups of rows whose q_in/fp_out pairing can be checked (fp_out = 10 * q_in)."""
    cache = UnitDataCache(**kwargs)
    for i in range(6):
        rows = torch.arange(4, dtype=torch.float32) + 4 * i
        cache.add(q_in=(rows[:, None, None].expand(4, 3, 5).clone(),), fp_out=rows * 10)
    for i in range(3):
        cache.add(q_in=(torch.full((2, 3, 7), float(i)),), fp_out=torch.full((2,), 10.0 * i))
    cache.consolidate()
    return cache


def test_cache_tiers_return_the_same_batches(device, tmp_path):
    """Device -> host -> disk spilling changes where rows live, never which rows come back."""
    in_memory = filled_cache(device=device)
    tiered = filled_cache(max_bytes=500, spill_dir=str(tmp_path), device=device,
                          device_max_bytes=400)
    assert tiered.bytes_in_memory <= 500 and tiered.spilled and os.listdir(tmp_path)
    if device.type == 'cpu':
        assert tiered.bytes_on_device == 0 and in_memory.bytes_on_device == 0
    else:
        assert 0 < tiered.bytes_on_device <= 400 and tiered.bytes_in_memory > 0
    assert len(tiered) == len(in_memory) == 30
    gens = [seeded_generator(5, device), seeded_generator(5, device)]
    for _ in range(12):
        a, b = in_memory.sample(5, gens[0]), tiered.sample(5, gens[1])
        assert torch.equal(a['q_in'][0].cpu(), b['q_in'][0].cpu())
        assert torch.equal(a['fp_out'].cpu(), b['fp_out'].cpu())
        assert torch.equal(b['q_in'][0][:, 0, 0] * 10, b['fp_out'])
    for a, b in zip(in_memory.iter_batches(7), tiered.iter_batches(7)):
        assert torch.equal(a['fp_out'].cpu(), b['fp_out'].cpu())
    tiered.close()
    assert not os.listdir(tmp_path)


def test_reconstruction_with_a_spilling_cache_equals_the_in_memory_one(device, tmp_path):
    """QDrop on two units: a tiny cache budget (disk) gives bit-identical weights and scales."""
    states = []
    for budget in (dict(), dict(cache_max_bytes=2000, cache_device_max_bytes=1000,
                                cache_dir=str(tmp_path))):
        q, data = tiny_quantized(device)
        stats = reconstruct(None, q, partition_units(q)[:2], data,
                            dict(mode='qdrop', iters=4, batch_size=3, progress=False, **budget))
        states.append(cpu_state(q))
        spilled = [s['spilled_bytes'] for s in stats]
        assert all(spilled) if budget else not any(spilled)
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key


def test_one_unit_reconstruction_matches_cpu(device):
    """BRECQ with batches holding every row (no randomness): the device result equals CPU's."""
    results = []
    for dev in (torch.device('cpu'), device):
        q, data = tiny_quantized(dev)
        stats = reconstruct(None, q, partition_units(q)[:1], data,
                            dict(mode='brecq', iters=5, batch_size=6, progress=False))
        assert on(dev, *[t for t in q.state_dict().values() if torch.is_tensor(t)])
        results.append((cpu_state(q), stats[0]['loss_after']))
    for key, value in results[0][0].items():
        if value.is_floating_point():
            assert_mostly_close(results[1][0][key], value, rtol=1e-4, share=0.02, name=key)
        else:
            assert torch.equal(results[1][0][key], value), key
    assert results[1][1] == pytest.approx(results[0][1], rel=1e-2)


def test_p_search_matches_cpu(device):
    """The p search on the device picks CPU's p* (or one CPU scores within 1e-4 of the best:
    a float near-tie) with scales within a clip-ratio step (1 %)."""
    found = []
    for dev in (torch.device('cpu'), device):
        q, data = tiny_quantized(dev)
        found.append(search_p(q, data, dense_fn, PSearchConfig(progress=False)))
        assert on(dev, *[qq.scale for _, qq in iter_quantizers(q)])
    assert found[0].keys() == found[1].keys()
    for layer, kinds in found[0].items():
        for kind, entry in kinds.items():
            other = found[1][layer][kind]
            odol = entry['odol']
            best = min(odol.values())
            assert odol[str(other['p'])] <= best * (1 + 1e-4), (layer, kind, entry['p'],
                                                                other['p'])
            if other['p'] == entry['p']:
                torch.testing.assert_close(torch.tensor(other['scale']),
                                           torch.tensor(entry['scale']), rtol=1e-2, atol=0)


def tiny_yolo_batches(num_batches: int = 2, size: int = 32):
    """mmengine data dicts (uint8 images + letterbox meta) as PTQLoop feeds the detector."""
    from mmdet.structures import DetDataSample
    gen = torch.Generator().manual_seed(4)
    meta = dict(img_shape=(size, size), ori_shape=(size, size), scale_factor=(1.0, 1.0),
                pad_param=[0, 0, 0, 0])
    return [dict(inputs=[(torch.rand(3, size, size, generator=gen) * 255).to(torch.uint8)
                         for _ in range(2)],
                 data_samples=[DetDataSample(metainfo=meta) for _ in range(2)])
            for _ in range(num_batches)]


def test_ptq_loop_steps_on_a_tiny_yolov6_match_cpu(device):
    """PTQLoop's steps on YOLOv6-N: quantize, calibrate, DetPTQ (p search + reconstruction),
    predict; with every row in each batch and no dropping the device result equals CPU's.
    (On CPU the run is done once: it is its own reference.)"""
    outputs = []
    for dev in [torch.device('cpu')] + ([device] if device.type != 'cpu' else []):
        torch.manual_seed(0)
        model = build_model('yolov6_n', dict(bbox_head=dict(num_classes=3)))
        randomise_bn(model)
        model = model.eval().to(dev)
        batches = tiny_yolo_batches()
        calib = CalibrationSet.from_loader(batches, model.data_preprocessor)
        q = quantize_model(model, dict(w_bits=4, a_bits=8))
        calibrate(q, calib, progress=False)
        recon = RECONSTRUCTORS.build(dict(type='DetPTQReconstructor', mode='brecq', iters=2,
                                          batch_size=4, progress=False, p_search_images=2,
                                          p_search=dict(progress=False)))
        recon(q, calib)
        with torch.no_grad():
            data = q.data_preprocessor(batches[0], False)
            cls, box = q(data['inputs'], mode='tensor')
            preds = q.test_step(batches[0])
        assert module_device(q).type == dev.type
        assert on(dev, *cls, *box, *[t for t in q.state_dict().values() if torch.is_tensor(t)])
        assert on(dev, *[p.pred_instances.bboxes for p in preds])
        outputs.append(torch.cat([c.flatten() for c in cls]).sigmoid().cpu())
    if len(outputs) == 2:
        # AdaRound decisions near V = 0 may flip with float round-off on another device
        torch.testing.assert_close(outputs[1], outputs[0], rtol=0, atol=2e-2)
        assert (outputs[1] - outputs[0]).abs().mean() < 1e-3


# ------------------------------------------------------------------ CPU-only fake device check
FACTORIES = {torch.tensor, torch.zeros, torch.ones, torch.empty, torch.full, torch.arange,
             torch.rand, torch.randn, torch.randint, torch.randperm, torch.linspace,
             torch.as_tensor, torch.eye}
DETPTQ_DIR = str(Path(__file__).resolve().parents[1] / 'detptq')


class DevicelessFactories(TorchFunctionMode):
    """Records tensor factories called from detptq code without ``device=``.

    On a CPU-only machine such a call is harmless, on a GPU it makes a CPU
    tensor next to CUDA ones: this is how the CPU suite catches it. A tensor
    passed to ``as_tensor`` keeps its device, so only non-tensor data counts.
    """

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        caller = sys._getframe(1)
        from_detptq = caller.f_code.co_filename.startswith(DETPTQ_DIR)
        from_data = func is torch.as_tensor and args and torch.is_tensor(args[0])
        if func in FACTORIES and from_detptq and 'device' not in kwargs and not from_data:
            where = f'{caller.f_code.co_filename[len(DETPTQ_DIR) - 6:]}:{caller.f_lineno}'
            self.calls.append(f'{func.__name__} at {where}')
        return func(*args, **kwargs)


@contextmanager
def deviceless_factories():
    """Yield the list of device-less factory calls made from detptq inside the block."""
    mode = DevicelessFactories()
    with mode:
        yield mode.calls


def test_no_tensor_factory_without_a_device_during_ptq():
    """Calibration (every calibrator), the p search and QDrop/DetPTQ reconstruction never make
    a tensor on a default device: everything is derived from the model's device."""
    for calibrator in CALIBRATORS:
        torch.manual_seed(0)
        model = FakeDetector().eval()
        data = [torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(i))
                for i in range(2)]
        q = quantize_model(model, dict(w_bits=4, a_bits=4, first_last_bits=None,
                                       act=dict(calibrator=dict(calibrator, max_samples=100)
                                                if 'Lp' in calibrator['type']
                                                or 'Percentile' in calibrator['type']
                                                else dict(calibrator))))
        with deviceless_factories() as calls:
            calibrate(q, data, num_batches=len(data), progress=False)
        assert not calls, (calibrator['type'], calls)
    recon = RECONSTRUCTORS.build(dict(type='DetPTQReconstructor', iters=3, batch_size=2,
                                      progress=False, p_search_images=3,
                                      p_search=dict(progress=False, max_samples=100)))
    q, data = tiny_quantized(torch.device('cpu'))
    with deviceless_factories() as calls:
        recon(q, data, dense_fn=dense_fn)
        reconstruct(None, q, partition_units(q)[:2], data,
                    dict(mode='qdrop', iters=3, batch_size=2, progress=False,
                         cache_max_bytes=500))  # the disk tier too
    assert not calls, calls


def test_the_deviceless_factory_check_can_fail():
    """The check above is live: detptq code that makes a tensor without a device is reported
    (a quantizer's buffers are born on the CPU; ``.to(device)`` moves them afterwards)."""
    with deviceless_factories() as calls:
        torch.zeros(3)  # made here, in tests/: not detptq code, not reported
    assert not calls
    with deviceless_factories() as calls:
        UniformQuantizer(bits=4)
    assert calls and all('quantization/quantizer.py' in c for c in calls), calls


def test_cache_device_settings_are_checked():
    """Bad cache placement settings are one clear error naming the key and value."""
    with pytest.raises(ValueError, match=r"cache_device='gpu'"):
        ReconConfig(cache_device='gpu')
    with pytest.raises(ValueError, match='cache_device_max_bytes=-1'):
        ReconConfig(cache_device_max_bytes=-1)
    # placement never changes results: it is not part of a unit's resume fingerprint
    assert ReconConfig(cache_device='cpu', cache_device_max_bytes=10).fingerprint('u', 0, 2.0) \
        == ReconConfig().fingerprint('u', 0, 2.0)
