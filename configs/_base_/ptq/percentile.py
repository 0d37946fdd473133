# Activations clipped at the 99.99th percentile; weights MinMax per channel.
_base_ = ['./minmax.py']
method = 'percentile'
quant_cfg = dict(act=dict(calibrator=dict(type='PercentileCalibrator',
                                          percentile=99.99)))
