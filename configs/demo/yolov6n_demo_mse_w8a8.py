# Demo YOLOv6-N: mse PTQ at W8A8.
_base_ = ['./yolov6n_demo.py', '../_base_/ptq/mse.py']
load_from = 'checkpoints/yolov6n_demo.pth'
model_name = 'yolov6n_demo'
quant_cfg = dict(w_bits=8, a_bits=8)
