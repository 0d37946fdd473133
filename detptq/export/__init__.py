"""Deployable output: Q/DQ ONNX export of quantized detectors and its verification."""
from .export_modules import QDQParams, bake_weight, build_export_model
from .onnx_qdq import (DetectorExportWrapper, ExportResult, NotQuantizedCheckpoint,
                       decode_dense, export_qdq_onnx, load_quantized_model,
                       make_export_wrapper, read_quantized_checkpoint)
from .trt_rules import tensorrt_issues

__all__ = [
    'QDQParams', 'bake_weight', 'build_export_model', 'DetectorExportWrapper', 'ExportResult',
    'NotQuantizedCheckpoint', 'decode_dense', 'export_qdq_onnx', 'load_quantized_model',
    'make_export_wrapper', 'read_quantized_checkpoint', 'tensorrt_issues'
]
