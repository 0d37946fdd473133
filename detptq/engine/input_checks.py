"""Checks run by the tools before any long work: data files, images, writable folders, PTQ settings.

Each failure is a ``UserInputError`` whose message names the file, key or
value at fault, so the tool prints one sentence instead of failing minutes
later inside the FP evaluation or calibration.
"""
from __future__ import annotations

import copy
import json
import os
import os.path as osp
import tempfile
from typing import Any, Dict, Iterable, List, Optional

from detptq.utils.cli import UserInputError

# Annotation files above this size are only checked for truncation (COCO's
# train2017 JSON is ~450 MB; mmdet parses it later anyway).
FULL_PARSE_MAX_BYTES = 64 << 20
IMAGE_MAGIC = (b'\xff\xd8\xff', b'\x89PNG', b'BM', b'GIF8', b'II*\x00', b'MM\x00*', b'RIFF')


def ensure_writable_dir(path: str, what: str) -> None:
    """Create ``path`` if needed and prove a file can be written there."""
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix='.write_test_', dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise UserInputError(f'{what} {path!r} is not writable ({err.strerror or err})') from err


def _truncation_check(path: str) -> None:
    """A big JSON file must at least start with '{' and end with '}'."""
    with open(path, 'rb') as f:
        head = f.read(64).lstrip()
        f.seek(max(0, os.path.getsize(path) - 64))
        tail = f.read().rstrip()
    if not head.startswith(b'{') or not tail.endswith(b'}'):
        raise UserInputError(f'annotation file {path!r} is not valid JSON (truncated or '
                             'corrupt); restore it from the original download')


def read_annotation_file(path: str) -> Optional[dict]:
    """The parsed COCO annotation file (None when too big to parse here); errors name the file."""
    if not osp.isfile(path):
        raise UserInputError(f'annotation file {path!r} does not exist')
    if osp.getsize(path) > FULL_PARSE_MAX_BYTES:
        _truncation_check(path)
        return None
    try:
        with open(path, 'rb') as f:
            data = json.loads(f.read())
    except UnicodeDecodeError as err:
        raise UserInputError(f'annotation file {path!r} is not valid JSON (not UTF-8 text); '
                             'it is corrupt') from err
    except json.JSONDecodeError as err:
        raise UserInputError(f'annotation file {path!r} is not valid JSON ({err.msg} at line '
                             f'{err.lineno} column {err.colno}); it is corrupt or '
                             'truncated') from err
    if not isinstance(data, dict) or not isinstance(data.get('images'), list):
        raise UserInputError(f'annotation file {path!r} is not a COCO detection file (no '
                             '"images" list)')
    return data


def _bad_image(path: str, size: int) -> Optional[str]:
    """Why the file cannot be an image ('empty', 'not an image file') or None."""
    if size == 0:
        return 'empty'
    with open(path, 'rb') as f:
        head = f.read(4)
    return None if head.startswith(IMAGE_MAGIC) else 'not an image file'


def check_images(ann_path: str, data: dict, img_dir: str, key: str) -> int:
    """Every image the annotation file lists exists and looks like an image; returns their number."""
    names = [str(img.get('file_name', '')) for img in data['images'] if isinstance(img, dict)]
    if not osp.isdir(img_dir):
        raise UserInputError(f'{key}: image folder {img_dir!r} does not exist')
    sizes: Dict[str, int] = {}
    for entry in os.scandir(img_dir):
        if entry.is_file():
            sizes[entry.name] = entry.stat().st_size
    problems: List[str] = []
    for name in names:
        path = osp.join(img_dir, name)
        size = sizes.get(name)
        if size is None and '/' in name and osp.isfile(path):  # file names with sub-folders
            size = osp.getsize(path)
        reason = 'missing' if size is None else _bad_image(path, size)
        if reason:
            problems.append(f'{name} ({reason})')
    if problems:
        raise UserInputError(
            f'{key}: {len(problems)} of the {len(names)} images listed in {ann_path!r} are '
            f'missing or unreadable in {img_dir!r}, e.g. {", ".join(problems[:3])}')
    return len(names)


