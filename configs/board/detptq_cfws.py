# Board: DetPTQ on top of CFWS weight splitting: the p search sets the fine
# scale of each split kernel, AdaRound learns the fine rounding of the
# surrounding taps (the centre keeps CFWS's coarse + nearest fine rounding).
_base_ = ['./detptq.py']
method = 'detptq_cfws'
quant_cfg = dict(cfws='reparam')
