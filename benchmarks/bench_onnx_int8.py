"""Latency of FP32 ONNX vs Q/DQ INT8 ONNX of the same YOLOv6-N in onnxruntime on this CPU.

    python benchmarks/bench_onnx_int8.py                 # 320 px, batch 1, 1 thread
    python benchmarks/bench_onnx_int8.py --threads 2 --repeats 50

Model: the demo YOLOv6-N (``checkpoints/yolov6n_demo.pth`` with
``configs/demo/yolov6n_demo.py``) when both exist, else a randomly initialised
YOLOv6-N (80 classes); latency does not depend on the weight values. Both
ONNX files are exported from the same fused model (the INT8 one after W8A8
MinMax calibration on random images, asymmetric uint8 activations / int8
weights: onnxruntime's preferred CPU form) and run with the same session
options on the same images. FP32 and INT8 runs are interleaved so that load
from other processes hits both alike; min and median over the repeats are
reported, and the INT8/FP32 ratio of each.

Two INT8 graphs are timed: ``int8`` is the plain export (the fake-quant model's
Q/DQ placement: convs whose output feeds a float op, the head's SiLU convs,
run as float Conv in onnxruntime) and ``int8_convout`` adds a calibrated output
Q/DQ to those convs (``--int8-conv-outputs`` of tools/export_onnx.py), so
onnxruntime runs them as QLinearConv too.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import statistics
import sys
import tempfile
import time
from collections import Counter
from typing import Dict, List, Tuple

import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIG = osp.join(REPO, 'configs', 'demo', 'yolov6n_demo.py')
DEMO_CHECKPOINT = osp.join(REPO, 'checkpoints', 'yolov6n_demo.pth')
MODEL_CONFIG = osp.join(REPO, 'configs', '_base_', 'models', 'yolov6_n.py')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='FP32 vs INT8 Q/DQ ONNX latency (onnxruntime).')
    parser.add_argument('--size', type=int, default=320, help='input height = width')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--threads', type=int, default=1, help='onnxruntime intra-op threads')
    parser.add_argument('--repeats', type=int, default=30)
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--act-symmetric', action='store_true',
                        help='int8 symmetric activations (TensorRT form) instead of uint8')
    parser.add_argument('--out-dir', help='keep the ONNX files here (default: a temp dir)')
    parser.add_argument('--json', help='write the figures to this file')
    return parser.parse_args()


def build_model() -> Tuple[torch.nn.Module, str]:
    """(FP detector, description): the demo model if present, else a random YOLOv6-N."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import detptq.models  # noqa: F401
    from detptq.models.deploy import switch_to_deploy
    from detptq.registry import MODELS
    from detptq.utils.checkpoint import (is_deploy_checkpoint, load_checkpoint_file,
                                         state_dict_of)
    init_default_scope('detptq')
    if osp.isfile(DEMO_CHECKPOINT) and osp.isfile(DEMO_CONFIG):
        try:
            model = MODELS.build(Config.fromfile(DEMO_CONFIG).model).eval()
            if is_deploy_checkpoint(DEMO_CHECKPOINT):
                switch_to_deploy(model)
            model.load_state_dict(state_dict_of(load_checkpoint_file(DEMO_CHECKPOINT)))
            return model, f'demo YOLOv6-N ({osp.relpath(DEMO_CHECKPOINT, REPO)})'
        except Exception as err:  # noqa: BLE001 - fall back, and say so below
            print(f'demo model not usable ({err}); using a random YOLOv6-N')
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(MODEL_CONFIG).model).eval()
    for conv in list(model.bbox_head.cls_preds) + list(model.bbox_head.reg_preds):
        torch.nn.init.normal_(conv.weight, std=0.01)
    return model, 'randomly initialised YOLOv6-N (80 classes)'


