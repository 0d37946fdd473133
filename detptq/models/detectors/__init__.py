"""Detectors."""
from .yolo_detector import YOLODetector

__all__ = ['YOLODetector']
