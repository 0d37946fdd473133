"""Fit renamed weights onto a built detptq model, accounting for every key on both sides.

A source key is either loaded into the model, or dropped by a named rule
(an official training-only branch the model does not have, or a derived
constant). A model key is either filled from the source, or filled by a
named rule (derived constants; identity implicit layers for a deploy-form
YOLOv7 file). Anything else is an error listing the first unmatched keys on
both sides.
"""
from __future__ import annotations

import re
from typing import Dict, List, Tuple

import torch
from torch import nn

# official training-only branches (fused anchor-based branch, N/S distillation)
TRAINING_ONLY = re.compile(
    r'^bbox_head\.(cls_preds_ab|reg_preds_ab|reg_preds_dist|reg_preds_lrtb)\.')
# state that is not a weight (mmengine data preprocessor buffers)
NOT_WEIGHTS = re.compile(r'^data_preprocessor\.')
# constants the model computes itself (DFL bin values)
DERIVED_CONSTANTS = re.compile(r'^bbox_head\.(proj|proj_conv\.weight)$')
_IMPLICIT = re.compile(r'^(bbox_head\.pred_layers\.\d+)\.(implicit_add|implicit_mul)\.implicit$')


def _fold_implicit(state: Dict[str, torch.Tensor], notes: Dict[str, str]) -> None:
    """Fold ImplicitA/ImplicitM into the prediction conv (model has no implicit layers)."""
    prefixes = sorted({m.group(1) for k in state if (m := _IMPLICIT.match(k))})
    for p in prefixes:
        w = state[f'{p}.conv.weight']
        b = state[f'{p}.conv.bias']
        a = state.pop(f'{p}.implicit_add.implicit', None)
        m = state.pop(f'{p}.implicit_mul.implicit', None)
        if a is not None:
            b = b + w.flatten(1) @ a.flatten()
        if m is not None:
            m = m.flatten()
            w, b = w * m.view(-1, 1, 1, 1), b * m
        state[f'{p}.conv.weight'], state[f'{p}.conv.bias'] = w, b
        notes[p] = 'implicit add/mul folded into the prediction conv'


def reconcile_implicit(state: Dict[str, torch.Tensor],
                       model_state: Dict[str, torch.Tensor],
                       notes: Dict[str, str]) -> None:
    """Make implicit layers agree: fold them (model lacks them) or fill identity (file lacks them)."""
    src_has = any(_IMPLICIT.match(k) for k in state)
    model_has = any(_IMPLICIT.match(k) for k in model_state)
    if src_has and not model_has:
        _fold_implicit(state, notes)
    elif model_has and not src_has and any(
            k.startswith('bbox_head.pred_layers.') for k in state):
        for k, v in model_state.items():
            if _IMPLICIT.match(k):
                fill = 0.0 if '.implicit_add.' in k else 1.0
                state[k] = torch.full_like(v, fill)
                notes[k] = 'identity (file is a deploy Detect without implicit layers)'


def check_anchors(anchors: Dict[str, torch.Tensor], model: nn.Module,
                  problems: List[str]) -> None:
    """Official anchor buffers must equal the config's ``prior_sizes`` (pixels)."""
    head = getattr(model, 'bbox_head', None)
    expected = getattr(head, 'anchor_sizes', None)
    if expected is None or not anchors:
        return
    if 'anchor_grid' in anchors:
        got = anchors['anchor_grid'].reshape(expected.shape)
    else:
        strides = torch.tensor(head.featmap_strides, dtype=torch.float32)
        got = anchors['anchors'].reshape(expected.shape) * strides.view(-1, 1, 1)
    if not torch.allclose(got.float(), expected.float(), atol=0.5):
        problems.append('anchors differ: file has '
                        f'{got.round().int().tolist()}, config has '
                        f'{expected.int().tolist()} (set bbox_head.prior_sizes)')


def summarize_keys(keys: List[str], limit: int = 8) -> str:
    """First ``limit`` modules of a key list, e.g. 'a.conv.weight, a.bn.{bias,weight}'."""
    groups: Dict[str, List[str]] = {}
    for key in keys:
        prefix, _, leaf = key.rpartition('.')
        groups.setdefault(prefix, []).append(leaf)
    parts = []
    for prefix, leaves in list(groups.items())[:limit]:
        leaf = leaves[0] if len(leaves) == 1 else '{' + ','.join(leaves) + '}'
        parts.append(f'{prefix}.{leaf}' if prefix else leaf)
    more = len(groups) - limit
    return ', '.join(parts) + (f' (+{more} more modules)' if more > 0 else '')


def match_to_model(mapped: Dict[str, torch.Tensor], model: nn.Module
                   ) -> Tuple[Dict[str, torch.Tensor], Dict[str, str],
                              Dict[str, str], List[str]]:
    """Return (state_dict, dropped, filled, problems) for ``model``.

    ``dropped``/``filled`` map keys to the rule that accounts for them;
    ``problems`` is empty when every key on both sides is accounted for.
    """
    model_state = model.state_dict()
    state = dict(mapped)
    filled: Dict[str, str] = {}
    reconcile_implicit(state, model_state, filled)
    out: Dict[str, torch.Tensor] = {}
    dropped: Dict[str, str] = {}
    extra: List[str] = []
    shape_errors: List[str] = []
    for key, value in state.items():
        if key in model_state:
            if tuple(value.shape) != tuple(model_state[key].shape):
                if DERIVED_CONSTANTS.match(key):
                    dropped[key] = 'derived constant (model keeps its own)'
                    continue
                shape_errors.append(f'{key}: file {tuple(value.shape)} vs '
                                    f'model {tuple(model_state[key].shape)}')
                continue
            if DERIVED_CONSTANTS.match(key):
                out[key] = model_state[key].clone()
                continue
            out[key] = value.to(model_state[key].dtype)
        elif TRAINING_ONLY.match(key):
            dropped[key] = 'official training-only branch, absent from the model'
        elif NOT_WEIGHTS.match(key):
            dropped[key] = 'data preprocessor state, not a weight'
        elif DERIVED_CONSTANTS.match(key):
            dropped[key] = 'derived constant, absent from the model'
        else:
            extra.append(key)
    missing: List[str] = []
    for key, value in model_state.items():
        if key in out:
            continue
        if DERIVED_CONSTANTS.match(key):
            out[key] = value.clone()
            filled[key] = 'derived constant (model default)'
        elif key.endswith('num_batches_tracked'):
            out[key] = value.clone()  # BN counter, not used in eval
            filled[key] = 'BN counter (model default)'
        else:
            missing.append(key)
    problems: List[str] = []
    if shape_errors:
        problems.append(f'{len(shape_errors)} shape mismatches, first: '
                        + '; '.join(shape_errors[:8]))
    if extra:
        problems.append(f'{len(extra)} file keys with no place in the model: '
                        + summarize_keys(extra))
    if missing:
        problems.append(f'{len(missing)} model keys not in the file: '
                        + summarize_keys(missing))
    return out, dropped, filled, problems
