# Board: the CFWS paper's improved KL for activations, MinMax weights (see ./protocol.py).
_base_ = ['./protocol.py', '../_base_/ptq/minmax.py']
method = 'kl_improved'
num_calib_images = _base_.board_num_calib_images
quant_cfg = dict(act=dict(calibrator=dict(type='ImprovedKLCalibrator', bins=2048)))
