"""Calibrated Q/DQ after convs whose output feeds a float op, so onnxruntime runs them in INT8.

onnxruntime turns ``DQ -> Conv [-> Relu] -> Q`` into one ``QLinearConv``; a conv whose
output goes to a float op instead (the YOLOv6 head's SiLU, exported as
Sigmoid * x) stays a float Conv on dequantized inputs, the slowest form.
:func:`quantize_conv_outputs` adds a per-tensor 8-bit Q/DQ right after each
such conv, with MinMax ranges over calibration images, in the activations'
own mode (uint8 asymmetric, or int8 symmetric for TensorRT configs).

This is one extra rounding of those pre-activations, which the fake-quant
model does not have: the exported model is then close to, not the same as, the
fake-quant model (``tools/export_onnx.py --eval`` measures the mAP). TensorRT
does not need it (it fuses Conv + SiLU and quantizes after the activation).
Convs producing graph outputs (the prediction maps) are left in float.
"""
from __future__ import annotations

from typing import Dict, Iterable, List

import onnx
import torch
from torch import nn

from detptq.quantization.quantizer import UniformQuantizer
from .export_modules import ExportConv2d, QDQParams
from .qdq_graph import GraphIndex


def _fused_by_onnxruntime(index: GraphIndex, tensor: str) -> bool:
    """True when every reader of a conv output is a Q (or a Relu onnxruntime folds into one)."""
    users = index.consumers.get(tensor, [])
    if not users:
        return False
    for user in users:
        if user.op_type == 'QuantizeLinear':
            continue
        if user.op_type != 'Relu':
            return False
        after = index.consumers.get(user.output[0], [])
        # onnxruntime (1.31) fuses DQ -> Conv -> Relu -> Q whatever the zero point
        if not after or any(q.op_type != 'QuantizeLinear' for q in after):
            return False
    return True


def float_output_convs(model: onnx.ModelProto) -> List[onnx.NodeProto]:
    """Conv nodes on Q/DQ inputs whose output is not quantized (and is not a graph output)."""
    index = GraphIndex(model)
    found = []
    for node in index.graph.node:
        if node.op_type != 'Conv' or node.output[0] in index.graph_outputs:
            continue
        producers = [index.producer.get(name) for name in node.input[:2]]
        if any(p is None or p.op_type != 'DequantizeLinear' for p in producers):
            continue  # a float layer: nothing to gain
        if not _fused_by_onnxruntime(index, node.output[0]):
            found.append(node)
    return found


def module_name_of(index: GraphIndex, conv: onnx.NodeProto) -> str:
    """Module path of an exported conv: its weight initializer is named ``<module>.weight``.

    (The node names' scopes skip modules that are not called, e.g. the detector.)
    """
    dq = index.producer.get(conv.input[1])
    q = index.producer.get(dq.input[0]) if dq is not None else None
    weight = q.input[0] if q is not None and q.op_type == 'QuantizeLinear' else ''
    return weight[:-len('.weight')] if weight.endswith('.weight') else ''


@torch.no_grad()
def calibrate_output_qdq(wrapper: nn.Module, names: Iterable[str],
                         images: Iterable[torch.Tensor]) -> Dict[str, QDQParams]:
    """MinMax per-tensor output Q/DQ parameters of the named ``ExportConv2d`` modules."""
    modules = dict(wrapper.named_modules())
    quantizers: Dict[str, UniformQuantizer] = {}
    hooks = []
    for name in names:
        module = modules[name]
        signed = module.input_qdq is not None and module.input_qdq.qmin < 0
        quantizer = UniformQuantizer(bits=8, symmetric=signed)
        quantizers[name] = quantizer
        hooks.append(module.register_forward_hook(
            lambda _m, _i, out, q=quantizer: q.observe(out)))
    try:
        seen = 0
        for batch in images:
            wrapper(batch)
            seen += 1
    finally:
        for hook in hooks:
            hook.remove()
    if not seen:
        raise ValueError('calibrate_output_qdq: no calibration images')
    params = {}
    for name, quantizer in quantizers.items():
        quantizer.compute_params()
        params[name] = QDQParams.from_quantizer(quantizer)
    return params


def quantize_conv_outputs(wrapper: nn.Module, model: onnx.ModelProto,
                          images: Iterable[torch.Tensor]) -> List[str]:
    """Give every float-output conv of ``model`` a calibrated output Q/DQ; returns their names.

    ``wrapper`` is the export wrapper ``model`` was exported from (re-export afterwards).
    """
    modules = dict(wrapper.named_modules())
    index = GraphIndex(model)
    names = []
    for node in float_output_convs(model):
        name = module_name_of(index, node)
        module = modules.get(name)
        if not isinstance(module, ExportConv2d) or module.coarse_weight is not None:
            continue  # CFWS: two convs summed, quantized after the sum would not fuse either
        if name not in names:
            names.append(name)
    for name, params in calibrate_output_qdq(wrapper, names, images).items():
        modules[name].output_qdq = params
    return names
