# Demo YOLOv6-N: minmax PTQ at W4A4.
_base_ = ['./yolov6n_demo.py', '../_base_/ptq/minmax.py']
load_from = 'checkpoints/yolov6n_demo.pth'
model_name = 'yolov6n_demo'
quant_cfg = dict(w_bits=4, a_bits=4)
