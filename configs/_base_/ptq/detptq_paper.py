# DetPTQ as published: ODOL-guided per-layer p in {1, 1.5, ..., 4.5}, then QDrop
# reconstruction with each unit's p as its Lp loss exponent. The DetPTQ ablation
# (docs/detptq_study.md) changes one option of this config at a time.
_base_ = ['./qdrop.py']
method = 'detptq'
recon_cfg = dict(type='DetPTQReconstructor', mode='qdrop', p_rule='last')
