"""ODOL (KL on Bernoulli class probabilities + L1 on ltrb) and the Lp loss."""
import math

import pytest
import torch

from detptq.reconstruction import ODOL, LpLoss
from detptq.reconstruction.odol import bernoulli_kl


def dense(seed: int = 0, b: int = 2, n: int = 50, c: int = 5):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(b, n, c, generator=gen), torch.rand(b, n, 4, generator=gen) * 8)


def test_zero_for_identical_outputs():
    cls, box = dense()
    assert ODOL()((cls, box), (cls.clone(), box.clone())).item() == 0.0


def test_grows_with_perturbation():
    cls, box = dense()
    gen = torch.Generator().manual_seed(1)
    noise_c, noise_b = torch.randn(cls.shape, generator=gen), torch.randn(box.shape, generator=gen)
    logits = torch.logit(cls)
    values = [ODOL()((cls, box), (torch.sigmoid(logits + a * noise_c), box + a * noise_b)).item()
              for a in (0.01, 0.1, 0.5, 1.0)]
    assert all(0 < x < y for x, y in zip(values, values[1:]))


def test_components_match_hand_computation():
    p, q = torch.tensor(0.3), torch.tensor(0.6)
    expected = 0.3 * math.log(0.3 / 0.6) + 0.7 * math.log(0.7 / 0.4)
    assert bernoulli_kl(p, q).item() == pytest.approx(expected, rel=1e-5)
    cls, box = dense()
    cls_q, box_q = dense(seed=3)
    kl, l1 = ODOL().components((cls, box), (cls_q, box_q))
    assert kl.shape == l1.shape == (2,)
    assert torch.allclose(l1, (box - box_q).abs().sum(-1).mean(-1).double())
    per_image = ODOL(cls_weight=0.0, box_weight=2.0)((cls, box), (cls_q, box_q), reduction='none')
    assert torch.allclose(per_image, 2 * l1)
    with pytest.raises(ValueError):
        ODOL()((cls, box), (cls_q[:, :10], box_q))


def test_lp_loss_channel_sum_batch_mean():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 4, 5, 5, generator=gen), torch.randn(3, 4, 5, 5, generator=gen)
    assert LpLoss(2.0)(a, b).item() == pytest.approx(((a - b) ** 2).sum(1).mean().item(), rel=1e-6)
    assert LpLoss(3.5)(a, b).item() == pytest.approx(
        (a - b).abs().pow(3.5).sum(1).mean().item(), rel=1e-6)
    # several outputs add up
    assert LpLoss(2.0)((a, a), (b, b)).item() == pytest.approx(2 * LpLoss(2.0)(a, b).item())
    assert LpLoss(1.0)(a, a).item() == 0.0
    with pytest.raises(ValueError):
        LpLoss(0)


def test_lp_loss_l2_units_keeps_the_minimiser_and_p2_size():
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 3, 4, 4, generator=gen), torch.randn(2, 3, 4, 4, generator=gen)
    plain = LpLoss(4.5)(a, b)
    assert LpLoss(4.5, l2_units=True)(a, b).item() == pytest.approx(
        plain.pow(2 / 4.5).item(), rel=1e-6)
    # p = 2 is untouched, so BRECQ/QDrop are unchanged by the option
    assert LpLoss(2.0, l2_units=True)(a, b).item() == LpLoss(2.0)(a, b).item()
    # same gradient direction as the plain Lp loss (a positive multiple)
    x1 = a.clone().requires_grad_(True)
    LpLoss(3.0)(x1, b).backward()
    x2 = a.clone().requires_grad_(True)
    LpLoss(3.0, l2_units=True)(x2, b).backward()
    cos = torch.nn.functional.cosine_similarity(x1.grad.flatten(), x2.grad.flatten(), dim=0)
    assert cos.item() == pytest.approx(1.0, abs=1e-5)
    # a zero loss has a finite gradient
    x3 = b.clone().requires_grad_(True)
    LpLoss(3.0, l2_units=True)(x3, b).backward()
    assert torch.isfinite(x3.grad).all()
