"""Export a quantized detector to ONNX with QuantizeLinear/DequantizeLinear pairs (opset >= 13).

    model_q = load_quantized_model(cfg, 'work_dirs/x/quantized.pth')
    result = export_qdq_onnx(model_q, 'model.onnx', (1, 3, 320, 320), decode=False)

Layout (TensorRT's explicit-quantization form, see ``trt_rules``):

- weights: float initializer holding on-grid values -> Q -> DQ (per output
  channel, symmetric int8, zero point 0) -> Conv; AdaRound weights are the
  learned integers; CFWS adds the coarse centre as a 1x1 conv;
- activations: one per-tensor Q -> DQ in front of each quantized layer
  (uint8 with the zero point for asymmetric quantizers, int8 for symmetric);
- scale groups: the tensors joined by a Concat or a MaxPool (and several
  quantizers of one tensor) get ONE scale: the member with the widest real
  range is chosen for all (``ExportResult.groups`` lists every change); each
  tensor entering such a group is then quantized once, where it enters, so a
  Concat's inputs are DQ outputs of that one scale and a MaxPool passes its
  input's grid through (no Q/DQ after it); the Q/DQ after a Concat stays in
  front of the layers that read it (it is exact: Q/DQ is idempotent);
- bits < 8 are INT8 Q/DQ holding the low-bit grid: weights are on it already,
  activations get a Clip at the end codes, so the codes stay in range (exact);
- optionally (``conv_output_images``), convs whose output feeds a float op get a
  calibrated Q/DQ after them so onnxruntime runs them as QLinearConv
  (``conv_outputs``; not exact: one extra rounding).

Graph input ``images`` is the data preprocessor's output. Outputs: raw head
maps ``cls_score_s{stride}`` / ``bbox_pred_s{stride}``, or with ``decode``
``boxes`` (B, N, 4) xyxy in input pixels and ``scores`` (B, N, C) (no NMS).
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import onnx
import torch
from torch import nn

from detptq.quantization import quant_cfg_from_meta, quantize_model
from detptq.utils.checkpoint import CheckpointError, load_checkpoint_file
from .conv_outputs import quantize_conv_outputs
from .export_modules import QDQParams, build_export_model
from .qdq_graph import (activation_groups, dedupe_qdq, hoist_qdq_above_maxpool,
                        inline_constant_identities, prune_unused, quantize_group_sources,
                        topological_sort)
from .trt_rules import tensorrt_issues

INPUT_NAME = 'images'


class NotQuantizedCheckpoint(CheckpointError):
    """The file is not a ``quantized.pth`` written by tools/quantize.py."""


def read_quantized_checkpoint(path: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """``(state_dict, quant_cfg)`` of a ``quantized.pth``; clear errors for other files."""
    ckpt = load_checkpoint_file(path)
    meta = ckpt.get('meta') if isinstance(ckpt, dict) else None
    state = ckpt.get('state_dict') if isinstance(ckpt, dict) else None
    quant_cfg = meta.get('quant_cfg') if isinstance(meta, dict) else None
    if not isinstance(state, dict) or quant_cfg is None:
        raise NotQuantizedCheckpoint(
            f'{path!r} is not a quantized checkpoint (no state_dict + meta.quant_cfg); '
            'it looks like a float model. Quantize first: `python tools/quantize.py CONFIG` '
            'writes WORK_DIR/quantized.pth')
    try:
        quant_cfg = quant_cfg_from_meta(meta, path)  # checks the quant config's version
    except ValueError as err:
        raise NotQuantizedCheckpoint(str(err)) from None
    if not any(k.endswith('input_quantizer.scale') for k in state):
        raise NotQuantizedCheckpoint(f'{path!r} has meta.quant_cfg but no quantizer scales')
    if any(k.endswith('weight_quantizer.v') for k in state):
        raise NotQuantizedCheckpoint(
            f'{path!r} was saved in the middle of AdaRound (weight_quantizer.v present, '
            'base scales absent); export the finished quantized.pth instead')
    return state, quant_cfg


def load_quantized_model(cfg, checkpoint: str) -> nn.Module:
    """Rebuild the quantized detector: config's FP model -> quantize_model -> quantized state."""
    from mmengine.registry import init_default_scope

    import detptq.models  # noqa: F401  (registers the detectors)
    from detptq.registry import MODELS
    state, quant_cfg = read_quantized_checkpoint(checkpoint)
    init_default_scope(cfg.get('default_scope', 'detptq'))
    model = MODELS.build(cfg.model).eval()
    model_q = quantize_model(model, quant_cfg, inplace=True)
    missing, unexpected = model_q.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise NotQuantizedCheckpoint(
            f'{checkpoint!r} does not match the config\'s quantized model: '
            f'{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected '
            f'(e.g. {unexpected[:3]}); is it from this config?')
    model_q.quant_cfg = quant_cfg
    return model_q.eval()


