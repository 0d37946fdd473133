"""Q/DQ ONNX export: TensorRT placement rules, exactness in onnxruntime, low-bit grids, tools.

Tolerances: onnxruntime and PyTorch run the same Q/DQ arithmetic, but their
float convolutions sum in different orders (~1e-7 relative). Where no code
lands on a rounding boundary the outputs agree to float precision (atol 1e-5
for values of order 1); a code that does flip moves a following layer by one
quantization step, so the detector-sized check bounds the mean difference
tightly and the maximum by a few steps.
"""
import os
import sys

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from detptq.export import (DetectorExportWrapper, NotQuantizedCheckpoint, export_qdq_onnx,
                           load_quantized_model, read_quantized_checkpoint)
from detptq.export.verify import (OnnxDetector, compare_with_pytorch, dense_predictions,
                                  make_session, run_session)
from detptq.quantization import calibrate, quantize_model
from detptq.utils.checkpoint import save_checkpoint_file
from helpers import quantize_and_calibrate

REPO = os.path.join(os.path.dirname(__file__), '..')


pytestmark = pytest.mark.usefixtures('single_thread')


class TinyNet(nn.Module):
    """Concat of (a, b, maxpool(a)), a read by two convs, and a MaxPool feeding a conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv_a = nn.Conv2d(8, 4, 1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(24, 6, 3, padding=1)
        self.conv4 = nn.Conv2d(8, 5, 1)
        self.pool = nn.MaxPool2d(3, 1, 1)

    def forward(self, x):
        a = F.relu(self.conv1(x))
        b = F.relu(self.conv2(a)) * 3  # wider range than a: the concat needs a bigger scale
        cat = torch.cat([a, b, self.pool(a)], 1)
        return self.conv_a(a), self.conv3(cat), self.conv4(F.max_pool2d(b, 2, 2))


def tiny_quantized(w_bits=8, a_bits=8, **cfg):
    torch.manual_seed(0)
    model = TinyNet().eval()
    return quantize_and_calibrate(model, [torch.randn(2, 3, 16, 16) for _ in range(2)], w_bits,
                                  a_bits, **cfg)


def graph_index(model):
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return producer, consumers, inits


def attr(node, name, default=None):
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name),
                default)


def check_weight_qdq(model):
    """Every Conv weight: float initializer -> Q -> DQ (per channel, axis 0/1, int8 zero 0)."""
    producer, _, inits = graph_index(model)
    convs = [n for n in model.graph.node if n.op_type in ('Conv', 'ConvTranspose')]
    assert convs
    for conv in convs:
        dq = producer[conv.input[1]]
        assert dq.op_type == 'DequantizeLinear', conv.name
        q = producer[dq.input[0]]
        assert q.op_type == 'QuantizeLinear' and q.input[0] in inits, conv.name
        weight, scale, zero = inits[q.input[0]], inits[dq.input[1]], inits[dq.input[2]]
        assert weight.dtype == np.float32 and zero.dtype == np.int8 and not zero.any()
        if conv.op_type == 'ConvTranspose' and scale.size == 1:
            continue  # per-tensor transposed conv (the TensorRT-friendly choice)
        axis = 1 if conv.op_type == 'ConvTranspose' else 0  # the output channels
        assert attr(dq, 'axis') == axis and scale.shape == (weight.shape[axis], )
    return len(convs)


def quant_scales_downstream(tensor, consumers, inits, seen=None):
    """Scales of the Q nodes reading ``tensor`` directly or through Clip/Concat/MaxPool."""
    seen = set() if seen is None else seen
    scales = set()
    for node in consumers.get(tensor, []):
        if id(node) in seen:
            continue
        seen.add(id(node))
        if node.op_type == 'QuantizeLinear':
            scales.add(float(inits[node.input[1]]))
        elif node.op_type in ('Clip', 'Concat', 'MaxPool'):
            scales |= quant_scales_downstream(node.output[0], consumers, inits, seen)
    return scales


def concat_input_scale(tensor, producer, inits):
    """Scale of the DQ a Concat input comes from, directly or through MaxPools."""
    node = producer.get(tensor)
    while node is not None and node.op_type == 'MaxPool':
        node = producer.get(node.input[0])
    assert node is not None and node.op_type == 'DequantizeLinear', f'{tensor} is not quantized'
    return float(inits[node.input[1]])


def check_concat_and_maxpool_rules(model):
    """Concat inputs: DQ outputs (or MaxPools of them) of ONE scale, also used after the Concat;
    nothing quantizes a MaxPool output again."""
    producer, consumers, inits = graph_index(model)
    concats = [n for n in model.graph.node if n.op_type == 'Concat']
    for concat in concats:
        scales = {concat_input_scale(t, producer, inits) for t in concat.input}
        assert len(scales) == 1, (concat.name, scales)
        assert quant_scales_downstream(concat.output[0], consumers, inits) <= scales
    for pool in (n for n in model.graph.node if n.op_type == 'MaxPool'):
        after = {n.op_type for n in consumers.get(pool.output[0], [])}
        assert not after & {'QuantizeLinear', 'DequantizeLinear', 'Clip'}, pool.name
    return len(concats)


# ---------------------------------------------------------------- tiny net
def _cpu_has_vnni() -> bool:
    """True if the CPU has VNNI (onnxruntime's exact u8s8 integer dot products)."""
    try:
        with open('/proc/cpuinfo') as f:
            flags = f.read()
    except OSError:
        return True  # not Linux: keep the check
    return 'vnni' in flags


def test_tiny_net_follows_tensorrt_placement_and_matches_pytorch(tmp_path):
    q = tiny_quantized()
    # the calibrated scales differ across the concat: unification has work to do
    assert float(q.conv_a.input_quantizer.scale) < float(q.conv3.input_quantizer.scale)
    result = export_qdq_onnx(q, str(tmp_path / 'tiny.onnx'), (1, 3, 16, 16))
    model = onnx.load(str(tmp_path / 'tiny.onnx'))
    assert model.opset_import[0].version >= 13
    assert check_weight_qdq(model) == 5
    assert check_concat_and_maxpool_rules(model) == 1
    assert len(result.groups) == 1 and result.groups[0]['chosen'].endswith('conv3.input_qdq')
    # the maxpool -> conv4 path: the Q/DQ sits before the MaxPool, which feeds the conv
    producer, consumers, _ = graph_index(model)
    conv4 = next(n for n in model.graph.node if n.output[0] == 'output2')
    pool = producer[conv4.input[0]]
    assert pool.op_type == 'MaxPool' and producer[pool.input[0]].op_type == 'DequantizeLinear'
    # a is quantized once for conv2 and conv_a (equal chains merged)
    assert sum(n.op_type == 'QuantizeLinear' for n in model.graph.node) == 4 + 5
    # the only TensorRT issue left is the config's asymmetric (uint8) activations
    assert len(result.tensorrt_issues) == 1 and 'symmetric' in result.tensorrt_issues[0]

    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        reference = result.reference(x)
    outs = run_session(make_session(str(tmp_path / 'tiny.onnx'), 1, optimize=False), x)
    for out, ref in zip(outs, reference):
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    if not _cpu_has_vnni():
        pytest.skip('optimized onnxruntime check needs a VNNI CPU: the AVX2-only u8s8 '
                    'kernel saturates int16 sums (measured max diff 0.17 here); the '
                    'as-written graph above matched to 1e-5')
    # ORT's integer kernels round the bias to int32 (scale s_in * s_w): a few codes move
    # by one step (measured: 0.1-2 % of the outputs, at most ~0.0035)
    outs = run_session(make_session(str(tmp_path / 'tiny.onnx'), 1), x)
    for out, ref in zip(outs, reference):
        diff = (out - ref).abs()
        assert diff.max() < 0.02 and diff.mean() < 1e-4


def test_without_unification_the_export_is_the_fake_quant_model():
    q = tiny_quantized()
    result = export_qdq_onnx(q, None, (1, 3, 16, 16), unify=False)
    assert not result.groups and any('carry 2 scales' in i for i in result.tensorrt_issues)
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        reference = q(x)
    for out, ref in zip(run_session(make_session(result.model, 1, False), x), reference):
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


def test_symmetric_int8_export_satisfies_every_tensorrt_rule():
    q = tiny_quantized(act=dict(symmetric=True))
    result = export_qdq_onnx(q, None, (1, 3, 16, 16))
    assert result.tensorrt_issues == []
    zeros = [numpy_helper.to_array(i) for i in result.model.graph.initializer
             if i.name.endswith('zero_point')]
    assert zeros and all(z.dtype == np.int8 and not z.any() for z in zeros)


def test_low_bit_export_keeps_the_low_bit_grid():
    q = tiny_quantized(w_bits=4, a_bits=4)
    result = export_qdq_onnx(q, None, (1, 3, 16, 16))
    assert any('4-bit grid' in n and 'weights' in n for n in result.notes)
    assert any('4-bit grid' in n and 'activations' in n for n in result.notes)
    model = result.model
    producer, consumers, inits = graph_index(model)
    for conv in (n for n in model.graph.node if n.op_type == 'Conv'):
        dq = producer[conv.input[1]]
        codes = inits[producer[dq.input[0]].input[0]] / inits[dq.input[1]].reshape(-1, 1, 1, 1)
        assert np.abs(codes - codes.round()).max() < 1e-3
        assert codes.round().min() >= -7 and codes.round().max() <= 7
    # every activation DQ output, read back from onnxruntime, holds 4-bit codes
    dqs = [n for n in model.graph.node if n.op_type == 'DequantizeLinear'
           and n.input[0] in producer and producer[n.input[0]].input[0] not in inits]
    assert len(dqs) == 4 and all(producer[producer[d.input[0]].input[0]].op_type == 'Clip'
                                 for d in dqs)
    for dq in dqs:
        model.graph.output.append(onnx.helper.make_tensor_value_info(
            dq.output[0], onnx.TensorProto.FLOAT, None))
    session = make_session(model, 1)
    x = torch.randn(4, 3, 16, 16) * 3  # beyond the calibrated range: the clip must act
    values = dict(zip([o.name for o in session.get_outputs()], run_session(session, x)))
    for dq in dqs:
        codes = values[dq.output[0]].numpy() / inits[dq.input[1]] + inits[dq.input[2]]
        assert np.abs(codes - codes.round()).max() < 1e-3
        assert codes.round().min() >= 0 and codes.round().max() == 15
    with torch.no_grad():
        reference = result.reference(x)
    for out, ref in zip(run_session(make_session(result.model, 1, False), x), reference):
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


def test_cfws_exports_the_coarse_centre_as_a_1x1_conv():
    q = tiny_quantized(w_bits=4, cfws='all')
    result = export_qdq_onnx(q, None, (1, 3, 16, 16))
    convs = [n for n in result.model.graph.node if n.op_type == 'Conv']
    assert len(convs) == 5 + 3  # conv1, conv2, conv3 are 3x3: each gets a centre 1x1
    assert sum(attr(c, 'kernel_shape') == [1, 1] for c in convs) == 2 + 3
    check_weight_qdq(result.model)
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        reference = result.reference(x)
    for out, ref in zip(run_session(make_session(result.model, 1, False), x), reference):
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


def test_adaround_weights_are_exported_as_the_learned_integers():
    adaround = pytest.importorskip('detptq.reconstruction.adaround')
    q = tiny_quantized(w_bits=4)
    base = q.conv2.weight_quantizer
    rounder = adaround.AdaRoundQuantizer(base, q.conv2.weight.detach())
    torch.manual_seed(1)
    rounder.v.data = torch.randn_like(rounder.v)  # decisions unlike nearest rounding
    q.conv2.weight_quantizer = rounder
    result = export_qdq_onnx(q, None, (1, 3, 16, 16))
    _, _, inits = graph_index(result.model)
    scale = base.scale.reshape(-1, 1, 1, 1)
    expected = torch.clamp(torch.floor(q.conv2.weight / scale) + (rounder.v >= 0).float(),
                           base.qmin, base.qmax)
    codes = torch.tensor(inits['model.conv2.weight']) / scale
    torch.testing.assert_close(codes, expected.detach(), rtol=0, atol=1e-3)
    nearest = torch.clamp(torch.round(q.conv2.weight / scale), base.qmin, base.qmax)
    assert (expected != nearest).any()


# ------------------------------------------------------------- YOLOv6-N
@pytest.fixture(scope='module')
def yolov6n(tmp_path_factory):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import detptq.models  # noqa: F401
    from detptq.registry import MODELS
    init_default_scope('detptq')
    cfg = Config.fromfile(os.path.join(REPO, 'configs', '_base_', 'models', 'yolov6_n.py'))
    cfg.model.bbox_head.num_classes = 3
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    for conv in list(model.bbox_head.cls_preds) + list(model.bbox_head.reg_preds):
        nn.init.normal_(conv.weight, std=0.05)  # the zero init would make outputs constant
    for conv in model.bbox_head.cls_preds:
        nn.init.constant_(conv.bias, -2.0)  # scores around 0.1: above the 0.03 threshold
    quant_cfg = dict(w_bits=8, a_bits=8)
    q = quantize_model(model, quant_cfg)
    calibrate(q, [torch.rand(2, 3, 64, 64) for _ in range(2)], 2,
              forward_fn=lambda m, b: m(b, mode='tensor'), progress=False)
    path = str(tmp_path_factory.mktemp('q') / 'quantized.pth')
    save_checkpoint_file({'state_dict': q.state_dict(),
                          'meta': {'quant_cfg': '{"w_bits": 8, "a_bits": 8}', 'config': ''}},
                         path)
    return cfg, q, path


def test_quantized_checkpoint_round_trip_and_errors(yolov6n, tmp_path):
    cfg, q, path = yolov6n
    loaded = load_quantized_model(cfg, path)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(DetectorExportWrapper(loaded)(x), DetectorExportWrapper(q)(x)):
            torch.testing.assert_close(a, b)
    fp_path = str(tmp_path / 'fp.pth')
    save_checkpoint_file({'state_dict': {'w': torch.zeros(1)}, 'meta': {}}, fp_path)
    with pytest.raises(NotQuantizedCheckpoint, match='not a quantized checkpoint'):
        read_quantized_checkpoint(fp_path)


def test_quant_cfg_version_is_checked(yolov6n, tmp_path):
    from detptq.quantization import QCONFIG_VERSION, quant_cfg_meta
    cfg, q, path = yolov6n
    # a file without a version key (every quantized.pth so far) reads as version 1
    assert QCONFIG_VERSION == 1 and 'quant_cfg_version' not in quant_cfg_meta(dict(w_bits=8))
    assert read_quantized_checkpoint(path)[1] == dict(w_bits=8, a_bits=8)
    newer = str(tmp_path / 'newer.pth')
    save_checkpoint_file({'state_dict': q.state_dict(),
                          'meta': {'quant_cfg': '{"w_bits": 8}', 'quant_cfg_version': 2}}, newer)
    with pytest.raises(NotQuantizedCheckpoint, match=r"newer\.pth.*version 2.*reads version 1"):
        load_quantized_model(cfg, newer)


def test_yolov6n_export_agrees_with_pytorch_and_evaluates(yolov6n, tmp_path):
    cfg, q, _ = yolov6n
    result = export_qdq_onnx(q, str(tmp_path / 'y.onnx'), (1, 3, 64, 64))
    assert check_weight_qdq(result.model) > 60
    assert check_concat_and_maxpool_rules(result.model) >= 5
    session = make_session(str(tmp_path / 'y.onnx'), 1, optimize=False)
    gen = torch.Generator().manual_seed(0)
    images = [torch.rand(2, 3, 64, 64, generator=gen) for _ in range(2)]
    stats = compare_with_pytorch(session, {'export': result.reference}, q.bbox_head, images,
                                 decode=False)['export']
    # measured: scores max ~1e-5, boxes max ~2e-3 px (a few one-step code flips)
    assert stats['images'] == 4
    assert stats['scores_max_abs'] < 1e-4 and stats['scores_mean_abs'] < 1e-5
    assert stats['boxes_max_abs'] < 0.05 and stats['boxes_mean_abs'] < 2e-3  # pixels

    # test_step through the head's own NMS gives the PyTorch model's detections
    from mmdet.structures import DetDataSample
    sample = DetDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64),
                                         scale_factor=(1.0, 1.0), pad_param=[0, 0, 0, 0]))
    data = dict(inputs=[(torch.rand(3, 64, 64) * 255).to(torch.uint8)],
                data_samples=[sample])
    deployed = make_session(str(tmp_path / 'y.onnx'), 1)  # optimized: integer kernels
    onnx_det = OnnxDetector(deployed, q, decode=False).test_step(data)[0].pred_instances
    torch_det = q.test_step(dict(inputs=data['inputs'],
                                 data_samples=[sample.clone()]))[0].pred_instances
    assert len(onnx_det) > 0 and abs(len(onnx_det) - len(torch_det)) <= 2
    torch.testing.assert_close(onnx_det.scores[:10], torch_det.scores[:10], rtol=0, atol=1e-3)

    # asymmetric activations and per-output-channel transposed convs are flagged
    assert any('symmetric' in i for i in result.tensorrt_issues)
    assert sum('ConvTranspose' in i for i in result.tensorrt_issues) == 2

    decoded = export_qdq_onnx(q, None, (1, 3, 64, 64), decode=True)
    assert decoded.output_names == ['boxes', 'scores']
    boxes, scores = run_session(make_session(decoded.model, 1, False), images[0])
    raw_scores, raw_boxes = dense_predictions(q.bbox_head, run_session(session, images[0]),
                                              decode=False)
    assert scores.shape == (2, 8 * 8 + 4 * 4 + 2 * 2, 3) and boxes.shape == (2, 84, 4)
    torch.testing.assert_close(scores, raw_scores, rtol=0, atol=1e-3)
    torch.testing.assert_close(boxes, raw_boxes, rtol=0, atol=1.0)


