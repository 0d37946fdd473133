# YOLOv6-S on COCO: mse PTQ at W4A8.
_base_ = ['./yolov6s_coco.py', './_base_/ptq/mse.py']
load_from = 'checkpoints/yolov6s.pth'
quant_cfg = dict(w_bits=4, a_bits=8)
