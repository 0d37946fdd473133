# BRECQ: block-wise reconstruction with AdaRound, inputs from quantized blocks.
_base_ = ['./mse.py']
method = 'brecq'
recon_cfg = dict(type='BRECQReconstructor', iters=20000, batch_size=8,
                 round_weight=0.005, warm_up=0.25, learn_act_scale=True)
