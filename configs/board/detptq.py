# Board: DetPTQ (ODOL p search on 8 images, then QDrop reconstruction with each
# unit's p) with the board reconstruction schedule (see ./protocol.py).
# Ablation switches: docs/detptq_study.md.
_base_ = ['./protocol.py', '../_base_/ptq/detptq.py']
num_calib_images = _base_.board_num_calib_images
recon_cfg = dict(_base_.board_recon, p_search_images=8)
