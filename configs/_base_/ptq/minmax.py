# Baseline PTQ: MinMax ranges for weights (per channel) and activations.
# Every method file inherits this one, so every PTQ config runs as a test loop:
# `tools/quantize.py CONFIG` builds the Runner and calls runner.test().
# PTQLoop reads quant_cfg, recon_cfg, calib_dataloader, num_calib_images,
# calib_seed, method and model_name from the top-level keys when it is built,
# after --cfg-options are merged (naming them here would freeze this file's
# values: mmengine evaluates a _base_ file when it reads it). Its own
# arguments (eval_fp, run_eval, ...) can be set here or with
# --cfg-options test_cfg.eval_fp=False.
test_cfg = dict(type='PTQLoop')
method = 'minmax'
num_calib_images = 256
quant_cfg = dict(
    w_bits=8, a_bits=8,
    weight=dict(calibrator=dict(type='MinMaxCalibrator'), per_channel=True,
                symmetric=True, narrow_range=True),
    act=dict(calibrator=dict(type='MinMaxCalibrator'), symmetric=False),
    first_last_bits=8)