def _tool_main():
    sys.path.insert(0, os.path.join(REPO, 'tools'))
    try:
        from export_onnx import main
    finally:
        sys.path.pop(0)
    return main


def test_yolov6n_tensorrt_config_satisfies_every_rule(yolov6n):
    cfg, _, _ = yolov6n
    from detptq.registry import MODELS
    model = MODELS.build(cfg.model).eval()
    q = quantize_model(model, dict(backend='tensorrt'))  # configs/_base_/ptq/tensorrt.py
    calibrate(q, [torch.rand(2, 3, 64, 64)], 1, forward_fn=lambda m, b: m(b, mode='tensor'),
              progress=False)
    result = export_qdq_onnx(q, None, (1, 3, 64, 64))
    assert result.tensorrt_issues == []
    check_weight_qdq(result.model)
    check_concat_and_maxpool_rules(result.model)


def test_tool_exports_and_reports_clear_errors(yolov6n, tmp_path):
    from detptq.utils.cli import expected_error_types
    cfg, _, path = yolov6n
    main = _tool_main()
    config = str(tmp_path / 'tiny_yolov6n.py')
    cfg.dump(config)
    out = str(tmp_path / 'model.onnx')
    assert main([config, '--checkpoint', path, '--out', out, '--shape', '64', '64']) == 0
    check_weight_qdq(onnx.load(out))
    assert os.path.isfile(out + '.json')
    # expected errors (run_tool prints them as one `export_onnx.py: error:` line)
    with pytest.raises(expected_error_types(), match='nope.pth.* does not exist'):
        main([config, '--checkpoint', str(tmp_path / 'nope.pth')])
    with pytest.raises(expected_error_types(), match='nope.py.* does not exist'):
        main([str(tmp_path / 'nope.py'), '--checkpoint', path])
    fp_path = str(tmp_path / 'fp.pth')
    save_checkpoint_file({'state_dict': {'w': torch.zeros(1)}}, fp_path)
    with pytest.raises(expected_error_types(), match='not a quantized checkpoint'):
        main([config, '--checkpoint', fp_path])


