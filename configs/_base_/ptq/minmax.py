# Baseline PTQ: MinMax ranges for weights (per channel) and activations.
method = 'minmax'
num_calib_images = 256
quant_cfg = dict(
    w_bits=8, a_bits=8,
    weight=dict(calibrator=dict(type='MinMaxCalibrator'), per_channel=True,
                symmetric=True, narrow_range=True),
    act=dict(calibrator=dict(type='MinMaxCalibrator'), symmetric=False),
    first_last_bits=8)
