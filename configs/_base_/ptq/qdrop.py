# QDrop: BRECQ with activation quantization randomly dropped (p = 0.5).
_base_ = ['./brecq.py']
method = 'qdrop'
recon_cfg = dict(type='QDropReconstructor', drop_prob=0.5)
