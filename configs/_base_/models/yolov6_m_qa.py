# YOLOv6-M-qa (v3.0 layout with QARepVGG blocks).
_base_ = './yolov6_m.py'

model = dict(
    backbone=dict(block_type='QARepVGGBlock'),
    neck=dict(block_type='QARepVGGBlock'))
