# YOLOv6-N, v3.0 layout: EfficientRep (P2 out, SimCSPSPPF) + RepBi-PAN neck
# + efficient decoupled head without DFL (reg_max 0). RepVGG blocks.
# Lists are YOLOv6's combined base lists (5 backbone + 6 neck channels,
# 5 backbone + 4 neck repeats), scaled by the multiples inside the modules.

deepen_factor = 0.33
widen_factor = 0.25
yolov6_channels = [64, 128, 256, 512, 1024, 256, 128, 128, 256, 256, 512]
yolov6_repeats = [1, 6, 12, 18, 6, 12, 12, 12, 12]
block_type = 'RepVGGBlock'

model = dict(
    type='YOLODetector',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[0., 0., 0.],
        std=[255., 255., 255.],
        bgr_to_rgb=True,
        pad_size_divisor=32),
    backbone=dict(
        type='EfficientRep',
        channels=yolov6_channels,
        num_repeats=yolov6_repeats,
        depth_multiple=deepen_factor,
        width_multiple=widen_factor,
        block_type=block_type,
        fuse_p2=True,
        spp='SimCSPSPPF'),
    neck=dict(
        type='RepBiFPANNeck',
        channels=yolov6_channels,
        num_repeats=yolov6_repeats,
        depth_multiple=deepen_factor,
        width_multiple=widen_factor,
        block_type=block_type),
    bbox_head=dict(
        type='YOLOv6Head',
        num_classes=80,
        in_channels=[128, 256, 512],
        width_multiple=widen_factor,
        strides=[8, 16, 32],
        reg_max=0,
        loss_cls=dict(type='VarifocalLoss', use_sigmoid=True, alpha=0.75,
                      gamma=2.0, iou_weighted=True, loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=2.5),
        loss_dfl=dict(type='DistributionFocalLoss', loss_weight=0.5),
        train_cfg=dict(
            assigner=dict(type='TaskAlignedAssigner', topk=13),
            alpha=1,
            beta=6),
        test_cfg=dict(
            score_thr=0.03,
            nms_pre=30000,
            nms=dict(type='nms', iou_threshold=0.65),
            max_per_img=300,
            multi_label=True)))
