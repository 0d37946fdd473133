# Board: DetPTQ as published (ODOL p search on 8 images, then QDrop reconstruction
# with each unit's p) with the board schedule (see ./protocol.py). The reference
# of the DetPTQ ablation and of the lr study: docs/detptq_study.md.
_base_ = ['./protocol.py', '../_base_/ptq/detptq_paper.py']
num_calib_images = _base_.board_num_calib_images
recon_cfg = dict(_base_.board_recon, p_search_images=8)
