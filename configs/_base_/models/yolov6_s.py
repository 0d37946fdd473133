# YOLOv6-S, v3.0 layout (as YOLOv6-N, width 0.50).
_base_ = './yolov6_n.py'

widen = 0.50
model = dict(
    backbone=dict(width_multiple=widen),
    neck=dict(width_multiple=widen),
    bbox_head=dict(width_multiple=widen))
