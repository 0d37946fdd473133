"""Calibrators on known data: exact MinMax/EMA, percentile vs numpy, Lp brute force, KL variants."""
import math

import numpy as np
import pytest
import torch

from detptq.quantization import UniformQuantizer
from detptq.quantization.calibrators import kl, lp_search, percentile
from detptq.quantization.calibrators.histogram import AbsHistogram
from detptq.registry import CALIBRATORS


def quantizer_with(calibrator: dict, **kwargs) -> UniformQuantizer:
    return UniformQuantizer(calibrator=calibrator, **kwargs)


def test_minmax_exact_over_batches_per_tensor_and_channel():
    q = quantizer_with(dict(type='MinMaxCalibrator'), bits=8, symmetric=False)
    q.observe(torch.tensor([-1.0, 2.0]))
    q.observe(torch.tensor([-3.0, 1.0]))
    scale, zp = q.compute_params()
    assert scale.item() == pytest.approx(5.0 / 255)
    assert zp.item() == round(3.0 / (5.0 / 255))
    qc = quantizer_with(dict(type='MinMaxCalibrator'), bits=8, per_channel=True, ch_axis=1)
    qc.observe(torch.tensor([[1.0, -4.0], [2.0, 0.5]]))
    qc.observe(torch.tensor([[-3.0, 1.0], [0.0, 0.0]]))
    assert torch.allclose(qc.compute_params()[0], torch.tensor([3.0, 4.0]) / 127)


def test_ema_minmax_after_two_batches_exact():
    q = quantizer_with(dict(type='EMAMinMaxCalibrator', momentum=0.9), bits=8, symmetric=False)
    q.observe(torch.tensor([-1.0, 2.0]))
    q.observe(torch.tensor([-3.0, 4.0]))
    lo, hi = 0.9 * -1.0 + 0.1 * -3.0, 0.9 * 2.0 + 0.1 * 4.0
    scale, zp = q.compute_params()
    assert scale.item() == pytest.approx((hi - lo) / 255)
    assert zp.item() == round(-lo / ((hi - lo) / 255))


def test_percentile_matches_numpy():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(20_000, generator=gen) * 2 + 0.5
    sym = quantizer_with(dict(type='PercentileCalibrator', percentile=99.9),
                         bits=8,
                         narrow_range=True)
    sym.observe(x)
    expected = np.percentile(np.abs(x.numpy()), 99.9)
    assert sym.compute_params()[0].item() == pytest.approx(expected / 127, rel=1e-5)
    asym = quantizer_with(dict(type='PercentileCalibrator', percentile=99.0),
                          bits=8,
                          symmetric=False)
    asym.observe(x[:10_000])
    asym.observe(x[10_000:])
    lo, hi = np.percentile(x.numpy(), 1.0), np.percentile(x.numpy(), 99.0)
    assert asym.compute_params()[0].item() == pytest.approx((hi - lo) / 255, rel=1e-5)


def test_percentile_sampling_is_bounded_and_close():
    gen = torch.Generator().manual_seed(1)
    q = quantizer_with(dict(type='PercentileCalibrator', percentile=99.0, max_samples=5_000),
                       bits=8,
                       narrow_range=True)
    batches = [torch.randn(20_000, generator=gen) for _ in range(3)]
    for b in batches:
        q.observe(b)
    assert q.calibrator.samples.values().numel() <= 5_000
    expected = np.percentile(np.abs(torch.cat(batches).numpy()), 99.0)
    assert q.compute_params()[0].item() * 127 == pytest.approx(expected, rel=0.05)


def test_percentile_per_channel_in_row_chunks_matches_numpy(monkeypatch):
    monkeypatch.setattr(percentile, '_QUANTILE_MAX_ELEMENTS', 1000)  # one 800-value row per chunk
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(2, 5, 20, 20, generator=gen) * torch.arange(1.0, 6.0).view(1, 5, 1, 1)
    q = quantizer_with(dict(type='PercentileCalibrator', percentile=99.0), bits=8,
                       per_channel=True, ch_axis=1)
    q.observe(x)
    per_channel = np.abs(x.numpy()).transpose(1, 0, 2, 3).reshape(5, -1)
    expected = np.percentile(per_channel, 99.0, axis=1) / 127
    assert np.allclose(q.compute_params()[0].numpy(), expected, rtol=1e-5)


def brute_force_mse_scale(x: torch.Tensor, bits: int, ratios: torch.Tensor) -> float:
    """Loop over clip ratios with a real quantizer; return the MSE-optimal scale."""
    amax = x.abs().max()
    best, best_err = None, float('inf')
    for r in ratios.tolist():
        q = UniformQuantizer(bits=bits)
        q.set_params(amax * r / q.qmax)
        err = float(((q(x) - x)**2).mean())
        if err < best_err:
            best, best_err = q.scale.item(), err
    return best


