"""BRECQ / QDrop / layer-wise AdaRound on a tiny conv net: error goes down, QDrop(p=1) == BRECQ,
resume == uninterrupted, the unit data cache spills to disk."""
import copy
import os

import pytest
import torch
from torch import nn

from detptq.quantization import UniformQuantizer
from detptq.reconstruction import (ReconConfig, UnitDataCache, partition_units, quant_layers,
                                   reconstruct)
from detptq.reconstruction import block_reconstruction
from detptq.reconstruction.unit_io import fill_unit_cache
from detptq.reconstruction.unit_training import setup_unit, finish_unit, unit_forward
from detptq.registry import RECONSTRUCTORS
from helpers import quantize_and_calibrate

pytestmark = pytest.mark.usefixtures('single_thread')


class Residual(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(c, c, 3, 1, 1), nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x):
        return x + self.conv2(torch.relu(self.conv1(x)))


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU())
        self.res = Residual(8)
        self.down = nn.Conv2d(8, 16, 3, 2, 1)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        return self.head(torch.relu(self.down(self.res(self.stem(x)))))


def make_quantized(w_bits=3, a_bits=4, seed=0):
    torch.manual_seed(seed)
    net = TinyNet().eval()
    data = [torch.randn(4, 3, 16, 16) for _ in range(3)]
    return quantize_and_calibrate(net, data, w_bits, a_bits), data


def fast_cfg(**kwargs):
    base = dict(iters=30, batch_size=4, progress=False, warm_up=0.2, round_weight=0.01)
    base.update(kwargs)
    return ReconConfig(**base)


def states_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_reconstruction_beats_nearest_rounding_and_leaves_weights_on_grid():
    q, data = make_quantized(w_bits=3, a_bits=4)
    stats = reconstruct(None, q, partition_units(q), data, fast_cfg(iters=200))
    assert [s['unit'] for s in stats] == ['stem.0', 'res', 'down', 'head']
    for s in stats:
        assert s['loss_after'] < s['loss_before'], s
    for name, layer in quant_layers(q):
        assert isinstance(layer.weight_quantizer, UniformQuantizer)  # AdaRound removed again
        with torch.no_grad():
            assert torch.allclose(layer.weight_quantizer(layer.weight), layer.weight, atol=1e-6)
        assert isinstance(layer.input_quantizer.scale, torch.Tensor)
        assert not isinstance(layer.input_quantizer.scale, nn.Parameter)  # LSQ switched off


def test_qdrop_with_drop_prob_one_is_brecq():
    q, data = make_quantized()
    q_brecq, q_qdrop = copy.deepcopy(q), copy.deepcopy(q)
    s1 = reconstruct(None, q_brecq, partition_units(q_brecq), data, fast_cfg(mode='brecq'))
    s2 = reconstruct(None, q_qdrop, partition_units(q_qdrop), data,
                     fast_cfg(mode='qdrop', drop_prob=1.0))
    assert states_equal(q_brecq, q_qdrop)
    assert [s['loss_after'] for s in s1] == [s['loss_after'] for s in s2]


def test_qdrop_forward_mixes_quantized_and_fp_activations():
    q, data = make_quantized()
    fp = block_reconstruction.float_reference(q)
    name, unit = partition_units(q)[1]  # the residual block: two act quantizers
    with UnitDataCache() as cache:
        fill_unit_cache(cache, q, fp, name, unit, data, lambda m, b: m(b), 1, with_fp_input=True)
        batch = cache.sample(4, torch.Generator().manual_seed(0))
    assert not torch.equal(batch['q_in'][0], batch['fp_in'][0])
    setup = setup_unit(unit, ReconConfig(mode='qdrop'))
    try:
        with torch.no_grad():
            outs = {p: unit_forward(unit, setup, batch, p, torch.Generator().manual_seed(1))
                    for p in (1.0, 0.5)}
    finally:
        finish_unit(setup)
    assert not torch.equal(outs[1.0], outs[0.5])
    # drop_prob=1 is exactly the plain quantized forward on the quantized input
    setup = setup_unit(unit, ReconConfig(mode='brecq'))
    try:
        with torch.no_grad():
            plain = unit(*batch['q_in'])
            again = unit_forward(unit, setup, batch, 1.0, torch.Generator())
    finally:
        finish_unit(setup)
    assert torch.equal(plain, again)


def test_resume_equals_uninterrupted_run(tmp_path, monkeypatch):
    q, data = make_quantized()
    q_a, q_b = copy.deepcopy(q), copy.deepcopy(q)
    reconstruct(None, q_a, partition_units(q_a), data, fast_cfg(), work_dir=str(tmp_path / 'a'))

    real = block_reconstruction.reconstruct_unit
    done = []

    def crash_at_third(*args, **kwargs):
        position = args[4]
        if position == 2 and not done.count('crashed'):
            done.append('crashed')
            raise KeyboardInterrupt('simulated interruption')
        done.append(position)
        return real(*args, **kwargs)

    monkeypatch.setattr(block_reconstruction, 'reconstruct_unit', crash_at_third)
    work_b = str(tmp_path / 'b')
    with pytest.raises(KeyboardInterrupt):
        reconstruct(None, q_b, partition_units(q_b), data, fast_cfg(), work_dir=work_b)
    assert sorted(os.listdir(os.path.join(work_b, 'recon_state'))) == ['unit_000.pth',
                                                                       'unit_001.pth']
    # a fresh process would rebuild the calibrated model: start again from q
    q_b = copy.deepcopy(q)
    stats = reconstruct(None, q_b, partition_units(q_b), data, fast_cfg(), work_dir=work_b)
    assert done == [0, 1, 'crashed', 2, 3]  # units 0 and 1 were loaded, not recomputed
    assert len(stats) == 4
    assert states_equal(q_a, q_b)
    # other settings: the saved units are not reused
    q_c = copy.deepcopy(q)
    reconstruct(None, q_c, partition_units(q_c), data, fast_cfg(iters=31), work_dir=work_b)
    assert done[-4:] == [0, 1, 2, 3]


