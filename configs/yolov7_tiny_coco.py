# YOLOv7-tiny (official release yolov7-tiny.pt) on COCO val2017, evaluated as the
# official test.py (the published YOLOv7 table): rect batches of 32 (pad 0.5),
# long side 640 with int() resize, conf 0.001, NMS IoU 0.65, boxes mapped
# back as test.py does (one gain, float half pads).
#   python tools/test.py configs/yolov7_tiny_coco.py yolov7_tiny.pth --data-root data/coco
_base_ = ['./_base_/models/yolov7_tiny.py', './_base_/datasets/coco_detection.py',
          './_base_/default_runtime.py']
model_name = 'yolov7_tiny'
val_dataloader = _base_.yolov7_rect_dataloader
test_dataloader = val_dataloader
