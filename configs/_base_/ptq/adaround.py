# Layer-wise AdaRound (each conv its own unit), MSE-initialised scales.
_base_ = ['./mse.py']
method = 'adaround'
recon_cfg = dict(type='AdaRoundReconstructor', iters=20000, batch_size=8,
                 round_weight=0.01, warm_up=0.2, learn_act_scale=True)
