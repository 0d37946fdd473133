# Board: adaround with the board reconstruction schedule (see ./protocol.py).
_base_ = ['./protocol.py', '../_base_/ptq/adaround.py']
num_calib_images = _base_.board_num_calib_images
recon_cfg = _base_.board_recon