def check_loader_data(key: str, loader_cfg: Any, min_images: int = 1) -> Optional[int]:
    """Annotation file and images of one data loader; returns how many images it can give."""
    dataset = loader_cfg.dataset
    root = dataset.get('data_root') or ''
    ann = osp.join(root, dataset.ann_file) if dataset.get('ann_file') else None
    img_dir = osp.join(root, (dataset.get('data_prefix') or {}).get('img') or '')
    if ann is None:
        return None
    data = read_annotation_file(ann)
    if data is None:  # too big to list here: only the folder is checked
        if not osp.isdir(img_dir):
            raise UserInputError(f'{key}: image folder {img_dir!r} does not exist')
        return None
    count = check_images(ann, data, img_dir, key)
    indices = dataset.get('indices')
    if isinstance(indices, int):
        count = min(count, indices)
    if count < min_images:
        raise UserInputError(f'{key}: {ann!r} lists no images; the run needs at least '
                             f'{min_images}' if count == 0 else
                             f'{key}: {ann!r} gives {count} images but {min_images} are asked '
                             'for (num_calib_images / --num-calib-images)')
    return count


def _positive_int(key: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserInputError(f'{key}={value!r} is invalid; expected an integer >= {minimum}')


def resolve_num_calib_images(cli_value: Optional[int], cfg) -> int:
    """Calibration image count: the command line wins over the config (0 is an error, not 'unset')."""
    if cli_value is not None:
        _positive_int('--num-calib-images', cli_value)
        return cli_value
    value = cfg.get('num_calib_images', 256)
    _positive_int('num_calib_images', value)
    return value


def check_registry_type(registry, key: str, cfg: Any) -> None:
    """``cfg['type']`` names a registered class of ``registry``."""
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise UserInputError(f'{key}={cfg!r} is invalid; expected a dict with a "type"')
    name = cfg['type']
    if not isinstance(name, str):
        return  # a class object: nothing to look up
    if registry.get(name) is None:
        known = sorted(registry.module_dict)
        hint = f'; known: {", ".join(known)}' if 0 < len(known) <= 30 else ''
        raise UserInputError(f'{key}.type={name!r} is not a registered {registry.name}{hint}')


def _build_check(registry, key: str, cfg: dict) -> Any:
    """Build ``cfg`` once to check its keyword arguments; errors name the key."""
    check_registry_type(registry, key, cfg)
    try:
        return registry.build(copy.deepcopy(dict(cfg)))
    except (TypeError, ValueError, AssertionError) as err:
        raise UserInputError(f'{key}: {err}') from err


def check_quant_types(qcfg: dict) -> None:
    """Quantizer and calibrator types (and calibrator arguments) of a merged quant config."""
    import detptq.quantization  # noqa: F401  (registers quantizers and calibrators)
    from detptq.registry import CALIBRATORS, QUANTIZERS
    quantizers = [('quant_cfg.weight', qcfg['weight']), ('quant_cfg.act', qcfg['act'])]
    calibrators = []
    for i, override in enumerate(qcfg.get('overrides') or []):
        quantizers += [(f'quant_cfg.overrides[{i}].{part}', override[part])
                       for part in ('weight', 'act') if part in override]
        calibrators += [(f'quant_cfg.overrides[{i}].{part}', override[part])
                        for part in ('calibrator', 'w_calibrator') if part in override]
    for key, quantizer in quantizers:
        if 'type' in quantizer:
            check_registry_type(QUANTIZERS, key, quantizer)
        if quantizer.get('calibrator') is not None:
            calibrators.append((f'{key}.calibrator', quantizer['calibrator']))
    for key, calibrator in calibrators:
        _build_check(CALIBRATORS, key, calibrator)


def check_recon_cfg(recon_cfg: Optional[dict]) -> None:
    """Build the reconstructor once: its type, every key and every value are checked."""
    if not recon_cfg:
        return
    import detptq.reconstruction  # noqa: F401  (registers the reconstructors)
    from detptq.registry import RECONSTRUCTORS
    images = recon_cfg.get('p_search_images')
    if images is not None:
        _positive_int('recon_cfg.p_search_images', images)
    if recon_cfg.get('p_rule', 'last') not in ('last', 'mean'):
        raise UserInputError(f'recon_cfg.p_rule={recon_cfg["p_rule"]!r} is invalid; use '
                             "'last' or 'mean'")
    _check_p_search(recon_cfg.get('p_search') or {})
    _build_check(RECONSTRUCTORS, 'recon_cfg', recon_cfg)


def _check_p_search(p_cfg: dict) -> None:
    for key in ('num_candidates', 'max_samples'):
        if key in p_cfg:
            _positive_int(f'recon_cfg.p_search.{key}', p_cfg[key])
    for key in ('step', 'cls_weight', 'box_weight'):
        value = p_cfg.get(key, 1.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or \
                (key == 'step' and value == 0):
            raise UserInputError(f'recon_cfg.p_search.{key}={value!r} is invalid; expected a '
                                 f'{"positive" if key == "step" else "non-negative"} number')
    values = p_cfg.get('p_values')
    if values is not None and (not isinstance(values, (list, tuple)) or not values or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0 for v in values)):
        raise UserInputError(f'recon_cfg.p_search.p_values={values!r} is invalid; expected a '
                             'non-empty list of positive numbers')


def check_pipeline_types(key: str, loader_cfg: Any) -> None:
    """Dataset, sampler and transform types of one data loader are registered."""
    from detptq.registry import DATA_SAMPLERS, DATASETS, TRANSFORMS
    dataset = loader_cfg.get('dataset')
    if dataset is None:
        return
    check_registry_type(DATASETS, f'{key}.dataset', dataset)
    for i, transform in enumerate(dataset.get('pipeline') or []):
        check_registry_type(TRANSFORMS, f'{key}.dataset.pipeline[{i}]', transform)
    for part in ('sampler', 'batch_sampler'):
        if loader_cfg.get(part) is not None:
            check_registry_type(DATA_SAMPLERS, f'{key}.{part}', loader_cfg[part])


def check_run_types(cfg, loader_keys: Iterable[str], evaluator_keys: Iterable[str]) -> None:
    """Model, data loader and evaluator types the run will build are registered."""
    import detptq.models  # noqa: F401  (registers the detectors)
    from detptq.registry import METRICS, MODELS
    model = cfg.get('model')
    if model is not None:
        check_registry_type(MODELS, 'model', model)
        for part in ('backbone', 'neck', 'bbox_head', 'data_preprocessor'):
            if isinstance(model.get(part), dict) and 'type' in model[part]:
                check_registry_type(MODELS, f'model.{part}', model[part])
    for key in loader_keys:
        if cfg.get(key) is not None:
            check_pipeline_types(key, cfg[key])
    for key in evaluator_keys:
        evaluator = cfg.get(key)
        for i, metric in enumerate(evaluator if isinstance(evaluator, list) else [evaluator]):
            if metric is not None:
                check_registry_type(METRICS, key if i == 0 else f'{key}[{i}]', metric)


def check_checkpoint_readable(path: str) -> None:
    """A cheap look at a local checkpoint file: a complete zip archive or a pickle stream.

    torch.save writes a zip archive whose directory sits at the end, so a
    truncated download fails here in milliseconds instead of after the model
    is built; random bytes are neither format.
    """
    import zipfile
    if '://' in path or not osp.isfile(path):
        return  # the loader reports missing files and URLs itself
    if osp.getsize(path) == 0:
        raise UserInputError(f'checkpoint {path!r} is empty (0 bytes)')
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                archive.infolist()
        except (zipfile.BadZipFile, OSError) as err:
            raise UserInputError(f'checkpoint {path!r} is damaged ({err}); download or '
                                 'write it again') from err
        return
    with open(path, 'rb') as f:
        head = f.read(2)
    if head[:1] != b'\x80':  # pickle protocol 2+ (torch's legacy format) starts so
        with open(path, 'rb') as f:
            f.seek(max(0, osp.getsize(path) - 22))
            tail = f.read()
        truncated = head == b'PK' or b'PK' in tail
        raise UserInputError(
            f'checkpoint {path!r} is not a PyTorch checkpoint '
            f'({"a truncated zip archive" if truncated else "neither a zip archive nor a pickle"}'
            '); download or write it again')
