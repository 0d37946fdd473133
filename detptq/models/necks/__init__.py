"""Necks."""
from .reppan import (CSPRepBiFPANNeck, CSPRepPANNeck, RepBiFPANNeck,
                     RepPANNeck)
from .yolov7_pafpn import YOLOv7PAFPN

__all__ = ['CSPRepBiFPANNeck', 'CSPRepPANNeck', 'RepBiFPANNeck', 'RepPANNeck', 'YOLOv7PAFPN']
