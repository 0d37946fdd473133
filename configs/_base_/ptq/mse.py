# Lp search with p = 2 (MSE) for weights and activations.
_base_ = ['./minmax.py']
method = 'mse'
quant_cfg = dict(
    weight=dict(calibrator=dict(type='LpSearchCalibrator', p=2.0)),
    act=dict(calibrator=dict(type='LpSearchCalibrator', p=2.0)))
