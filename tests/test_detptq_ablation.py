"""DetPTQ ablation switches (docs/detptq_study.md): fixed p, cumulative p search, p_use,
CFWS-aware p search and AdaRound, the loss-curve recorder and the calibration-subset seed."""
import copy
import json
import os

import pytest
import torch

from detptq.quantization import CFWSWeightQuantizer, iter_quantizers
from detptq.quantization.calibrators.lp_search import LpSearchCalibrator
from detptq.reconstruction import ODOL, PSearchConfig, search_p, unit_p_map
from detptq.reconstruction.p_search import loss_p_keys
from detptq.reconstruction.adaround import AdaRoundQuantizer
from detptq.reconstruction.recon_config import ReconConfig
from detptq.registry import RECONSTRUCTORS
from helpers import quantize_and_calibrate
from test_p_search import FakeDetector, dense_fn, setup  # noqa: F401 (setup: fixture)

pytestmark = pytest.mark.usefixtures('single_thread')


def lp_scale(quantizer, values, p):
    cal = LpSearchCalibrator(p=p, max_samples=200_000)
    cal.configure(quantizer.per_channel, quantizer.ch_axis)
    cal.observe(values)
    return cal.compute(quantizer)[0]


def test_fixed_p_uses_the_lp_scale_at_that_p_and_runs_no_odol(setup):
    q, data = setup
    report = {}
    results = search_p(q, data, dense_fn, PSearchConfig(progress=False, fixed_p=2.4),
                       report=report)
    entries = [e for kinds in results.values() for e in kinds.values()]
    assert len(entries) == 10 and {e['p'] for e in entries} == {2.4}
    assert all(e['odol'] == {} for e in entries) and report['evaluated_candidates'] == 0
    expected = lp_scale(q.neck.weight_quantizer, q.neck.weight, 2.4)
    assert torch.allclose(torch.tensor(results['neck']['weight']['scale']), expected)
    assert not torch.allclose(expected, lp_scale(q.neck.weight_quantizer, q.neck.weight, 1.0))


def test_cumulative_search_scores_with_the_earlier_quantizers_on(setup):
    q, data = setup
    before = [(qq.enabled, qq.scale.clone()) for _, qq in iter_quantizers(q)]
    alone = search_p(q, data, dense_fn, PSearchConfig(progress=False))
    cum = search_p(q, data, dense_fn, PSearchConfig(progress=False, context='cumulative'))
    assert all(a[0] == qq.enabled and torch.equal(a[1], qq.scale)
               for a, (_, qq) in zip(before, iter_quantizers(q)))  # model left unchanged
    # nothing runs before the first conv's weight: both contexts see the same net
    assert cum['backbone.0']['weight']['odol'] == pytest.approx(
        alone['backbone.0']['weight']['odol'], rel=1e-6)
    # the last quantizer (reg_pred input) is scored with every other quantizer on at its p*
    saved = [(qq, qq.enabled, qq.scale.clone(), qq.zero_point.clone())
             for _, qq in iter_quantizers(q)]
    modules = dict(q.named_modules())
    try:
        with torch.no_grad():
            for _, qq in iter_quantizers(q):
                qq.enabled = False
            fp = [dense_fn(q, x) for x in data]
            for name, kinds in cum.items():
                for kind, entry in kinds.items():
                    qq = (modules[name].weight_quantizer if kind == 'weight'
                          else modules[name].input_quantizer)
                    qq.set_params(torch.tensor(entry['scale']), torch.tensor(entry['zero_point']))
                    qq.enabled = True
            value = sum(ODOL()(f, dense_fn(q, x), reduction='none').sum()
                        for f, x in zip(fp, data)) / 6
    finally:
        for qq, flag, scale, zp in saved:
            qq.set_params(scale, zp)
            qq.enabled = flag
    entry = cum['reg_pred']['act']
    assert entry['odol'][str(entry['p'])] == pytest.approx(value.item(), rel=2e-3)
    # and that differs from the one-quantizer-on score
    assert entry['odol'][str(entry['p'])] > alone['reg_pred']['act']['odol'][str(entry['p'])]


def test_ablation_options_reject_bad_values():
    with pytest.raises(ValueError, match='context'):
        PSearchConfig(context='all_at_once')
    with pytest.raises(ValueError, match='fixed_p'):
        PSearchConfig(fixed_p=0)
    with pytest.raises(ValueError, match='box_weight'):
        PSearchConfig(cls_weight=0, box_weight=0)
    with pytest.raises(ValueError, match='p_use'):
        RECONSTRUCTORS.build(dict(type='DetPTQReconstructor', p_use='everything'))
    with pytest.raises(ValueError, match='p_rule'):
        RECONSTRUCTORS.build(dict(type='DetPTQReconstructor', p_rule='first'))


@pytest.mark.parametrize('p_use', ['scale', 'loss'])
def test_p_use_scale_only_or_loss_only(setup, tmp_path, p_use):
    q, data = setup
    q = copy.deepcopy(q)
    calibrated = q.neck.weight_quantizer.scale.clone()
    recon = RECONSTRUCTORS.build(dict(
        type='DetPTQReconstructor', mode='brecq', iters=4, batch_size=3, progress=False,
        p_use=p_use, p=2.0, p_search=dict(progress=False, kinds=('weight',))))
    stats = recon(q, data, work_dir=str(tmp_path), dense_fn=dense_fn)
    with open(tmp_path / 'p_search.json') as f:
        layers = json.load(f)['layers']
    searched = torch.tensor(layers['neck']['weight']['scale'])
    if p_use == 'scale':
        assert {s['p'] for s in stats} == {2.0}
        assert torch.equal(q.neck.weight_quantizer.scale, searched)
    else:
        assert {s['unit']: s['p'] for s in stats} == {n: layers[n]['weight']['p'] for n in layers}
        assert torch.equal(q.neck.weight_quantizer.scale, calibrated)
    assert not torch.equal(searched, calibrated)


