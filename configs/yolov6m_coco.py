# YOLOv6-M (v3.0) on COCO val2017, official evaluation settings:
#   python tools/test.py configs/yolov6m_coco.py yolov6m.pth --data-root data/coco
# (an official yolov6m.pt release is converted first with tools/convert_ckpt.py)
_base_ = ['./_base_/models/yolov6_m.py', './_base_/datasets/coco_detection.py',
          './_base_/default_runtime.py']
model_name = 'yolov6m'
