"""quantization.state (disabled / observing / saved_qparams / is_active) and quantization.functional."""
import pytest
import torch
from torch import nn

from detptq.export.export_modules import bake_weight
from detptq.quantization import (QuantConv2d, UniformQuantizer, calibrate_weights, disabled,
                                 is_active, iter_quantizers, layers_switched, observing, only,
                                 saved_qparams)
from detptq.quantization.functional import QuantGrid, code_range, range_to_qparams


def two_layers() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(QuantConv2d(nn.Conv2d(3, 4, 3, padding=1)),
                          QuantConv2d(nn.Conv2d(4, 2, 1)))
    model[1].input_quantizer = UniformQuantizer(bits=16)  # a pass-through
    model[1].weight_quantizer.enabled = False  # switched off by the user: must stay off
    return model


def flags(model: nn.Module):
    return [q.enabled for _, q in iter_quantizers(model)]


def test_disabled_switches_everything_off_and_restores_on_error():
    model = two_layers()
    before = flags(model)
    with pytest.raises(RuntimeError):
        with disabled(model) as saved:
            assert flags(model) == [False] * 4
            assert list(saved.values()) == before
            raise RuntimeError('a forward failed')
    assert flags(model) == before == [True, True, False, True]


def test_only_quantizes_the_given_layers_at_their_saved_flags():
    model = two_layers()
    before = flags(model)
    with only(model, [model[1]]):
        # layer 0 off; layer 1 keeps its own flags (weight switched off by the user stays off)
        assert flags(model) == [False, False, False, True]
    assert flags(model) == before
    with disabled(model) as saved:
        with layers_switched([model[0]], on=True, flags=saved):
            assert flags(model) == [True, True, False, False]
        assert flags(model) == [False] * 4
        with pytest.raises(RuntimeError):
            with layers_switched([model[1]], on=True):  # no flags: both on
                assert flags(model) == [False, False, True, True]
                raise RuntimeError('a forward failed')
        assert flags(model) == [False] * 4
    assert flags(model) == before


def test_observing_feeds_non_pass_through_input_quantizers_only():
    model = two_layers()
    with observing(model) as observed:
        assert [n for n, _ in observed] == ['0', '1']
        assert flags(model) == [False] * 4
        assert model[0].input_quantizer.observing and not model[1].input_quantizer.observing
        model(torch.randn(1, 3, 5, 5))
    assert model[0].input_quantizer.calibrator.has_data
    assert not model[0].input_quantizer.observing and not model[1].input_quantizer.observing
    assert flags(model) == [True, True, False, True]
    with observing(model):  # a fresh observation forgets the previous statistics
        assert not model[0].input_quantizer.calibrator.has_data


def test_saved_qparams_puts_scales_back():
    model = two_layers()
    calibrate_weights(model)  # per-channel scales get their (C,) shape here
    q = model[0].weight_quantizer
    q.set_params(torch.full((4, ), 0.5))
    with saved_qparams(model):
        q.set_params(torch.full((4, ), 2.0), torch.ones(4))
    assert torch.equal(q.scale, torch.full((4, ), 0.5)) and torch.equal(q.zero_point, torch.zeros(4))


class BareQuantizer(nn.Module):
    """A quantizer module with an ``enabled`` flag and nothing else (no is_pass_through, no qmin)."""

    def __init__(self):
        super().__init__()
        self.enabled = True

    def forward(self, x):
        return torch.round(x * 4) / 4 if self.enabled else x


def test_is_active_counts_an_enabled_quantizer_without_pass_through_flag():
    assert is_active(UniformQuantizer(bits=4))
    assert not is_active(UniformQuantizer(bits=16))
    off = UniformQuantizer(bits=4)
    off.enabled = False
    assert not is_active(off)
    # export's former copy defaulted is_pass_through to True here, so this quantizer
    # counted as float and export silently wrote the float weight without Q/DQ
    assert is_active(BareQuantizer())


def test_export_refuses_an_active_quantizer_it_cannot_express():
    layer = QuantConv2d(nn.Conv2d(2, 2, 1), weight_quantizer=BareQuantizer())
    with pytest.raises(TypeError, match='cannot export weight quantizer BareQuantizer'):
        bake_weight(layer)
    layer.weight_quantizer.enabled = False
    weight, qdq, _ = bake_weight(layer)
    assert qdq is None and torch.equal(weight, layer.weight)


@pytest.mark.parametrize('kwargs', [dict(bits=4), dict(bits=8, narrow_range=True),
                                    dict(bits=4, unsigned=True), dict(bits=3, symmetric=False)])
def test_plain_grid_gives_the_quantizer_qparams(kwargs):
    quantizer, grid = UniformQuantizer(**kwargs), QuantGrid(**kwargs)
    assert (grid.qmin, grid.qmax) == (quantizer.qmin, quantizer.qmax)
    lo, hi = torch.tensor([-1.3, -0.2]), torch.tensor([0.7, 2.1])
    for a, b in zip(range_to_qparams(grid, lo, hi), range_to_qparams(quantizer, lo, hi)):
        assert torch.equal(a, b)


def test_code_range():
    assert code_range(4, signed=True) == (-8, 7)
    assert code_range(8, signed=True, narrow_range=True) == (-127, 127)
    assert code_range(4, signed=False) == (0, 15)