def test_loss_only_searches_just_the_p_the_units_read_with_the_same_result(setup, tmp_path):
    q, data = setup
    units = [('backbone', q.backbone), ('neck', q.neck), ('cls_pred', q.cls_pred),
             ('reg_pred', q.reg_pred)]
    order = ['backbone.0', 'backbone.2', 'neck', 'cls_pred', 'reg_pred']
    keys = loss_p_keys(q, units, order)
    assert keys == [('backbone.2', 'weight'), ('neck', 'weight'), ('cls_pred', 'weight'),
                    ('reg_pred', 'weight')]
    cfg = PSearchConfig(progress=False)
    full_report, part_report = {}, {}
    full = search_p(q, data, dense_fn, cfg, report=full_report)
    part = search_p(q, data, dense_fn, cfg, report=part_report, only=keys)
    assert sorted((n, k) for n, kinds in part.items() for k in kinds) == sorted(keys)
    for name, kind in keys:
        assert part[name][kind] == full[name][kind]  # p, scale and every ODOL value, exactly
    assert unit_p_map(units, part, order) == unit_p_map(units, full, order)
    assert part_report['evaluated_candidates'] < full_report['evaluated_candidates'] / 2
    # the other uses of p* need every quantizer: p_use='scale+loss' searches all of them
    for p_use, searched in (('loss', 5), ('scale+loss', 10)):  # 5 one-layer units
        recon = RECONSTRUCTORS.build(dict(
            type='DetPTQReconstructor', mode='brecq', iters=2, batch_size=3, progress=False,
            p_use=p_use, p_search=dict(progress=False)))
        recon(copy.deepcopy(q), data, work_dir=str(tmp_path / p_use), dense_fn=dense_fn)
        with open(tmp_path / p_use / 'p_search.json') as f:
            layers = json.load(f)['layers']
        assert sum(len(kinds) for kinds in layers.values()) == searched, p_use


def reparam_like_kernel() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(8, 4, 3, 3, generator=gen) * 0.02
    w[:, :, 1, 1] += torch.randn(8, 4, generator=gen) * 0.5
    return w


def test_adaround_on_a_cfws_kernel_writes_back_a_self_reproducing_weight():
    w = reparam_like_kernel()
    base = CFWSWeightQuantizer(bits=4)
    base.observe(w)
    base.compute_params()
    assert base.split
    rounder = AdaRoundQuantizer(base, w)
    centre = torch.zeros(3, 3, dtype=torch.bool)
    centre[1, 1] = True
    with torch.no_grad():
        # soft at init: surrounding taps unchanged, centre = CFWS's coarse + nearest fine
        soft = rounder(w)
        inside = (w[..., ~centre] / base.scale.view(-1, 1, 1)).abs() < 7
        assert torch.allclose(soft[..., ~centre][inside], w[..., ~centre][inside], atol=1e-6)
        assert torch.allclose(soft[..., centre], base(w)[..., centre])
        # the centre's V is not learnt: the regulariser ignores it
        loss = rounder.rounding_loss(4.0)
        rounder.v[..., 1, 1] += 3.0
        assert rounder.rounding_loss(4.0) == loss
        rounder.v.copy_(torch.randn(rounder.v.shape, generator=torch.Generator().manual_seed(1)))
        rounder.hard()
        written = rounder(w)
        # what the layer computes after write-back equals the hardened kernel
        expected = torch.where(centre, base(w), written)
        assert torch.allclose(base(written), expected, atol=1e-6)
        # surrounding taps follow V (random here), so they differ from nearest rounding
        assert (written[..., ~centre] != base(w)[..., ~centre]).any()


def test_p_search_on_cfws_weights_searches_the_fine_residual(setup):
    q, data = setup
    torch.manual_seed(0)
    model = FakeDetector().eval()
    qc = quantize_and_calibrate(model, data, w_bits=4, a_bits=8, cfws='all')
    wq = qc.neck.weight_quantizer
    assert wq.split
    results = search_p(qc, data, dense_fn, PSearchConfig(progress=False, fixed_p=2.0,
                                                          kinds=('weight',)))
    residual = qc.neck.weight - wq.coarse_part(qc.neck.weight, wq.coarse_scale)
    assert torch.allclose(torch.tensor(results['neck']['weight']['scale']),
                          lp_scale(wq, residual, 2.0))


def test_loss_curve_is_recorded_and_not_part_of_the_fingerprint(setup, tmp_path):
    q, data = setup
    q = copy.deepcopy(q)
    recon = RECONSTRUCTORS.build(dict(type='BRECQReconstructor', iters=5, batch_size=3,
                                      progress=False, loss_curve_every=2))
    stats = recon(q, data, work_dir=str(tmp_path))
    assert all([t for t, _ in s['loss_curve']] == [0, 2, 4] for s in stats)
    assert all(v > 0 for s in stats for _, v in s['loss_curve'])
    with open(tmp_path / 'loss_curves.json') as f:
        saved = json.load(f)['units']
    assert [u['unit'] for u in saved] == [s['unit'] for s in stats]
    assert ReconConfig(loss_curve_every=2).fingerprint('u', 0, 2.0) == \
        ReconConfig().fingerprint('u', 0, 2.0)
    assert os.path.isdir(tmp_path / 'recon_state')