def test_lp_p2_picks_mse_optimal_clip():
    gen = torch.Generator().manual_seed(2)
    x = torch.cat([torch.randn(4000, generator=gen), torch.tensor([9.0, -7.0])])
    q = quantizer_with(dict(type='LpSearchCalibrator', p=2.0, num_candidates=100), bits=4)
    q.observe(x)
    scale = q.compute_params()[0].item()
    expected = brute_force_mse_scale(x, 4, q.calibrator.candidate_ratios())
    assert scale == pytest.approx(expected, rel=1e-6)
    assert scale < 9.0 / 7 * 0.5  # outliers get clipped at 4 bit


def test_lp_per_channel_vectorised_matches_per_channel_loop(monkeypatch):
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(5, 4, 3, 3, generator=gen) * torch.tensor([0.1, 1.0, 3.0, 0.5, 2.0]).view(
        5, 1, 1, 1)
    w[2, 0, 1, 1] = 20.0
    # A tiny chunk size forces the candidate loop to run in many chunks.
    monkeypatch.setattr(lp_search, '_CHUNK_ELEMENTS', 100)
    q = quantizer_with(dict(type='LpSearchCalibrator', p=2.0), bits=4, per_channel=True)
    q.observe(w)
    scales = q.compute_params()[0]
    ratios = q.calibrator.candidate_ratios()
    for c in range(5):
        assert scales[c].item() == pytest.approx(brute_force_mse_scale(w[c].flatten(), 4, ratios),
                                                 rel=1e-6)


def test_lp_larger_p_keeps_wider_range():
    gen = torch.Generator().manual_seed(4)
    x = torch.cat([torch.randn(4000, generator=gen), torch.tensor([8.0])])
    scales = []
    for p in (1.0, 2.0, 4.0):
        q = quantizer_with(dict(type='LpSearchCalibrator', p=p), bits=4)
        q.observe(x)
        scales.append(q.compute_params()[0].item())
    assert scales[0] <= scales[1] <= scales[2] and scales[0] < scales[2]


def test_histogram_extends_bins_at_the_first_batch_width():
    # TensorRT's HistogramCalibrator: the first batch fixes the bin width (max / bins);
    # a later, wider batch appends bins of that width instead of re-binning.
    hist = AbsHistogram(bins=4)
    hist.add(torch.tensor([0.5, 1.0, 2.0, 4.0]))  # width 1: bins [0,1) [1,2) [2,3) [3,4]
    assert hist.counts.tolist() == [1, 1, 1, 1] and hist.bin_width == 1.0
    hist.add(torch.tensor([0.2, -3.5, 6.5]))  # |x| up to 6.5: ceil(6.5 / 1) = 7 bins
    assert hist.num_bins == 7 and hist.bin_width == 1.0 and hist.upper == 7.0
    assert hist.counts.tolist() == [2, 1, 1, 2, 0, 0, 1]
    hist.add(torch.tensor([7.0]))  # exactly the upper edge: last bin, no growth
    assert hist.counts.tolist() == [2, 1, 1, 2, 0, 0, 2]


def test_histogram_merges_pairs_only_beyond_max_bins():
    hist = AbsHistogram(bins=4, max_bins=5)
    hist.add(torch.tensor([0.5, 1.0, 2.0, 4.0]))
    hist.add(torch.tensor([0.2, 3.5, 6.5]))  # 7 bins > 5: width 2 first, then 4 bins
    assert hist.bin_width == 2.0 and hist.upper == 8.0
    assert hist.counts.tolist() == [3, 3, 0, 1]


def test_histogram_over_batches_equals_one_histogram_of_all_data():
    gen = torch.Generator().manual_seed(5)
    a, b = torch.rand(5000, generator=gen), torch.rand(5000, generator=gen) * 3
    hist = AbsHistogram(bins=64)
    hist.add(a)
    width = hist.bin_width
    hist.add(b)
    assert hist.bin_width == width and hist.num_bins == math.ceil(b.max().item() / width)
    direct = torch.histc(torch.cat([a, b]).double(), bins=hist.num_bins, min=0, max=hist.upper)
    assert hist.counts.sum().item() == 10_000
    assert (hist.counts - direct).abs().max().item() <= 2  # only float ties at bin edges


