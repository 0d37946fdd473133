# YOLOv6-N (v3.0, release 0.3.0/0.4.0 yolov6n.pt) on COCO val2017, evaluated as
# the published YOLOv6 table (tools/eval.py --reproduce_640_eval): square 640
# canvas, long side 640 - 4 (upstream eval_640_repro.py entry 'yolov6n'),
# int() resize, conf 0.03, NMS IoU 0.65, boxes mapped back as YOLOv6's evaler.
#   python tools/test.py configs/yolov6n_coco.py yolov6n.pth --data-root data/coco
# (an official yolov6n.pt release is converted first with tools/convert_ckpt.py)
# Rect mode instead (eval.py default): val_dataloader = _base_.yolov6_rect_dataloader
_base_ = ['./_base_/models/yolov6_n.py', './_base_/datasets/coco_detection.py',
          './_base_/default_runtime.py']
model_name = 'yolov6n'
val_dataloader = dict(
    dataset=dict(pipeline=_base_.yolov6_reproduce_640_pipelines.yolov6n))
test_dataloader = val_dataloader
