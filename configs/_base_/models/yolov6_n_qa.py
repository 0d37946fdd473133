# YOLOv6-N-qa: the official v3.0 QARepVGG model (configs/qarepvgg/yolov6n_qa.py
# upstream, training_mode='qarepvggv2'): the yolov6_n layout with
# QARepVGGBlockV2 blocks (3x3+BN, 1x1, identity, 3x3 average pool -> BN -> ReLU).
# Release: yolov6n_qa.pt. The older v1 block (no average pool): yolov6_n_qa_v1.py.
_base_ = './yolov6_n.py'

model = dict(
    backbone=dict(block_type='QARepVGGBlockV2'),
    neck=dict(block_type='QARepVGGBlockV2'))
