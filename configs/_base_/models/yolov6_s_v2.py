# YOLOv6-S, v2.0 layout (release 0.2): EfficientRep (no P2, SimSPPF) +
# RepPAN neck (transposed-conv upsampling + concat) + non-DFL head.
_base_ = './yolov6_n.py'

widen = 0.50
model = dict(
    backbone=dict(width_multiple=widen, fuse_p2=False, spp='SimSPPF'),
    neck=dict(type='RepPANNeck', width_multiple=widen),
    bbox_head=dict(width_multiple=widen))
