# TensorRT INT8 deployment preset: list it after a method config, e.g.
#   _base_ = ['./yolov6n_demo_minmax_w8a8.py', '../_base_/ptq/tensorrt.py']
# The PTQ tools copy it into quant_cfg.backend='tensorrt' (the same as
# `--cfg-options quant_cfg.backend=tensorrt`; detptq.quantization.qconfig.BACKEND_PRESETS):
# symmetric int8 activations (zero point 0) on every layer, and per-tensor
# weights for the ConvTranspose upsamples (TensorRT's per-channel axis for
# them is the input channels). Weights stay per-channel symmetric int8; the
# exporter gives Concat/MaxPool inputs one scale and keeps Q/DQ off MaxPool
# outputs, so `tools/export_onnx.py` reports no TensorRT rule violation.
# (A top-level key, not quant_cfg: mmengine refuses a key defined by two bases.)
deploy_backend = 'tensorrt'
