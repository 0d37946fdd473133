# YOLOv6-N (v3.0 layout) on the generated demo data set, input 320.
_base_ = [
    '../_base_/models/yolov6_n.py',
    '../_base_/datasets/demo_detection.py',
    '../_base_/schedules/yolo_from_scratch.py',
    '../_base_/default_runtime.py',
]
model = dict(bbox_head=dict(num_classes=10))
randomness = dict(seed=0)
