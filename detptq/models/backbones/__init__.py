"""Backbones."""
from .efficientrep import CSPBepBackbone, EfficientRep
from .yolov7_backbone import YOLOv7Backbone

__all__ = ['CSPBepBackbone', 'EfficientRep', 'YOLOv7Backbone']
