# Demo qdrop, shortened so it runs in minutes on a CPU: 32 calibration images,
# 300 iterations per unit with a 10x AdaRound lr (at lr 1e-3, V moves too
# little in 300 steps to change a rounding decision)
# (the COCO configs keep the paper's 20,000 iterations per unit).
# One such file per reconstruction method: mmengine refuses a key (recon_cfg)
# defined in two files of one _base_ list, so the schedule must override the
# method from a file that inherits it.
_base_ = ['./ptq_demo.py', '../../_base_/ptq/qdrop.py']
num_calib_images = 32
recon_cfg = dict(iters=300, batch_size=4, lr_round=1e-2)
