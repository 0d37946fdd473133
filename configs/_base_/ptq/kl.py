# TensorRT-style entropy (KL) calibration of activations, 2048-bin histograms.
_base_ = ['./minmax.py']
method = 'kl'
quant_cfg = dict(act=dict(calibrator=dict(type='KLCalibrator', bins=2048)))
