# Board: DetPTQ with our default (../_base_/ptq/detptq.py: ODOL p search on 8
# images, BRECQ-base reconstruction with each unit's p as its loss exponent) and the
# board schedule (see ./protocol.py).
# The published variant and the ablation's switches: ./detptq_paper.py.
_base_ = ['./protocol.py', '../_base_/ptq/detptq.py']
num_calib_images = _base_.board_num_calib_images
recon_cfg = dict(_base_.board_recon, p_search_images=8)
