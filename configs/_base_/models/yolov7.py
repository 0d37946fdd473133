# YOLOv7 (L), official cfg/training/yolov7.yaml layout: ELAN backbone,
# SPPCSPC + ELAN-W PAFPN with MP down-sampling, RepConv outputs, IDetect head
# (YOLOR implicit layers, folded into the prediction convs at deploy).
# 36.9M parameters in the deploy (fused) form, as the official count.
# Inference / PTQ only: weights come from tools/convert_ckpt.py.

model = dict(
    type='YOLODetector',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[0., 0., 0.],
        std=[255., 255., 255.],
        bgr_to_rgb=True,
        pad_size_divisor=32),
    backbone=dict(type='YOLOv7Backbone', arch='L'),
    neck=dict(
        type='YOLOv7PAFPN',
        in_channels=[512, 1024, 1024],
        out_channels=[128, 256, 512],
        tiny=False),
    bbox_head=dict(
        type='YOLOv7Head',
        num_classes=80,
        in_channels=[256, 512, 1024],
        featmap_strides=[8, 16, 32],
        prior_sizes=[[(12, 16), (19, 36), (40, 28)],
                     [(36, 75), (76, 55), (72, 146)],
                     [(142, 110), (192, 243), (459, 401)]],
        use_implicit=True,
        # official YOLOv7 test.py: --conf-thres 0.001 --iou-thres 0.65
        # (YOLOv6's eval uses 0.03; each family keeps its own)
        test_cfg=dict(
            score_thr=0.001,
            nms_pre=30000,
            nms=dict(type='nms', iou_threshold=0.65),
            max_per_img=300,
            multi_label=True)))
