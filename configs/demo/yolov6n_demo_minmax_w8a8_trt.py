# Demo YOLOv6-N: minmax PTQ at W8A8 with the TensorRT preset (symmetric int8
# activations, per-tensor ConvTranspose weights).
_base_ = ['./yolov6n_demo_minmax_w8a8.py', '../_base_/ptq/tensorrt.py']
