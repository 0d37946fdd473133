# YOLOv7-tiny, official cfg/training/yolov7-tiny.yaml layout: plain
# Conv-BN-LeakyReLU(0.1) everywhere, tiny ELAN blocks, SP pyramid neck,
# stride-2 conv down-sampling, 3x3 output convs, IDetect head.
# 6.2M parameters in the deploy (fused) form, as the official count.
_base_ = './yolov7.py'

model = dict(
    backbone=dict(arch='Tiny'),
    neck=dict(
        in_channels=[128, 256, 512],
        out_channels=[64, 128, 256],
        tiny=True),
    bbox_head=dict(
        in_channels=[128, 256, 512],
        prior_sizes=[[(10, 13), (16, 30), (33, 23)],
                     [(30, 61), (62, 45), (59, 119)],
                     [(116, 90), (156, 198), (373, 326)]]))
