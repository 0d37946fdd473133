# YOLOv6-S on COCO: kl_cfws PTQ at W4A8.
_base_ = ['./yolov6s_coco.py', './_base_/ptq/kl_cfws.py']
load_from = 'checkpoints/yolov6s.pth'
quant_cfg = dict(w_bits=4, a_bits=8)
