# YOLOv6-S (v3.0) on COCO val2017, official evaluation settings:
#   python tools/test.py configs/yolov6s_coco.py yolov6s.pth --data-root data/coco
# (an official yolov6s.pt release is converted first with tools/convert_ckpt.py)
_base_ = ['./_base_/models/yolov6_s.py', './_base_/datasets/coco_detection.py',
          './_base_/default_runtime.py']
model_name = 'yolov6s'
