# YOLOv6-N on COCO, W4A8, DetPTQ with paper-faithful settings.
_base_ = ['./yolov6n_coco.py', './_base_/ptq/detptq.py']
load_from = 'checkpoints/yolov6n.pth'
quant_cfg = dict(w_bits=4, a_bits=8)
