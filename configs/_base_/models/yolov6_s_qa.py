# YOLOv6-S-qa (v3.0 layout with QARepVGG blocks).
_base_ = './yolov6_s.py'

model = dict(
    backbone=dict(block_type='QARepVGGBlock'),
    neck=dict(block_type='QARepVGGBlock'))
