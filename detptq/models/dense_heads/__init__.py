"""Dense detection heads."""
from .yolov6_head import YOLOv6Head
from .yolov7_head import YOLOv7Head

__all__ = ['YOLOv6Head', 'YOLOv7Head']
