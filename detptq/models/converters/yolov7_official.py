"""Official YOLOv7 ``model.N.*`` keys -> detptq YOLOv7 module names.

The official model is an ``nn.Sequential`` built from the yaml layer list, so
its keys are ``model.<layer index>.<attr>``. The tables below follow
``cfg/training/yolov7.yaml`` (L: 106 layers, IDetect = 105) and
``cfg/training/yolov7-tiny.yaml`` (77 layers + IDetect = 77); the deploy
yamls have the same indices with ``Detect`` (no implicit layers) instead.
Layers without weights (Concat, MP, SP, Upsample) have no entry.
"""
from __future__ import annotations

import re
from typing import Dict, List, Tuple

import torch

# official sub-module names inside one layer -> ours
_SPPCSPC_PARTS = {'cv1': 'main_layers.0', 'cv3': 'main_layers.1',
                  'cv4': 'main_layers.2', 'cv2': 'short_layer',
                  'cv5': 'fuse_layers.0', 'cv6': 'fuse_layers.1',
                  'cv7': 'final_conv'}
_REPCONV_PARTS = {'rbr_dense.0': 'rbr_dense.conv', 'rbr_dense.1': 'rbr_dense.bn',
                  'rbr_1x1.0': 'rbr_1x1.conv', 'rbr_1x1.1': 'rbr_1x1.bn',
                  'rbr_identity': 'rbr_identity', 'rbr_reparam': 'rbr_reparam'}


def _elan(start: int, prefix: str, num_blocks: int,
          convs_per_block: int) -> Tuple[List[Tuple[int, str]], int]:
    """Layer indices of one ELAN block (short, main, chain, [concat], final)."""
    entries = [(start, f'{prefix}.short_conv'), (start + 1, f'{prefix}.main_conv')]
    idx = start + 2
    for b in range(num_blocks):
        for c in range(convs_per_block):
            name = (f'{prefix}.blocks.{b}' if convs_per_block == 1
                    else f'{prefix}.blocks.{b}.{c}')
            entries.append((idx, name))
            idx += 1
    entries.append((idx + 1, f'{prefix}.final_conv'))  # idx is the Concat
    return entries, idx + 2


def _mp(start: int, prefix: str) -> Tuple[List[Tuple[int, str]], int]:
    """MP block: MP (no weights), 1x1, 1x1 (from -3), 3x3/s2, Concat."""
    return [(start + 1, f'{prefix}.maxpool_branches.1'),
            (start + 2, f'{prefix}.stride_conv_branches.0'),
            (start + 3, f'{prefix}.stride_conv_branches.1')], start + 5


def yolov7_l_layer_table() -> Tuple[Dict[int, str], int]:
    """{official layer index: our module prefix} for YOLOv7 (L); and the Detect index."""
    t: List[Tuple[int, str]] = [(0, 'backbone.stem.0'), (1, 'backbone.stem.1'),
                                (2, 'backbone.stem.2'),
                                (3, 'backbone.stage1.0')]
    e, i = _elan(4, 'backbone.stage1.1', 2, 2)
    t += e
    for stage in (2, 3, 4):
        e, i = _mp(i, f'backbone.stage{stage}.0')
        t += e
        e, i = _elan(i, f'backbone.stage{stage}.1', 2, 2)
        t += e
    assert i == 51
    t.append((51, 'neck.reduce_layers.2'))  # SPPCSPC (sub-names mapped below)
    t += [(52, 'neck.upsample_layers.0.0'), (54, 'neck.reduce_layers.1')]
    e, i = _elan(56, 'neck.top_down_layers.0', 4, 1)
    t += e
    t += [(64, 'neck.upsample_layers.1.0'), (66, 'neck.reduce_layers.0')]
    e, i = _elan(68, 'neck.top_down_layers.1', 4, 1)
    t += e
    for k in range(2):
        e, i = _mp(i, f'neck.downsample_layers.{k}')
        t += e
        e, i = _elan(i, f'neck.bottom_up_layers.{k}', 4, 1)
        t += e
    assert i == 102
    t += [(102, 'neck.out_layers.0'), (103, 'neck.out_layers.1'),
          (104, 'neck.out_layers.2')]
    return dict(t), 105