def test_stale_or_corrupt_unit_states_are_recomputed_with_a_reason(tmp_path, monkeypatch):
    from detptq.utils.fingerprint import Fingerprint
    q, data = make_quantized()
    run = Fingerprint().with_parts(quant_cfg=dict(w_bits=3), checkpoint='a' * 64)
    q_a = copy.deepcopy(q)
    work = str(tmp_path)
    reconstruct(None, q_a, partition_units(q_a), data, fast_cfg(), work_dir=work, fingerprint=run)
    real = block_reconstruction.reconstruct_unit
    done = []
    monkeypatch.setattr(block_reconstruction, 'reconstruct_unit',
                        lambda *a, **k: done.append(a[4]) or real(*a, **k))
    logged = []
    monkeypatch.setattr(block_reconstruction, 'print_log',
                        lambda msg, **k: logged.append(msg))
    # a truncated state file: only that unit is recomputed (the units after it still fit,
    # since its recomputed state is the same), and the result is unchanged
    path = block_reconstruction.state_path(work, 1)
    with open(path, 'rb') as f:
        content = f.read()
    with open(path, 'wb') as f:
        f.write(content[:len(content) // 3])
    q_b = copy.deepcopy(q)
    reconstruct(None, q_b, partition_units(q_b), data, fast_cfg(), work_dir=work, fingerprint=run)
    assert done == [1]
    assert any('unit_001.pth is unreadable' in m for m in logged)
    assert states_equal(q_a, q_b)
    # another run input (here the quant config): every unit is recomputed and the log says why
    done.clear()
    logged.clear()
    q_c = copy.deepcopy(q)
    reconstruct(None, q_c, partition_units(q_c), data, fast_cfg(), work_dir=work,
                fingerprint=run.with_parts(quant_cfg=dict(w_bits=4)))
    assert done == [0, 1, 2, 3]
    assert any('unit_000.pth is stale (quant_cfg changed)' in m for m in logged)


def test_layer_wise_adaround_through_the_registry():
    q, data = make_quantized()
    recon = RECONSTRUCTORS.build(dict(type='AdaRoundReconstructor', iters=20, batch_size=4,
                                      progress=False))
    stats = recon(q, data)
    assert [s['unit'] for s in stats] == ['stem.0', 'res.conv1', 'res.conv2', 'down', 'head']
    assert all(s['rounders'] == 1 for s in stats)
    built = RECONSTRUCTORS.build(dict(type='BlockReconstructor', mode='qdrop', iters=5))
    assert built.cfg.mode == 'qdrop' and built.cfg.effective_drop_prob == 0.5
    with pytest.raises(ValueError):
        ReconConfig(mode='nope')


def test_data_cache_spills_to_disk_and_keeps_rows_paired(tmp_path):
    cache = UnitDataCache(max_bytes=600, spill_dir=str(tmp_path))
    for i in range(6):
        rows = torch.arange(4, dtype=torch.float32) + 4 * i
        cache.add(q_in=(rows[:, None, None].expand(4, 3, 5).clone(),), fp_out=rows * 10)
    cache.add(q_in=(torch.zeros(2, 3, 7),), fp_out=torch.zeros(2))  # another shape: own group
    assert cache.spilled and cache.bytes_in_memory <= 600 and len(cache) == 26
    spill_files = [f for d in os.listdir(tmp_path) for f in os.listdir(tmp_path / d)]
    assert spill_files
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        batch = cache.sample(5, gen)
        assert torch.equal(batch['q_in'][0][:, 0, 0] * 10, batch['fp_out'])
    seen = torch.cat([b['fp_out'] for b in cache.iter_batches(7)])
    assert sorted(seen.tolist()) == sorted([10.0 * i for i in range(24)] + [0.0, 0.0])
    cache.close()
    assert not os.listdir(tmp_path)


def test_consolidated_cache_samples_the_same_rows():
    def filled():
        cache = UnitDataCache()
        for i in range(5):
            rows = torch.arange(3, dtype=torch.float32) + 3 * i
            cache.add(q_in=(rows[:, None].expand(3, 4).clone(),), fp_out=rows * 10)
        return cache
    plain, merged = filled(), filled()
    merged.consolidate()
    assert len(next(iter(merged._groups.values())).chunks) == 1
    for seed in range(5):
        a = plain.sample(4, torch.Generator().manual_seed(seed))
        b = merged.sample(4, torch.Generator().manual_seed(seed))
        assert torch.equal(a['q_in'][0], b['q_in'][0]) and torch.equal(a['fp_out'], b['fp_out'])
