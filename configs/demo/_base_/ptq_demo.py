# What every demo PTQ config shares: the demo YOLOv6-N (model, data, schedule)
# and its published checkpoint. The method comes from ../../_base_/ptq/.
_base_ = ['../yolov6n_demo.py']
load_from = 'checkpoints/yolov6n_demo.pth'
model_name = 'yolov6n_demo'
