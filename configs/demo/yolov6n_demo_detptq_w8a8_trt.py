# Demo YOLOv6-N: detptq at W8A8 (the demo's shortened schedule) with the
# TensorRT preset (symmetric int8 activations, per-tensor ConvTranspose weights).
_base_ = ['./yolov6n_demo_detptq_w8a8.py', '../_base_/ptq/tensorrt.py']
