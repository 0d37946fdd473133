# DetPTQ, our default: the published method (./detptq_paper.py) on the BRECQ base,
# with the ODOL-chosen p used as each unit's loss exponent only (scales stay as
# calibrated): the variant the DetPTQ ablation chose on the tune split
# (docs/detptq_study.md, "Default"). drop_prob stays inherited, unused with mode='brecq'.
_base_ = ['./detptq_paper.py']
recon_cfg = dict(mode='brecq', p_use='loss')