def ort_optimized_ops(model, tmp_path):
    """Op counts of the graph onnxruntime runs after its Q/DQ fusions."""
    import collections

    import onnxruntime as ort
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / 'optimized.onnx')
    options.log_severity_level = 3
    ort.InferenceSession(model.SerializeToString(), options, providers=['CPUExecutionProvider'])
    return collections.Counter(n.op_type for n in onnx.load(options.optimized_model_filepath)
                               .graph.node)


def test_conv_outputs_make_every_inner_conv_an_integer_op(yolov6n, tmp_path):
    from detptq.export.conv_outputs import float_output_convs
    cfg, q, _ = yolov6n
    gen = torch.Generator().manual_seed(1)
    images = [torch.rand(2, 3, 64, 64, generator=gen) for _ in range(2)]
    plain = export_qdq_onnx(q, None, (1, 3, 64, 64))
    result = export_qdq_onnx(q, None, (1, 3, 64, 64), conv_output_images=images)
    head_convs = len(q.bbox_head.cls_preds) + len(q.bbox_head.reg_preds)  # graph outputs
    assert len(float_output_convs(plain.model)) == len(result.int8_output_convs) > 0
    assert float_output_convs(result.model) == []
    before, after = ort_optimized_ops(plain.model, tmp_path), ort_optimized_ops(
        result.model, tmp_path)
    assert before['Conv'] == head_convs + len(result.int8_output_convs)
    assert after['Conv'] == head_convs  # only the prediction convs stay in float
    assert after['QLinearConv'] == before['QLinearConv'] + len(result.int8_output_convs)
    # ORT follows the export form (with the extra rounding) as closely as the plain export
    session = make_session(result.model, 1, optimize=False)
    references = {'export': result.reference, 'fake': DetectorExportWrapper(q).eval()}
    stats = compare_with_pytorch(session, references, q.bbox_head, images, decode=False)
    assert stats['export']['scores_max_abs'] < 1e-4 and stats['export']['boxes_mean_abs'] < 2e-3
    assert stats['fake']['scores_mean_abs'] < 0.01  # the extra rounding, small at 8 bits
