"""Check an exported ONNX model: onnxruntime vs the PyTorch fake-quant model, and its COCO mAP.

- :func:`compare_with_pytorch` runs both on the same preprocessed images and
  reports max / mean absolute differences of the dense class scores
  (probabilities) and decoded boxes (input pixels), before NMS.
- :class:`OnnxDetector` exposes ``test_step`` (data preprocessor -> ORT -> the
  head's own ``predict_by_feat`` / NMS), so ``detptq.utils.evaluation.evaluate``
  scores the ONNX model through mmdet's CocoMetric exactly like a PyTorch model.

Why the two never agree bit for bit: ORT's and PyTorch's convolutions sum in a
different order (~1e-7 relative), so a few pre-activations land on the other
side of a rounding boundary and their codes differ by one step; deeper layers
see those flips as input noise. Agreement is therefore "same codes almost
everywhere", measured by the figures here, not exact equality.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from detptq.quantization.calibration_set import CalibrationSet
from .onnx_qdq import INPUT_NAME, decode_dense


def make_session(model_or_path, threads: Optional[int] = None, optimize: bool = True):
    """An onnxruntime CPU session (``threads``: intra-op threads; ``optimize``: ORT fusions)."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = model_or_path.SerializeToString() if hasattr(model_or_path, 'SerializeToString') \
        else model_or_path
    return ort.InferenceSession(source, options, providers=['CPUExecutionProvider'])


def run_session(session, images: torch.Tensor) -> List[torch.Tensor]:
    """Run the session on a (B, 3, H, W) batch; outputs as tensors in graph order."""
    outputs = session.run(None, {INPUT_NAME: images.detach().cpu().float().numpy()})
    return [torch.from_numpy(np.asarray(o)) for o in outputs]


def dense_predictions(head: nn.Module, outputs: Sequence[torch.Tensor],
                      decode: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(scores (B, N, C), boxes (B, N, 4))`` from raw head maps or from decoded outputs."""
    if decode:
        boxes, scores = outputs
        return scores, boxes
    levels = len(outputs) // 2
    return decode_dense(head, list(outputs[:levels]), list(outputs[levels:]))


def _diff_stats(a: torch.Tensor, b: torch.Tensor) -> Tuple[float, float]:
    diff = (a.double() - b.double()).abs()
    return float(diff.max()), float(diff.mean())


@torch.no_grad()
def compare_with_pytorch(session, references: Dict[str, nn.Module], head: nn.Module,
                         batches: Iterable[torch.Tensor], decode: bool) -> Dict[str, Dict]:
    """Max/mean |ORT - PyTorch| of scores and boxes, per reference model.

    ``references`` maps a label to a module with the exported graph's signature
    (e.g. ``DetectorExportWrapper``); ``batches`` yields preprocessed images
    (e.g. a ``CalibrationSet``).
    """
    sums = {k: dict(scores_max=0.0, scores_sum=0.0, boxes_max=0.0, boxes_sum=0.0, n=0)
            for k in references}
    images = 0
    for batch in batches:
        images += batch.shape[0]
        ort_scores, ort_boxes = dense_predictions(head, run_session(session, batch), decode)
        for label, module in references.items():
            out = module(batch)
            scores, boxes = dense_predictions(head, list(out), decode)
            acc = sums[label]
            s_max, s_mean = _diff_stats(ort_scores, scores)
            b_max, b_mean = _diff_stats(ort_boxes, boxes)
            acc['scores_max'] = max(acc['scores_max'], s_max)
            acc['boxes_max'] = max(acc['boxes_max'], b_max)
            acc['scores_sum'] += s_mean * batch.shape[0]
            acc['boxes_sum'] += b_mean * batch.shape[0]
            acc['n'] += batch.shape[0]
    if not images:
        raise ValueError('compare_with_pytorch: no images')
    return {label: dict(images=acc['n'], scores_max_abs=acc['scores_max'],
                        scores_mean_abs=acc['scores_sum'] / acc['n'],
                        boxes_max_abs=acc['boxes_max'],
                        boxes_mean_abs=acc['boxes_sum'] / acc['n'])
            for label, acc in sums.items()}


class OnnxDetector(nn.Module):
    """An ONNX session behind mmdet's ``test_step``: preprocess -> ORT -> head post-processing.

    ``detector`` supplies the data preprocessor, the head (decoding, NMS and
    letterbox un-mapping: ``predict_by_feat`` / ``postprocess_batch``) and
    ``add_pred_to_datasample``; its own weights are not used.
    """

    def __init__(self, session, detector: nn.Module, decode: bool) -> None:
        super().__init__()
        self.session = session
        self.data_preprocessor = detector.data_preprocessor
        self.bbox_head = detector.bbox_head
        self._detector = [detector]  # not a submodule: its weights play no part
        self.decode = decode

    @torch.no_grad()
    def test_step(self, data: dict) -> list:
        """Detections of one data-loader batch as DetDataSamples (``pred_instances``)."""
        data = self.data_preprocessor(data, False)
        samples = data['data_samples']
        metas = [s.metainfo for s in samples]
        outputs = run_session(self.session, data['inputs'])
        head = self.bbox_head
        if self.decode:
            from detptq.models.dense_heads.yolo_postprocess import postprocess_batch
            boxes, scores = outputs
            results = postprocess_batch(boxes, scores, metas, head.test_cfg, rescale=True)
        else:
            levels = len(outputs) // 2
            results = head.predict_by_feat(list(outputs[:levels]), list(outputs[levels:]),
                                           batch_img_metas=metas, rescale=True)
        return self._detector[0].add_pred_to_datasample(samples, results)


def build_test_loader_and_evaluator(cfg):
    """Data loader and CocoMetric evaluator of ``cfg.test_dataloader`` / ``cfg.test_evaluator``."""
    from mmengine.evaluator import Evaluator
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner

    import detptq.datasets  # noqa: F401  (registers the data transforms)
    init_default_scope(cfg.get('default_scope', 'detptq'))
    loader = Runner.build_dataloader(cfg.test_dataloader)
    evaluator = Evaluator(cfg.test_evaluator)
    evaluator.dataset_meta = loader.dataset.metainfo
    return loader, evaluator


def evaluate_onnx(session, detector: nn.Module, cfg, decode: bool) -> Dict[str, float]:
    """COCO metrics of the ONNX model on ``cfg``'s test split (same path as the PyTorch eval)."""
    from detptq.utils.evaluation import evaluate, short_metrics
    loader, evaluator = build_test_loader_and_evaluator(cfg)
    metrics = evaluate(OnnxDetector(session, detector, decode), loader, evaluator,
                       desc='eval ONNX')
    return short_metrics(metrics)


def calibration_images(cfg, detector: nn.Module, num_images: int) -> CalibrationSet:
    """Up to ``num_images`` calibration images as ``detector``'s inputs, in the loader's batches."""
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner

    import detptq.datasets  # noqa: F401
    if cfg.get('calib_dataloader') is None:
        raise ValueError('the config has no calib_dataloader')
    init_default_scope(cfg.get('default_scope', 'detptq'))
    loader = Runner.build_dataloader(cfg.calib_dataloader)
    return CalibrationSet.from_loader(loader, detector.data_preprocessor,
                                      num_images=num_images).first(num_images)
