# YOLOv6-N with QARepVGG blocks on the demo data set: quantization-friendly.
# The committed checkpoint was trained with the v1 block (no average-pool
# branch), so this config names it explicitly; the official v3 QA models
# use QARepVGGBlockV2 (../_base_/models/yolov6_n_qa.py).
_base_ = [
    '../_base_/models/yolov6_n_qa_v1.py',
    '../_base_/datasets/demo_detection.py',
    '../_base_/schedules/yolo_from_scratch.py',
    '../_base_/default_runtime.py',
]
model = dict(bbox_head=dict(num_classes=10))
randomness = dict(seed=0)
