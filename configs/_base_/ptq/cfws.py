# CFWS weight splitting alone (activations MinMax), to isolate its effect.
_base_ = ['./minmax.py']
method = 'cfws'
quant_cfg = dict(cfws='reparam')
