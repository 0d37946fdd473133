"""Checks of an exported Q/DQ graph against TensorRT's explicit-quantization rules.

TensorRT reads Q/DQ ONNX graphs (opset >= 13) as INT8 networks when:
weights are per-channel symmetric INT8 with zero point 0 on axis 0 (Conv and
Gemm: output channels; ConvTranspose: its kernels only take axis 0, the input
channels, or one scale, NVIDIA/TensorRT#2380 and #1694, while our
QuantConvTranspose2d quantizes per output channel, axis 1: quantize those
layers per tensor for TensorRT), activations are per-tensor symmetric INT8
(TensorRT supports zero point 0 and the int8 type only), the tensors joined by
a Concat or a MaxPool carry one scale (otherwise it inserts re-quantization),
and no Q/DQ follows a MaxPool (the DQ crosses it).
"""
from __future__ import annotations

from typing import List

import numpy as np
import onnx

from .qdq_graph import GraphIndex, activation_groups

#: weighted ops and the per-channel weight axis TensorRT supports
WEIGHT_AXIS = {'Conv': 0, 'ConvTranspose': 0, 'Gemm': 0}


def _opset(model: onnx.ModelProto) -> int:
    return max((o.version for o in model.opset_import if o.domain in ('', 'ai.onnx')),
               default=0)


def _axis(node: onnx.NodeProto) -> int:
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute
                 if a.name == 'axis'), 1)


def _weight_issues(index: GraphIndex) -> List[str]:
    issues = []
    for node in index.graph.node:
        if node.op_type not in WEIGHT_AXIS or len(node.input) < 2:
            continue
        dq = index.producer.get(node.input[1])
        if dq is None or dq.op_type != 'DequantizeLinear':
            continue  # a float layer (e.g. skipped by the config): TensorRT runs it in float
        zero = index.const(dq.input[2]) if len(dq.input) > 2 else np.zeros(1, np.int8)
        scale = index.const(dq.input[1])
        if zero is None or zero.dtype != np.int8 or np.any(zero != 0):
            issues.append(f'{node.name}: weight zero point must be int8 0')
        if scale is not None and scale.size > 1 and _axis(dq) != WEIGHT_AXIS[node.op_type]:
            hint = (' (per output channel); quantize it per tensor for TensorRT: '
                    "quant_cfg.backend='tensorrt' (configs/_base_/ptq/tensorrt.py) does, for "
                    "layers named *upsample* / *transpose*" if node.op_type == 'ConvTranspose'
                    else '')
            issues.append(f'{node.name}: weight quantization axis {_axis(dq)}{hint} '
                          f'(TensorRT supports axis {WEIGHT_AXIS[node.op_type]})')
    return issues


def tensorrt_issues(model: onnx.ModelProto) -> List[str]:
    """Sentences naming every place where ``model`` breaks a TensorRT Q/DQ rule (empty: none)."""
    issues: List[str] = []
    if _opset(model) < 13:
        issues.append(f'opset {_opset(model)} < 13 (per-channel Q/DQ needs 13)')
    index = GraphIndex(model)
    issues += _weight_issues(index)
    asymmetric = 0
    for node in index.graph.node:
        if node.op_type != 'QuantizeLinear' or index.is_const(node.input[0]):
            continue
        zero = index.const(node.input[2]) if len(node.input) > 2 else None
        if zero is not None and (zero.dtype != np.int8 or np.any(zero != 0)):
            asymmetric += 1
        src = index.producer.get(node.input[0])
        if src is not None and src.op_type == 'MaxPool':
            issues.append(f'{node.name}: Q/DQ right after MaxPool {src.name}')
    if asymmetric:
        issues.append(f'{asymmetric} activation quantizers are asymmetric/unsigned (uint8 or '
                      'non-zero zero point): TensorRT accepts symmetric int8 only; quantize '
                      "with quant_cfg.backend='tensorrt' (configs/_base_/ptq/tensorrt.py)")
    for group in activation_groups(model):
        scales = {float(index.const(c.scale_name)) for c in group}
        if len(scales) > 1:
            issues.append(f'tensors joined by Concat/MaxPool carry {len(scales)} scales '
                          f'(quantized at {[c.quant.name for c in group]})')
    return issues
