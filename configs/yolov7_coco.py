# yolov7 on COCO val2017, official evaluation settings.
_base_ = ['./_base_/models/yolov7.py', './_base_/datasets/coco_detection.py',
          './_base_/default_runtime.py']
model_name = 'yolov7'