def time_sessions(sessions: Dict[str, object], images, repeats: int,
                  warmup: int) -> Dict[str, List[float]]:
    """Interleaved wall-clock latencies (ms) of each session on the same input."""
    feed = {'images': images}
    for _ in range(warmup):
        for session in sessions.values():
            session.run(None, feed)
    times: Dict[str, List[float]] = {k: [] for k in sessions}
    for _ in range(repeats):
        for name, session in sessions.items():
            start = time.perf_counter()
            session.run(None, feed)
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def ort_kernel_counts(path: str, threads: int) -> Counter:
    """Op types of the graph onnxruntime actually runs (after its Q/DQ fusions)."""
    import onnx
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    optimized = path + '.ort_optimized.onnx'
    options.optimized_model_filepath = optimized
    options.log_severity_level = 3  # no warning about hardware-specific saved graphs
    ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
    counts = Counter(n.op_type for n in onnx.load(optimized).graph.node)
    os.remove(optimized)
    return counts


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)  # export only; the timed work is onnxruntime's
    from detptq.export import export_qdq_onnx
    from detptq.export.verify import make_session, run_session
    from detptq.quantization import calibrate, quantize_model
    import onnxruntime as ort

    model, what = build_model()
    act = dict(symmetric=True) if args.act_symmetric else dict(symmetric=False)
    model_q = quantize_model(model, dict(w_bits=8, a_bits=8, act=act))
    gen = torch.Generator().manual_seed(0)
    calib = [torch.rand(2, 3, args.size, args.size, generator=gen) for _ in range(4)]
    calibrate(model_q, calib, len(calib), forward_fn=lambda m, b: m(b, mode='tensor'),
              progress=False)
    out_dir = args.out_dir or tempfile.mkdtemp(prefix='bench_onnx_')
    os.makedirs(out_dir, exist_ok=True)
    shape = (args.batch, 3, args.size, args.size)
    paths = {'fp32': osp.join(out_dir, 'yolov6n_fp32.onnx'),
             'int8': osp.join(out_dir, 'yolov6n_int8_qdq.onnx'),
             'int8_convout': osp.join(out_dir, 'yolov6n_int8_qdq_convout.onnx')}
    export_qdq_onnx(model_q, paths['fp32'], shape, quantize=False)
    export_qdq_onnx(model_q, paths['int8'], shape, quantize=True)
    convout = export_qdq_onnx(model_q, paths['int8_convout'], shape, quantize=True,
                              conv_output_images=calib)

    sessions = {k: make_session(p, args.threads) for k, p in paths.items()}
    images = torch.rand(*shape, generator=gen)
    outputs = {k: run_session(sessions[k], images) for k in sessions}
    score_diff = {k: max(float((a.sigmoid() - b.sigmoid()).abs().max())
                         for a, b in zip(outputs['fp32'][:3], outputs[k][:3]))
                  for k in ('int8', 'int8_convout')}
    times = time_sessions(sessions, images.numpy(), args.repeats, args.warmup)
    summary = {k: dict(min_ms=min(v), median_ms=statistics.median(v)) for k, v in times.items()}
    ratios = {k: dict(min=summary[k]['min_ms'] / summary['fp32']['min_ms'],
                      median=summary[k]['median_ms'] / summary['fp32']['median_ms'])
              for k in ('int8', 'int8_convout')}
    kernels = {k: ort_kernel_counts(paths[k], args.threads) for k in ('int8', 'int8_convout')}

    print(f'model: {what}; calibration: {len(calib) * 2} random images (W8A8 MinMax, '
          f'{"int8 symmetric" if args.act_symmetric else "uint8 asymmetric"} activations)')
    print(f'onnxruntime {ort.__version__}, CPU, {args.threads} thread(s), input {shape}, '
          f'{args.repeats} repeats after {args.warmup} warm-up runs, interleaved')
    print(f'load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores '
          '(other jobs share this CPU)')
    for name in sessions:
        s = summary[name]
        print(f'  {name.upper():12s} min {s["min_ms"]:8.2f} ms   median {s["median_ms"]:8.2f} ms')
    caveat = '' if what.startswith('demo') else \
        ' (random weights: scores sit near the prior, this only shows the graph runs)'
    for name in ('int8', 'int8_convout'):
        integer_ops = {k: v for k, v in kernels[name].items()
                       if k.startswith(('QLinear', 'ConvInteger', 'MatMulInteger'))}
        print(f'  {name.upper()}/FP32 ratio: min {ratios[name]["min"]:.3f}   median '
              f'{ratios[name]["median"]:.3f}; onnxruntime ran '
              f'{integer_ops or "no integer kernels"} (Conv left in float: '
              f'{kernels[name].get("Conv", 0)}); max |sigmoid score| difference vs FP32: '
              f'{score_diff[name]:.3g}{caveat}')
    print(f'  INT8_CONVOUT: {len(convout.int8_output_convs)} convs got an output Q/DQ')
    if args.json:
        from detptq.utils.io import write_json_atomic
        write_json_atomic(dict(model=what, input_shape=list(shape), threads=args.threads,
                               repeats=args.repeats, latency=summary, ratios=ratios,
                               ort_kernels={k: dict(v) for k, v in kernels.items()},
                               onnxruntime=ort.__version__), args.json, indent=2)


if __name__ == '__main__':
    sys.path.insert(0, REPO)
    main()
