# YOLOv6-N with QARepVGG v1 blocks (YOLOv6 QARepVGGBlock,
# training_mode='qarepvgg': 3x3+BN, 1x1, identity -> BN -> ReLU, no average
# pool). The official v3 QA releases use v2 blocks (yolov6_n_qa.py).
_base_ = './yolov6_n.py'

model = dict(
    backbone=dict(block_type='QARepVGGBlock'),
    neck=dict(block_type='QARepVGGBlock'))