def kl_threshold(x: torch.Tensor, bits: int = 8, **cfg) -> float:
    q = quantizer_with(dict(type='KLCalibrator', **cfg), bits=bits)
    for chunk in x.split(len(x) // 2):
        q.observe(chunk)
    return q.calibrator.threshold(q)


def gaussian_with_outliers(seed: int = 6) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.cat([torch.randn(50_000, generator=gen), torch.tensor([30.0, -25.0, 28.0])])


def test_kl_clips_outliers_of_gaussian():
    x = gaussian_with_outliers()
    t = kl_threshold(x)
    assert 2.0 < t < 30.0 * 0.5
    q = quantizer_with(dict(type='KLCalibrator'), bits=8)
    for chunk in x.split(len(x) // 2):
        q.observe(chunk)
    assert q.compute_params()[0].item() == pytest.approx(t / 127)


def dense_kl(hist: np.ndarray, i: int, levels: int, log_diff: bool) -> float:
    """Direct per-bin evaluation of the TensorRT-style KL for threshold bin ``i``."""
    p = hist[:i].astype(np.float64).copy()
    p[-1] += hist[i:].sum()
    inside = hist[:i].astype(np.float64)
    group = (np.arange(i) * levels) // i
    group_mass = np.bincount(group, weights=inside, minlength=levels)
    group_nonempty = np.bincount(group, weights=(inside > 0).astype(float), minlength=levels)
    q = np.where(inside > 0, group_mass[group] / np.maximum(group_nonempty[group], 1), 0.0)
    p, q = p / p.sum(), q / q.sum()
    mask = p > 0
    if log_diff:
        return float(np.sum(p[mask] *
                            (np.log(p[mask]) - np.log(np.maximum(q[mask], kl.LOG_FLOOR)))))
    with np.errstate(divide='ignore'):
        return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


@pytest.mark.parametrize('log_diff', [False, True])
def test_kl_cumulative_form_matches_dense_evaluation(log_diff):
    gen = np.random.default_rng(0)
    hist = np.histogram(np.abs(gen.standard_normal(3000)), bins=64, range=(0, 6))[0].astype(float)
    hist[40] = 0.0  # an empty bin inside the range
    hist[50] = 3.0  # isolated outliers
    cand, kls = kl.kl_per_threshold(torch.tensor(hist), 8, log_diff)
    dense = [dense_kl(hist, int(i), 8, log_diff) for i in cand]
    assert np.allclose(kls.numpy(), dense, rtol=1e-9, atol=1e-12)
    assert log_diff or np.isinf(dense).any()  # the ratio form does meet empty Q bins


def test_improved_kl_log_difference_differs_only_at_empty_q_bins():
    x = gaussian_with_outliers()
    cal = dict(type='KLCalibrator')
    plain = quantizer_with(cal, bits=8)
    improved = quantizer_with(dict(cal, log_diff=True), bits=8)
    for q in (plain, improved):
        q.observe(x)
    _, kl_plain = plain.calibrator.kl_per_candidate(128)
    _, kl_improved = improved.calibrator.kl_per_candidate(128)
    finite = torch.isfinite(kl_plain)
    assert (~finite).any() and torch.isfinite(kl_improved).all()
    assert torch.allclose(kl_plain[finite], kl_improved[finite], rtol=1e-9)
    t_plain, t_improved = plain.calibrator.threshold(plain), improved.calibrator.threshold(improved)
    assert t_improved < 30.0 * 0.5
    if t_improved != t_plain:  # only possible by choosing a threshold the ratio form rejects
        width = improved.calibrator.histogram.bin_width
        assert not finite[round(t_improved / width) - 128]


def test_relu_fusion_only_changes_tensors_with_negatives_that_pass_a_relu():
    gen = torch.Generator().manual_seed(7)
    pos = torch.randn(40_000, generator=gen).abs() * 0.5
    neg_tail = -torch.randn(40_000, generator=gen).abs() * 4
    mixed = torch.cat([pos, neg_tail])
    plain = kl_threshold(mixed)
    # Non-negative data: identical with or without fusion.
    assert kl_threshold(pos, relu_fusion=True, followed_by_relu=True) == kl_threshold(pos)
    # Fusion on, but the tensor does not pass a ReLU: unchanged.
    assert kl_threshold(mixed, relu_fusion=True) == plain
    # Fusion on a tensor that passes a ReLU: histogram of relu(x), much smaller threshold.
    fused = kl_threshold(mixed, relu_fusion=True, followed_by_relu=True)
    assert fused == kl_threshold(torch.relu(mixed))
    assert fused < 0.5 * plain


def test_improved_kl_registered_with_both_switches():
    cal = CALIBRATORS.build(dict(type='ImprovedKLCalibrator'))
    assert cal.log_diff and cal.relu_fusion
    assert type(CALIBRATORS.build(dict(type='EntropyCalibrator'))).__name__ == 'KLCalibrator'


def test_kl_unsigned_uses_all_levels_and_rejects_per_channel():
    q = quantizer_with(dict(type='KLCalibrator'), bits=8, unsigned=True)
    q.observe(torch.rand(1000))
    assert q.calibrator.quantized_levels(q) == 256
    with pytest.raises(ValueError, match='per-tensor'):
        quantizer_with(dict(type='KLCalibrator'), bits=8, per_channel=True)


def test_kl_below_the_level_count_by_hand():
    # hist [3, 1, 0, 2], 4 levels, thresholds from bin 2 (as TensorRT's start_bin < levels):
    # i=2: P = [3, 1+0+2] / 6, Q = [3, 1] / 4 (every bin its own group) -> 0.5 ln(4/3)
    # i=3: P = [3, 1, 0+2] / 6 meets Q = 0 in the empty bin 2 -> inf (ratio form)
    #      log form: 0.5 ln(0.5/0.75) + 1/6 ln((1/6)/0.25) + 1/3 (ln(1/3) - ln(LOG_FLOOR))
    # i=4: P = Q -> 0
    hist = torch.tensor([3.0, 1.0, 0.0, 2.0])
    cand, ratio = kl.kl_per_threshold(hist, 4, log_diff=False, start=2)
    assert cand.tolist() == [2, 3, 4]
    assert ratio[0].item() == pytest.approx(0.5 * math.log(4 / 3), rel=1e-12)
    assert math.isinf(ratio[1].item()) and ratio[2].item() == pytest.approx(0.0, abs=1e-12)
    _, logd = kl.kl_per_threshold(hist, 4, log_diff=True, start=2)
    by_hand = (0.5 * math.log(0.5 / 0.75) + math.log((1 / 6) / 0.25) / 6
               + (math.log(1 / 3) - math.log(kl.LOG_FLOOR)) / 3)
    assert logd[1].item() == pytest.approx(by_hand, rel=1e-12)


def tensorrt_entropy_threshold(hist: np.ndarray, levels: int, start: int = 128) -> int:
    """TensorRT's entropy search, bin by bin: flattened bin 0, candidates from ``start``,
    the last of equal minima."""
    hist = hist.copy()
    hist[0] = hist[1]
    divergences = [dense_kl(hist, i, levels, log_diff=False) for i in range(start, len(hist) + 1)]
    last_best = len(divergences) - 1 - int(np.argmin(divergences[::-1]))
    return start + last_best


def post_relu_with_outliers(seed: int = 3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    body = torch.relu(torch.randn(60_000, generator=gen))
    return torch.cat([body, torch.tensor([31.0, 33.0, 35.0])])


def test_kl_unsigned_int8_searches_from_bin_128_as_tensorrt():
    x = post_relu_with_outliers()
    q = quantizer_with(dict(type='KLCalibrator'), bits=8, unsigned=True)
    q.observe(x)
    cal = q.calibrator
    assert cal.quantized_levels(q) == 256
    counts = cal.histogram.counts.numpy()
    expected = tensorrt_entropy_threshold(counts, 256, start=128)
    assert expected < 256  # a threshold a search starting at 256 bins cannot reach ...
    assert tensorrt_entropy_threshold(counts, 256, start=256) > 1500  # ... so it keeps outliers
    assert cal.threshold(q) == pytest.approx(expected * cal.histogram.bin_width, rel=1e-12)
    assert cal.threshold(q) < 5.0


def test_kl_over_two_batches_uses_the_extended_histogram():
    x = post_relu_with_outliers()
    q = quantizer_with(dict(type='KLCalibrator', bins=512), bits=8)
    body, outliers = x[:-3], x[-3:]
    q.observe(body)
    width = q.calibrator.histogram.bin_width
    q.observe(outliers)
    hist = q.calibrator.histogram
    assert hist.bin_width == width and hist.num_bins == math.ceil(35.0 / width)
    expected = tensorrt_entropy_threshold(hist.counts.numpy(), 128, start=128)
    assert q.calibrator.threshold(q) == pytest.approx(expected * width, rel=1e-12)


@pytest.mark.parametrize('cfg, key', [
    (dict(type='EMAMinMaxCalibrator', momentum=1.5), 'momentum=1.5'),
    (dict(type='PercentileCalibrator', percentile=120), 'percentile=120'),
    (dict(type='LpSearchCalibrator', p=-1), 'p=-1'),
    (dict(type='LpSearchCalibrator', step=0.02), 'step=0.02'),
    (dict(type='KLCalibrator', log_diff='yes'), "log_diff='yes'"),
])
def test_bad_calibrator_values_raise(cfg, key):
    with pytest.raises(Exception, match=key):
        CALIBRATORS.build(cfg)
