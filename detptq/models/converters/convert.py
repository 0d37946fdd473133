"""Convert an official YOLOv6/YOLOv7 ``.pt`` or an mmyolo checkpoint to a detptq checkpoint."""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from detptq.utils.checkpoint import save_checkpoint_file
from .block_classes import check_block_types
from .describe import (describe_text, describe_weights, guess_config,
                       qa_ambiguity)
from .match import check_anchors, match_to_model
from .mmyolo import map_mmyolo
from .read_source import ConversionError, SourceWeights, read_source
from .yolov6_official import fold_deploy_post_bn, map_yolov6_official
from .yolov7_official import map_yolov7_official


def map_source(src: SourceWeights) -> Tuple[Dict[str, torch.Tensor],
                                             Dict[str, str],
                                             Dict[str, torch.Tensor], str]:
    """Rename source keys to detptq names: (mapped, unmapped, anchors, layout)."""
    anchors: Dict[str, torch.Tensor] = {}
    try:
        if src.model_type == 'yolov6':
            mapped, unmapped, layout = map_yolov6_official(src.state)
            layout = f'yolov6-official-{layout}'
        elif src.model_type == 'yolov7':
            mapped, anchors, unmapped = map_yolov7_official(src.state)
            layout = 'yolov7-official'
        else:
            mapped, unmapped, family = map_mmyolo(src.state)
            layout = f'mmyolo-{family}'
    except KeyError as err:
        raise ConversionError(f"{src.info.get('source')}: {err.args[0]}") from err
    return mapped, unmapped, anchors, layout


def build_model(config: str) -> nn.Module:
    """Build ``cfg.model`` of a detptq config file (CPU, eval mode)."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    import detptq.models  # noqa: F401  (registers the model classes)
    from detptq.registry import MODELS
    cfg = Config.fromfile(config)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope',
                                                      'detptq')):
        model = MODELS.build(cfg.model)
    return model.eval()


def _bn_eps(model: nn.Module) -> list:
    return sorted({float(m.eps) for m in model.modules()
                   if isinstance(m, nn.modules.batchnorm._BatchNorm)})


def convert_checkpoint(src_path: str, out_path: Optional[str] = None,
                       config: Optional[str] = None,
                       model_type: str = 'auto') -> Dict[str, Any]:
    """Convert ``src_path``; save to ``out_path`` when given; return the checkpoint dict.

    Without ``config`` the base model config is chosen from the official
    class names pickled in the file and the tensor shapes; a ``config``
    contradicting those class names is refused. Raises
    :class:`ConversionError` unless every source key is loaded or dropped by
    a named rule and every model key is filled.
    """
    src = read_source(src_path, model_type)
    mapped, unmapped, anchors, layout = map_source(src)
    desc = describe_weights(mapped, src.info.get('source_classes'))
    looks_like = describe_text(desc)
    if config is None:
        config = guess_config(desc)
        if config is None:
            why = qa_ambiguity(desc) or 'no matching config was found; pass --config'
            raise ConversionError(f'{src_path!r} looks like {looks_like}, but {why}')
    config = os.path.normpath(os.path.abspath(config))
    model = build_model(config)
    check_block_types(src_path, src.info.get('source_classes'), model, config,
                      guess_config(desc))
    deploy_form = any('.rbr_reparam.' in k for k in mapped)
    folded: Dict[str, str] = {}
    if deploy_form:  # the file holds already fused RepVGG/RepConv blocks
        model.switch_to_deploy()
        src_eps = src.info.get('source_bn_eps') or [1e-5]
        folded = fold_deploy_post_bn(mapped, src_eps[0] if len(src_eps) == 1 else 1e-5)
    state, dropped, filled, problems = match_to_model(mapped, model)
    dropped.update(folded)
    check_anchors(anchors, model, problems)
    for name in anchors:
        dropped[f'<Detect>.{name}'] = ('anchor constant, checked equal to '
                                       'bbox_head.prior_sizes')
    if unmapped:
        items = list(unmapped.items())[:8]
        problems.insert(0, f'{len(unmapped)} file keys with no mapping rule, '
                        'first: ' + '; '.join(f'{k} ({why})' for k, why in items))
    if problems:
        raise ConversionError(
            f'{src_path!r} ({layout}) does not fit {config!r}.\n  '
            + '\n  '.join(problems)
            + f'\nThe file looks like {looks_like}; '
            + (f'suggested config: {guess_config(desc)}'
               if guess_config(desc) else 'no config of that kind exists'))
    warnings = []
    src_eps = src.info.get('source_bn_eps')
    if src_eps and src_eps != _bn_eps(model):
        warnings.append(f'BatchNorm eps differ: file {src_eps}, model '
                        f'{_bn_eps(model)}; outputs will differ slightly')
    meta = {
        'converted_by': 'detptq tools/convert_ckpt.py',
        'source': os.path.abspath(src_path),
        'source_format': layout,
        'config': config,
        'looks_like': looks_like,
        'num_source_keys': len(src.state),
        'num_model_keys': len(state),
        'dropped_keys': dict(dropped),
        'filled_keys': dict(filled),
        'warnings': warnings,
        # a deploy-form file loads into a model after switch_to_deploy()
        'deploy_form': deploy_form,
        **{k: v for k, v in src.info.items() if k != 'source'},
    }
    ckpt = {'state_dict': state, 'meta': meta}
    if out_path is not None:
        save_checkpoint_file(ckpt, out_path)
    return ckpt
