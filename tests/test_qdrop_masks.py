"""QDrop's reference semantics, measured: what the layers of a unit actually see.

The unit input must be Q(q_in) or fp_in (half each at drop_prob 0.5), never
the unquantized q_in or Q(fp_in); every consumer of one tensor must see the
same mask.
"""
import pytest
import torch
from torch import nn

from detptq.quantization import UniformQuantizer
from detptq.quantization.quant_modules import QuantConv2d
from detptq.reconstruction import ReconConfig
from detptq.reconstruction.drop_masks import bernoulli_mask
from detptq.reconstruction.unit_training import finish_unit, setup_unit, unit_forward

pytestmark = pytest.mark.usefixtures('single_thread')

Q_IN, FP_IN = 1.3, 2.6
SHAPE = (2, 1, 100, 100)  # 20,000 elements: a fraction within +-0.02 of 0.5 is ~5.7 sigma


def identity_layer(act_scale: float) -> QuantConv2d:
    """A 1x1 conv with weight 1 (output = what it sees after its input quantizer)."""
    conv = nn.Conv2d(1, 1, 1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    weight_q = UniformQuantizer(bits=8)
    weight_q.enabled = False  # keep the weight exactly 1
    act_q = UniformQuantizer(bits=8, symmetric=False)
    act_q.set_params(torch.tensor(act_scale), torch.tensor(0.0))
    return QuantConv2d(conv, weight_q, act_q)


class TwoConsumers(nn.Module):
    """The unit input feeds two quantized layers with different scales."""

    def __init__(self):
        super().__init__()
        self.a, self.b = identity_layer(1.0), identity_layer(0.5)

    def forward(self, x):
        return self.a(x), self.b(x)


class InnerFanOut(nn.Module):
    """first(x) feeds two quantized layers: an activation produced inside the unit."""

    def __init__(self):
        super().__init__()
        self.first, self.a, self.b = identity_layer(1.0), identity_layer(0.3), identity_layer(0.7)

    def forward(self, x):
        t = self.first(x)
        return self.a(t), self.b(t)


def run(unit: nn.Module, prob: float = 0.5, seed: int = 0):
    batch = {'q_in': (torch.full(SHAPE, Q_IN),), 'fp_in': (torch.full(SHAPE, FP_IN),)}
    setup = setup_unit(unit, ReconConfig(mode='qdrop', drop_prob=prob))
    try:
        with torch.no_grad():
            return unit_forward(unit, setup, batch, prob, torch.Generator().manual_seed(seed))
    finally:
        finish_unit(setup)


def fraction(mask: torch.Tensor) -> float:
    return mask.float().mean().item()


def test_unit_input_is_quantized_q_in_or_fp_in_half_each():
    seen_a, seen_b = run(TwoConsumers())
    # layer a (scale 1): Q(q_in) = 1.0, Q(fp_in) = 3.0
    counts = {v: fraction(seen_a == v) for v in (1.0, Q_IN, 3.0, FP_IN)}
    assert abs(counts[1.0] - 0.5) < 0.02 and abs(counts[FP_IN] - 0.5) < 0.02
    assert counts[Q_IN] == 0.0 and counts[3.0] == 0.0  # no second, independent drop
    assert ((seen_a == 1.0) | (seen_a == FP_IN)).all()


def test_consumers_of_one_tensor_share_its_mask():
    seen_a, seen_b = run(TwoConsumers())
    # layer b (scale 0.5): Q(q_in) = 1.5; it must keep exactly where a keeps
    assert torch.equal(seen_a == 1.0, seen_b == 1.5)
    assert torch.equal(seen_a == FP_IN, seen_b == FP_IN)


def test_activation_inside_the_unit_has_one_mask_for_all_consumers():
    seen_a, seen_b = run(InnerFanOut())
    # first sees Q(q_in) = 1.0 or fp_in = 2.6; then t is dropped once for both a and b:
    # a (scale 0.3): Q(1.0) = 0.9, Q(2.6) = 2.7;  b (scale 0.7): Q(1.0) = 0.7, Q(2.6) = 2.8
    quant_a = (seen_a - 0.9).abs().lt(1e-5) | (seen_a - 2.7).abs().lt(1e-5)
    quant_b = (seen_b - 0.7).abs().lt(1e-5) | (seen_b - 2.8).abs().lt(1e-5)
    assert torch.equal(quant_a, quant_b)
    assert abs(fraction(quant_a) - 0.5) < 0.02
    # the inner mask is independent of the input mask: Q(Q(q_in)) about a quarter
    assert abs(fraction((seen_a - 0.9).abs().lt(1e-5)) - 0.25) < 0.02


def test_drop_prob_one_draws_nothing_and_quantizes_everything():
    seen_a, seen_b = run(TwoConsumers(), prob=1.0)
    assert torch.equal(seen_a, torch.full(SHAPE, 1.0))
    assert torch.equal(seen_b, torch.full(SHAPE, 1.5))


@pytest.mark.parametrize('prob', [0.5, 0.3, 0.9])
def test_bernoulli_mask_rate_and_determinism(prob):
    shape = (4, 3, 50, 50)
    keep = bernoulli_mask(shape, prob, torch.Generator().manual_seed(1))
    again = bernoulli_mask(shape, prob, torch.Generator().manual_seed(1))
    assert keep.dtype == torch.bool and keep.shape == shape and torch.equal(keep, again)
    assert abs(fraction(keep) - prob) < 0.01
    flat = keep.flatten().float()
    # neighbouring elements (the 64 bits of one random word) are uncorrelated
    joint = (flat[:-1] * flat[1:]).mean().item()
    assert abs(joint - prob * prob) < 0.01
