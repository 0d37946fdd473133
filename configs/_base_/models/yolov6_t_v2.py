# YOLOv6-T, v2.0 layout (release 0.2.0 yolov6t.pt), otherwise as yolov6_s_v2.
# Depth 0.25 / width 0.50: this is what reproduces the release table's
# 15.0M params / 36.7 GFLOPs (the later configs/yolov6t.py with depth 0.33 /
# width 0.375 gives 9.7M / 24.7G, which matches no published T model).
_base_ = './yolov6_s_v2.py'

deepen = 0.25
model = dict(
    backbone=dict(depth_multiple=deepen),
    neck=dict(depth_multiple=deepen))
