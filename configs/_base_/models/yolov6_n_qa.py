# YOLOv6-N-qa (v3.0 layout with QARepVGG blocks, configs/qarepvgg upstream).
_base_ = './yolov6_n.py'

model = dict(
    backbone=dict(block_type='QARepVGGBlock'),
    neck=dict(block_type='QARepVGGBlock'))
