# DetPTQ: ODOL-guided per-layer p in {1, 1.5, ..., 4.5}, then QDrop
# reconstruction with each unit's p as its Lp loss exponent.
_base_ = ['./qdrop.py']
method = 'detptq'
recon_cfg = dict(type='DetPTQReconstructor', mode='qdrop', p_rule='last')
