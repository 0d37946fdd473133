# YOLOv6-M, v3.0 layout: CSPBepBackbone (BepC3 stages, csp_e 2/3, P2 out,
# SimSPPF) + CSP RepBi-PAN neck + DFL head (reg_max 16).
_base_ = './yolov6_n.py'

deepen = 0.60
widen = 0.75
model = dict(
    backbone=dict(
        type='CSPBepBackbone',
        depth_multiple=deepen,
        width_multiple=widen,
        spp='SimSPPF',
        csp_e=2 / 3),
    neck=dict(
        type='CSPRepBiFPANNeck',
        depth_multiple=deepen,
        width_multiple=widen,
        csp_e=2 / 3),
    bbox_head=dict(width_multiple=widen, reg_max=16))