def yolov7_tiny_layer_table() -> Tuple[Dict[int, str], int]:
    """{official layer index: our module prefix} for YOLOv7-tiny; and the Detect index."""
    t: List[Tuple[int, str]] = [(0, 'backbone.stem.0'), (1, 'backbone.stem.1')]
    e, i = _elan(2, 'backbone.stage1.0', 2, 1)
    t += e
    for stage in (2, 3, 4):  # MP (no weights) then ELAN
        e, i = _elan(i + 1, f'backbone.stage{stage}.1', 2, 1)
        t += e
    assert i == 29
    t += [(29, 'neck.reduce_layers.2.short_layer'),
          (30, 'neck.reduce_layers.2.main_layers'),
          (35, 'neck.reduce_layers.2.fuse_layers'),
          (37, 'neck.reduce_layers.2.final_conv'),
          (38, 'neck.upsample_layers.0.0'), (40, 'neck.reduce_layers.1')]
    e, i = _elan(42, 'neck.top_down_layers.0', 2, 1)
    t += e
    t += [(48, 'neck.upsample_layers.1.0'), (50, 'neck.reduce_layers.0')]
    e, i = _elan(52, 'neck.top_down_layers.1', 2, 1)
    t += e
    t.append((58, 'neck.downsample_layers.0'))
    e, i = _elan(60, 'neck.bottom_up_layers.0', 2, 1)
    t += e
    t.append((66, 'neck.downsample_layers.1'))
    e, i = _elan(68, 'neck.bottom_up_layers.1', 2, 1)
    t += e
    assert i == 74
    t += [(74, 'neck.out_layers.0'), (75, 'neck.out_layers.1'),
          (76, 'neck.out_layers.2')]
    return dict(t), 77


_KEY = re.compile(r'^model\.(\d+)\.(.+)$')


def detect_yolov7_arch(state: Dict[str, torch.Tensor]) -> str:
    """'L' or 'Tiny' from the index of the Detect layer (105 / 77)."""
    heads = {int(m.group(1)) for k in state
             if (m := _KEY.match(k)) and m.group(2).startswith(('m.', 'ia.', 'im.'))}
    if heads == {105}:
        return 'L'
    if heads == {77}:
        return 'Tiny'
    raise KeyError('not an official YOLOv7 / YOLOv7-tiny state: Detect layer '
                   f'index {sorted(heads) or "missing"} (expected 105 or 77)')


def map_yolov7_official(state: Dict[str, torch.Tensor]
                        ) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor], Dict[str, str]]:
    """Rename official keys to ours.

    Returns (mapped, anchors, unmapped): ``anchors`` holds the Detect
    ``anchor_grid`` / ``anchors`` buffers (constants, checked against the
    config by the caller); ``unmapped`` lists keys with no rule and why.
    """
    arch = detect_yolov7_arch(state)
    table, det = (yolov7_l_layer_table() if arch == 'L'
                  else yolov7_tiny_layer_table())
    mapped: Dict[str, torch.Tensor] = {}
    anchors: Dict[str, torch.Tensor] = {}
    unmapped: Dict[str, str] = {}
    for key, value in state.items():
        m = _KEY.match(key)
        if m is None:
            unmapped[key] = 'not a model.N.* key'
            continue
        idx, rest = int(m.group(1)), m.group(2)
        if idx == det:
            head = re.match(r'^(m|ia|im)\.(\d+)\.(.+)$', rest)
            if rest in ('anchors', 'anchor_grid'):
                anchors[rest] = value
            elif head and head.group(1) == 'm':
                mapped[f'bbox_head.pred_layers.{head.group(2)}.conv.'
                       f'{head.group(3)}'] = value
            elif head and head.group(3) == 'implicit':
                part = 'implicit_add' if head.group(1) == 'ia' else 'implicit_mul'
                mapped[f'bbox_head.pred_layers.{head.group(2)}.{part}.'
                       'implicit'] = value
            else:
                unmapped[key] = 'unknown Detect parameter'
            continue
        if idx not in table:
            unmapped[key] = f'layer {idx} has no weights in YOLOv7-{arch}'
            continue
        prefix = table[idx]
        if arch == 'L' and idx == 51:
            part, _, tail = rest.partition('.')
            if part not in _SPPCSPC_PARTS:
                unmapped[key] = 'unknown SPPCSPC part'
                continue
            mapped[f'{prefix}.{_SPPCSPC_PARTS[part]}.{tail}'] = value
        elif arch == 'L' and idx >= 102:
            for old, new in _REPCONV_PARTS.items():
                if rest.startswith(old + '.'):
                    mapped[f'{prefix}.{new}{rest[len(old):]}'] = value
                    break
            else:
                unmapped[key] = 'unknown RepConv part'
        else:  # official Conv: conv / bn, same as our ConvBNAct
            mapped[f'{prefix}.{rest}'] = value
    return mapped, anchors, unmapped