def head_strides(head: nn.Module) -> List[int]:
    """Strides of the head's levels (``strides`` or ``featmap_strides``)."""
    strides = getattr(head, 'strides', None) or getattr(head, 'featmap_strides', None)
    if strides is None:
        raise AttributeError(f'{type(head).__name__} has no strides/featmap_strides')
    return [int(s[0] if isinstance(s, (tuple, list)) else s) for s in strides]


def decode_dense(head: nn.Module, cls_scores: Sequence[torch.Tensor],
                 bbox_preds: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(scores (B, N, C), boxes (B, N, 4) xyxy in input pixels)`` with the head's own code."""
    if callable(getattr(head, 'decode', None)):
        return head.decode(cls_scores, bbox_preds)
    from detptq.models.dense_heads.yolo_postprocess import anchor_points, dist2bbox
    scores, ltrb = head.dense_outputs(cls_scores, bbox_preds)
    points, strides = anchor_points([c.shape[-2:] for c in cls_scores], head_strides(head),
                                    scores.device, ltrb.dtype)
    return scores, dist2bbox(points, ltrb * strides)


class DetectorExportWrapper(nn.Module):
    """images -> raw per-level head maps, or with ``decode`` (boxes, scores)."""

    def __init__(self, detector: nn.Module, decode: bool = False) -> None:
        super().__init__()
        self.detector = detector
        self.decode = decode

    def output_names(self) -> List[str]:
        """ONNX output names in forward's order."""
        if self.decode:
            return ['boxes', 'scores']
        strides = head_strides(self.detector.bbox_head)
        return [f'cls_score_s{s}' for s in strides] + [f'bbox_pred_s{s}' for s in strides]

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        head = self.detector.bbox_head
        cls_scores, bbox_preds = head(self.detector.extract_feat(images))
        if not self.decode:
            return (*cls_scores, *bbox_preds)
        scores, boxes = decode_dense(head, cls_scores, bbox_preds)
        return boxes, scores


class GenericExportWrapper(nn.Module):
    """Any model whose forward returns a tensor or a tuple/list of tensors (tests, backbones)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.num_outputs = 1

    def output_names(self) -> List[str]:
        """``output0``, ``output1``, ... (the count is known after one forward)."""
        return [f'output{i}' for i in range(self.num_outputs)]

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        out = self.model(images)
        out = tuple(out) if isinstance(out, (tuple, list)) else (out, )
        self.num_outputs = len(out)
        return out


def make_export_wrapper(model: nn.Module, decode: bool = False) -> nn.Module:
    """``DetectorExportWrapper`` for detectors (models with a ``bbox_head``), else generic."""
    if hasattr(model, 'bbox_head'):
        return DetectorExportWrapper(model, decode)
    if decode:
        raise ValueError('decode=True needs a detector with a bbox_head')
    return GenericExportWrapper(model)


@dataclass
class ExportResult:
    """What ``export_qdq_onnx`` wrote and changed."""
    path: str
    model: onnx.ModelProto
    reference: nn.Module                      # the exported graph, in PyTorch
    output_names: List[str]
    groups: List[Dict[str, Any]] = field(default_factory=list)  # unified scale groups
    int8_output_convs: List[str] = field(default_factory=list)  # convs given an output Q/DQ
    notes: List[str] = field(default_factory=list)
    tensorrt_issues: List[str] = field(default_factory=list)


def _torch_to_onnx(wrapper: nn.Module, example: torch.Tensor, opset: int,
                   dynamic_axes: Dict[str, Dict[int, str]]) -> onnx.ModelProto:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # legacy-exporter deprecation and tracer notes about constant shapes
        warnings.simplefilter('ignore')
        torch.onnx.export(wrapper, (example, ), buffer, dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=wrapper.output_names(),
                          dynamic_axes=dynamic_axes, do_constant_folding=True)
    return onnx.load_from_string(buffer.getvalue())


def unify_scale_groups(wrapper: nn.Module, model: onnx.ModelProto) -> List[Dict[str, Any]]:
    """Give each Concat/MaxPool scale group the parameters of its widest-range member.

    Edits the PyTorch export modules (re-export afterwards); returns one report per
    group whose members differed.
    """
    by_scale = {f'{n}.scale': m for n, m in wrapper.named_modules() if isinstance(m, QDQParams)}
    reports = []
    for group in activation_groups(model):
        members = {c.scale_name: by_scale[c.scale_name] for c in group
                   if c.scale_name in by_scale}
        params = {(float(m.scale), int(m.zero_point), m.qmin, m.qmax) for m in members.values()}
        if len(params) < 2:
            continue
        chosen_name, chosen = max(members.items(), key=lambda kv: (
            kv[1].real_range[1] - kv[1].real_range[0], kv[1].bits))
        old = {n: float(m.scale) for n, m in members.items()}
        for module in members.values():
            module.set_params(chosen.scale, chosen.zero_point, chosen.qmin, chosen.qmax,
                              chosen.bits)
        s = float(chosen.scale)
        reports.append(dict(
            members=[n[:-len('.scale')] for n in members], chosen=chosen_name[:-len('.scale')],
            scale=s, zero_point=int(chosen.zero_point),
            max_rel_scale_change=max(abs(v / s - 1) for v in old.values())))
    return reports


def low_bit_notes(wrapper: nn.Module) -> List[str]:
    """One sentence per (weight/activation, bits < 8) kind present in the export."""
    kinds = sorted({('weights' if m.is_weight else 'activations', m.bits, m.qmin, m.qmax)
                    for m in wrapper.modules() if isinstance(m, QDQParams) and m.bits < 8})
    return [f'{kind} at {bits} bits are exported as INT8 Q/DQ holding the {bits}-bit grid '
            f'(codes in [{lo}, {hi}]' + (', enforced by a Clip before each Q'
                                          if kind == 'activations' else ', baked in the weights')
            + '): values are exact, but runtimes compute in INT8, with no extra speed-up'
            for kind, bits, lo, hi in kinds]


def _graph_passes(model: onnx.ModelProto, quantize: bool) -> Tuple[int, int, int]:
    """The value-preserving Q/DQ placement passes (in place); ``(merged, sourced, hoisted)``."""
    inline_constant_identities(model)
    merged = dedupe_qdq(model)
    sourced = quantize_group_sources(model) if quantize else 0
    hoisted = hoist_qdq_above_maxpool(model)
    merged += dedupe_qdq(model)
    topological_sort(model)
    prune_unused(model)
    return merged, sourced, hoisted


def export_qdq_onnx(model_q: nn.Module, path: Optional[str], input_shape: Sequence[int],
                    decode: bool = False, quantize: bool = True, opset: int = 13,
                    unify: bool = True,
                    conv_output_images: Optional[Sequence[torch.Tensor]] = None
                    ) -> ExportResult:
    """Export ``model_q`` (from ``quantize_model``) as a Q/DQ ONNX (``quantize=False``: FP32).

    Dynamic batch; raw outputs also take any input height/width (multiples of
    the largest stride), decoded outputs bake the anchor grid of ``input_shape``.
    ``conv_output_images`` (preprocessed batches): calibrate an output Q/DQ for
    every conv that would otherwise run in float in onnxruntime (``conv_outputs``).
    """
    if opset < 13:
        raise ValueError(f'opset {opset} < 13: per-channel Q/DQ needs opset 13')
    wrapper = make_export_wrapper(build_export_model(model_q, quantize), decode).eval()
    example = torch.zeros(*input_shape)
    with torch.no_grad():
        wrapper(example)  # a generic wrapper learns its output count
    dims = {0: 'batch'} if decode else {0: 'batch', 2: 'height', 3: 'width'}
    dynamic_axes = {INPUT_NAME: dims, **{n: {0: 'batch'} for n in wrapper.output_names()}}
    with torch.no_grad():
        model = _torch_to_onnx(wrapper, example, opset, dynamic_axes)
        groups = unify_scale_groups(wrapper, model) if quantize and unify else []
        if groups:
            model = _torch_to_onnx(wrapper, example, opset, dynamic_axes)
    merged, sourced, hoisted = _graph_passes(model, quantize)
    int8_outputs: List[str] = []
    if quantize and conv_output_images is not None:
        int8_outputs = quantize_conv_outputs(wrapper, model, conv_output_images)
        if int8_outputs:
            with torch.no_grad():
                model = _torch_to_onnx(wrapper, example, opset, dynamic_axes)
            merged, sourced, hoisted = _graph_passes(model, quantize)
    onnx.checker.check_model(model)
    notes = low_bit_notes(wrapper) if quantize else []
    if groups:
        notes.append(f'{len(groups)} Concat/MaxPool scale groups unified to the widest-range '
                     'member (TensorRT merges these tensors into one): largest scale change '
                     f'{max(g["max_rel_scale_change"] for g in groups):.1%}')
    if sourced:
        notes.append(f'{sourced} Concat/MaxPool groups quantized where their tensors enter '
                     '(Concat inputs are DQ outputs of one scale, MaxPools pass it through)')
    if merged or hoisted:
        notes.append(f'{merged} duplicate Q/DQ merged, {hoisted} moved in front of a MaxPool')
    if int8_outputs:
        notes.append(f'{len(int8_outputs)} convs feeding float ops got a calibrated output '
                     'Q/DQ (onnxruntime runs them as QLinearConv; one extra rounding that the '
                     'fake-quant model does not have)')
    if path:
        onnx.save(model, path)
    return ExportResult(path=path, model=model, reference=wrapper,
                        output_names=wrapper.output_names(), groups=groups, notes=notes,
                        int8_output_convs=int8_outputs,
                        tensorrt_issues=tensorrt_issues(model) if quantize else [])
