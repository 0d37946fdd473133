"""Helpers shared by several test files: config-built detectors, random BN, tiny quantized nets."""
import os
from pathlib import Path
from typing import Optional, Sequence

import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from torch import nn

import detptq.models  # noqa: F401  (registers everything)
from detptq.quantization import calibrate, quantize_model
from detptq.registry import MODELS

MODEL_CFG_DIR = os.path.join(os.path.dirname(__file__), '..', 'configs', '_base_', 'models')


def build_model(name: str, overrides: Optional[dict] = None) -> nn.Module:
    """The detector of ``configs/_base_/models/<name>.py`` (train mode), ``overrides`` merged in."""
    init_default_scope('detptq')  # as the runner does from default_scope
    cfg = Config.fromfile(os.path.join(MODEL_CFG_DIR, name + '.py'))
    if overrides:
        cfg.merge_from_dict({'model': overrides})
    return MODELS.build(cfg.model)


@torch.no_grad()
def randomise_bn_(bn: nn.BatchNorm2d, gen: torch.Generator) -> None:
    """Non-trivial running statistics and affine parameters for one BN (eval-mode folding)."""
    n = bn.num_features
    bn.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
    bn.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
    bn.weight.copy_(torch.rand(n, generator=gen) + 0.5)
    bn.bias.copy_(torch.rand(n, generator=gen) - 0.5)


def randomise_bn(model: nn.Module, seed: int = 0) -> None:
    """:func:`randomise_bn_` on every BatchNorm2d of ``model``, from one seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            randomise_bn_(m, gen)


def quantize_and_calibrate(model: nn.Module, data: Sequence[torch.Tensor], w_bits: int,
                           a_bits: int, **cfg) -> nn.Module:
    """``model`` quantized at the same bits everywhere (no first/last special case), calibrated
    on every batch of ``data``; ``cfg`` adds quantization settings."""
    q = quantize_model(model, dict(w_bits=w_bits, a_bits=a_bits, first_last_bits=None, **cfg))
    calibrate(q, data, num_batches=len(data), progress=False)
    return q


# The loaders of a tiny PTQ config over 96-px generated data (``data_root`` set
# before it); the PTQ tests append it to their own head lines.
TINY_PTQ_LOADERS = """
num_calib_images = 4
# random weights score ~0.01 (prior); a low threshold still exercises COCO eval
model = dict(bbox_head=dict(test_cfg=dict(score_thr=0.001)))
_pipe = [dict(type='LoadImageFromFile'),
         dict(type='YOLOLetterbox', scale=(96, 96), pad_val=114),
         dict(type='LoadAnnotations', with_bbox=True),
         dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape',
              'img_shape', 'scale_factor', 'pad_param'))]
_loader = dict(batch_size=2, num_workers=0, persistent_workers=False)
test_dataloader = dict(_loader, dataset=dict(data_root=data_root, pipeline=_pipe))
calib_dataloader = dict(_loader, dataset=dict(data_root=data_root, pipeline=_pipe))
test_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
"""


def tiny_data_and_checkpoint(tmp: Path, tiny_data: dict) -> tuple:
    """Generate a tiny demo data set under ``tmp/data`` and a random-weight YOLOv6-N deploy checkpoint."""
    from detptq.datasets.demo_data import ensure_demo_dataset
    from detptq.utils.checkpoint import save_checkpoint_file
    data = tmp / 'data'
    ensure_demo_dataset(data, **tiny_data)
    repo = Path(__file__).resolve().parents[1]
    cfg = Config.fromfile(str(repo / 'configs/demo/yolov6n_demo.py'))
    init_default_scope('detptq')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.switch_to_deploy()
    ckpt = tmp / 'tiny.pth'
    save_checkpoint_file({'state_dict': model.state_dict()}, str(ckpt))
    return data, ckpt
