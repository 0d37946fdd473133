# Board control: BRECQ on top of CFWS weight splitting, without the ODOL p
# search. Beside detptq_cfws it shows what the p search adds on split weights.
_base_ = ['./brecq.py']
method = 'brecq_cfws'
quant_cfg = dict(cfws='reparam')
