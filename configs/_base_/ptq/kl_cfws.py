# CFWS paper: improved KL (log-difference, ReLU fusion) + coarse&fine weight
# splitting of the fused RepVGG 3x3 kernels.
_base_ = ['./minmax.py']
method = 'kl_cfws'
quant_cfg = dict(
    act=dict(calibrator=dict(type='ImprovedKLCalibrator', bins=2048)),
    cfws='reparam')
