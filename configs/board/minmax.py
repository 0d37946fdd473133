# Board: minmax calibration only (see ./protocol.py).
_base_ = ['./protocol.py', '../_base_/ptq/minmax.py']
num_calib_images = _base_.board_num_calib_images
