# Board: CFWS paper method, improved KL + coarse & fine weight splitting (see ./protocol.py).
_base_ = ['./protocol.py', '../_base_/ptq/kl_cfws.py']
num_calib_images = _base_.board_num_calib_images
