"""The cache fill's prefix replay (reconstruction.prefix_cache) changes speed, never a value."""
import copy

import pytest
import torch
from torch.utils import _pytree as pytree

from detptq.quantization.bops import default_forward
from detptq.reconstruction import (ReconConfig, UnitDataCache, float_reference, partition_units,
                                   reconstruct)
from detptq.reconstruction.prefix_cache import UnitPrefixReplay
from detptq.reconstruction.unit_io import fill_unit_cache, trace_execution
from helpers import build_model, quantize_and_calibrate, randomise_bn

pytestmark = pytest.mark.usefixtures('single_thread')


def _yolov6n_quantized():
    torch.manual_seed(0)
    model = build_model('yolov6_n').eval()
    randomise_bn(model)
    data = [torch.randn(2, 3, 64, 64) for _ in range(2)]
    return quantize_and_calibrate(model, data, 4, 8), data


def _rows(cache):
    return pytree.tree_leaves(next(cache.iter_batches(10 ** 9)))


def test_replayed_fill_equals_full_forward_while_units_change():
    """Every unit's cached (q_in, fp_out, fp_in) is bit-identical with and without replay,
    with each unit's weights changed after its fill as reconstruction does."""
    q, data = _yolov6n_quantized()
    fp = float_reference(q)
    units = partition_units(q, 'block')
    order, calls, _ = trace_execution(q, units, data[0], default_forward)
    prefix = UnitPrefixReplay(fp, q, units, [i for i in order if calls[i] > 0],
                              lambda: default_forward(fp, data[0]),
                              lambda: default_forward(q, data[0]))
    gen = torch.Generator().manual_seed(1)
    replayed_units = 0
    for idx in order:
        name, unit = units[idx]
        if calls[idx] == 0:
            continue
        with UnitDataCache() as full, UnitDataCache() as fast:
            fill_unit_cache(full, q, fp, name, unit, data, default_forward, calls[idx],
                            with_fp_input=True)
            fill_unit_cache(fast, q, fp, name, unit, data, default_forward, calls[idx],
                            with_fp_input=True, prefix=prefix, unit_index=idx)
            a, b = _rows(full), _rows(fast)
            assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b)), name
        replayed_units += bool(prefix.q.store.get(0))
        with torch.no_grad():  # as reconstruction does: this unit changes after its fill
            for p in unit.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
    assert replayed_units > len(order) // 2  # the replay is actually used


def test_reconstruction_is_identical_with_and_without_prefix_replay():
    q, data = _yolov6n_quantized()
    q2 = copy.deepcopy(q)
    cfg = dict(mode='qdrop', iters=3, batch_size=2, progress=False)
    reconstruct(None, q, partition_units(q, 'block'), data, ReconConfig(**cfg))
    reconstruct(None, q2, partition_units(q2, 'block'), data,
                ReconConfig(prefix_replay=False, **cfg))
    sa, sb = q.state_dict(), q2.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
