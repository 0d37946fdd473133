"""Generated COCO-format demo data set: 10 look-alike shape classes on cluttered backgrounds.

No real data set can be downloaded here, so the demo, the training configs and
the tests run on this one. Layout under the root folder::

    images/{train,val,calib,tune}/000000.jpg ...
    annotations/instances_{train,val,calib,tune}.json   (COCO detection format)
    manifest.json       (settings first; a split is listed in ``files`` once finished)

Every image is drawn from its own random stream seeded by (seed, split,
index), so the output is byte-identical for the same parameters whatever the
number of worker processes, and adding a split (``tune``, for choosing
hyper-parameters without looking at val) leaves the others' bytes unchanged.
The generator only writes into an empty folder or one it wrote itself
(``demo_folder``). See ``demo_scene`` for the annotation rules
(visible-extent boxes, objects occluded > 60 % dropped) and ``demo_shapes``
for the classes.
"""
import ctypes
import fcntl
import json
import logging
import multiprocessing
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterable, Iterator, Optional

import cv2
import numpy as np
from mmengine.logging import print_log

from .demo_folder import (MANIFEST, DemoDataError, missing_files, plan_generation,
                          read_manifest, remove_split_files)
from .demo_scene import SHAPE_CLASSES, render_scene

DEMO_CLASSES: tuple[str, ...] = SHAPE_CLASSES
SPLITS: tuple[str, ...] = ('train', 'val', 'calib', 'tune')
# Bump when the drawing code changes (folders of another version are then
# refused until regenerated with --force). Adding the tune split changed no
# existing byte, so version-1 folders stay valid and only gain the split.
GENERATOR_VERSION = 1
JPEG_QUALITY = 90
ENV_VAR = 'DETPTQ_DEMO_DATA'
_SPLIT_CODES = {'train': 0, 'val': 1, 'calib': 2, 'tune': 3}  # never renumber: seeds depend on it
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


def default_demo_root() -> Path:
    """``$DETPTQ_DEMO_DATA`` if set, else ``data/demo`` under the repository."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    repo = Path(__file__).resolve().parents[2]
    # Installed outside a checkout there is no repository: use the working dir.
    base = repo if (repo / 'setup.py').exists() else Path.cwd()
    return base / 'data' / 'demo'


def image_file_name(index: int) -> str:
    """File name of image ``index`` inside its split folder."""
    return f'{index:06d}.jpg'


def _render_and_write(task: tuple[str, str, int, int, int]) -> list[dict]:
    """Worker: draw one image from its own seed, write the JPEG, return its objects."""
    out_dir, split, index, seed, img_size = task
    rng = np.random.default_rng([seed, _SPLIT_CODES[split], index])
    image, objects = render_scene(rng, img_size)
    ok, buf = cv2.imencode('.jpg', image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError(f'JPEG encoding failed for {split}/{index}')
    (Path(out_dir) / 'images' / split / image_file_name(index)).write_bytes(buf.tobytes())
    return objects


def _init_worker() -> None:
    """Pool initializer: single-threaded cv2, no malloc mmap churn."""
    # One thread per process (set by the parent before the fork, inherited):
    # the pool already provides the parallelism.
    # Each image allocates ~1 MB float temporaries; glibc serves those with
    # mmap/munmap, costing ~20 % of the run in page faults. Keeping them on
    # the heap changes speed only, never the output.
    try:
        libc = ctypes.CDLL('libc.so.6')
        libc.mallopt(_M_TRIM_THRESHOLD, 256 << 20)
        libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    except (OSError, AttributeError):  # not glibc: just slower
        pass


def _coco_dict(split: str, img_size: int, per_image: list[list[dict]]) -> dict:
    """COCO detection dict for one split from per-image object lists."""
    images, annotations = [], []
    for index, objects in enumerate(per_image):
        image_id = index + 1
        images.append(dict(id=image_id, file_name=image_file_name(index),
                           width=img_size, height=img_size))
        for obj in objects:
            annotations.append(dict(
                id=len(annotations) + 1, image_id=image_id,
                category_id=obj['category_index'] + 1, bbox=obj['bbox'],
                area=obj['area'], iscrowd=0))
    categories = [dict(id=i + 1, name=name, supercategory='shape')
                  for i, name in enumerate(DEMO_CLASSES)]
    info = dict(description=f'detptq generated demo shapes ({split})',
                version=str(GENERATOR_VERSION))
    return dict(info=info, images=images, annotations=annotations,
                categories=categories)


def _write_json(path: Path, data: dict) -> None:
    """Write JSON atomically (temp file + rename) with a fixed layout."""
    tmp = path.with_suffix(path.suffix + '.tmp')
    tmp.write_text(json.dumps(data, separators=(',', ':')))
    os.replace(tmp, path)


def _split_counts(num_train: int, num_val: int, num_calib: int,
                  num_tune: Optional[int]) -> Dict[str, int]:
    """Images per split; the tune split defaults to the size of val."""
    return dict(train=num_train, val=num_val, calib=num_calib,
                tune=num_val if num_tune is None else num_tune)


def _common(seed: int, img_size: int) -> dict:
    return dict(generator_version=GENERATOR_VERSION, seed=seed, img_size=img_size,
                classes=list(DEMO_CLASSES))


def _manifest(common: dict, counts: Dict[str, int], old: Optional[dict],
              done: Dict[str, int]) -> dict:
    """Manifest recording the settings; ``files``/``annotations`` list finished splits only."""
    manifest = dict(common)
    manifest.update({f'num_{split}': n for split, n in counts.items()})
    manifest['files'] = {s: n for s, n in ((old or {}).get('files') or {}).items() if s in counts}
    manifest['annotations'] = {s: n for s, n in ((old or {}).get('annotations') or {}).items()
                               if s in manifest['files']}
    for split in done:
        manifest['files'][split] = counts[split]
        manifest['annotations'][split] = done[split]
    for key in ('files', 'annotations'):  # split order, so a repaired set's manifest is unchanged
        manifest[key] = {s: manifest[key][s] for s in counts if s in manifest[key]}
    return manifest


def make_demo_dataset(out_dir: str | os.PathLike, seed: int = 0, num_train: int = 4000,
                      num_val: int = 500, num_calib: int = 256, img_size: int = 320,
                      workers: int | None = None, progress: bool = False,
                      num_tune: int | None = None, force: bool = False,
                      splits: Optional[Iterable[str]] = None) -> dict:
    """Generate (or complete) the data set in out_dir if that is safe; return the manifest.

    Only an empty/new folder or one this generator wrote (see ``demo_folder``)
    is touched; ``force`` regenerates a set made with other settings;
    ``splits`` (default: all) limits the work to the splits named. Raises
    DemoDataError naming the folder otherwise.
    """
    out = Path(out_dir)
    counts = _split_counts(num_train, num_val, num_calib, num_tune)
    common = _common(seed, img_size)
    if out.exists() and not out.is_dir():
        raise DemoDataError(f'{out} is a file, not a folder; choose another folder for the '
                            'demo data set')
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DemoDataError(f'cannot create the demo data folder {out}: {err.strerror}') from err
    with _exclusive_lock(out):
        plan = plan_generation(out, common, counts, force=force, only=splits)
        if plan.reason:
            print_log(f'demo data: {plan.reason}', logger='current',
                      level=logging.WARNING if plan.loud else logging.INFO)
        if not plan.build:
            return read_manifest(out)
        # Settings first, finished splits only: an interrupted run is still ours.
        kept = {s: n for s, n in ((plan.old_manifest or {}).get('annotations') or {}).items()
                if s in plan.keep}
        pending = _manifest(common, counts, None, {})
        pending['annotations'], pending['files'] = kept, {s: counts[s] for s in kept}
        old_counts = plan.old_manifest or {}
        for split in plan.build:
            remove_split_files(out, split, [counts[split], old_counts.get(f'num_{split}')])
        _write_json(out / MANIFEST, pending)
        objects = _render_splits(out, plan.build, counts, seed, img_size, workers, progress)
        done = {}
        for split in plan.build:
            coco = _coco_dict(split, img_size, objects[split])
            _write_json(out / 'annotations' / f'instances_{split}.json', coco)
            done[split] = len(coco['annotations'])
        manifest = _manifest(common, counts, pending, done)
        _write_json(out / MANIFEST, manifest)
    return manifest


def _render_splits(out: Path, splits: list, counts: Dict[str, int], seed: int, img_size: int,
                   workers: int | None, progress: bool) -> Dict[str, list]:
    """Draw and write every image of ``splits``; return each split's per-image objects."""
    workers = min(2, os.cpu_count() or 1) if workers is None else max(1, workers)
    tasks = []
    for split in splits:
        (out / 'images' / split).mkdir(parents=True, exist_ok=True)
        tasks += [(str(out), split, i, seed, img_size) for i in range(counts[split])]
    (out / 'annotations').mkdir(exist_ok=True)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(tasks), unit='img', desc='demo data')
    results: list[list[dict]] = []
    with _worker_map(workers) as mapper:
        for objects in mapper(_render_and_write, tasks):
            results.append(objects)
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    per_split, start = {}, 0
    for split in splits:
        per_split[split] = results[start:start + counts[split]]
        start += counts[split]
    return per_split


@contextmanager
def _worker_map(workers: int) -> Iterator:
    """An order-preserving map: in-process for one worker, else a fork pool."""
    if workers <= 1:
        yield map
        return
    # fork: workers inherit the imported modules instead of re-importing
    # detptq (and with it mmdet) as spawn would.
    ctx = multiprocessing.get_context('fork')
    # cv2's own worker threads must not exist at fork time: a child would
    # inherit their locks held and hang in cv2.setNumThreads.
    parent_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with ctx.Pool(workers, initializer=_init_worker) as pool:
            yield lambda fn, tasks: pool.imap(fn, tasks, chunksize=16)
    finally:
        cv2.setNumThreads(parent_threads)


def is_demo_dataset_complete(root: str | os.PathLike, seed: int = 0, num_train: int = 4000,
                             num_val: int = 500, num_calib: int = 256, img_size: int = 320,
                             num_tune: int | None = None,
                             splits: Optional[Iterable[str]] = None) -> bool:
    """True if root holds a finished data set generated with these parameters (``splits``: only those)."""
    root = Path(root)
    manifest = read_manifest(root)
    if manifest is None:
        return False
    common = _common(seed, img_size)
    if any(manifest.get(k) != v for k, v in common.items()):
        return False
    finished = manifest.get('files') or {}
    counts = _split_counts(num_train, num_val, num_calib, num_tune)
    if any(manifest.get(f'num_{split}') != n for split, n in counts.items()):
        return False
    needed = counts if splits is None else {s: counts[s] for s in splits}
    return all(finished.get(split) == n and not missing_files(root, split, n)
               for split, n in needed.items())


@contextmanager
def _exclusive_lock(folder: Path) -> Iterator[None]:
    """Cross-process lock on the folder itself, so concurrent callers don't generate it twice."""
    handle = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        os.close(handle)


def ensure_demo_dataset(root: str | os.PathLike | None = None, seed: int = 0,
                        num_train: int = 4000, num_val: int = 500, num_calib: int = 256,
                        img_size: int = 320, workers: int | None = None,
                        progress: bool = False, num_tune: int | None = None,
                        splits: Optional[Iterable[str]] = None) -> str:
    """Generate or complete the demo data set in root (default: default_demo_root()) when that is safe; return root.

    ``splits`` (default: all) are the splits the caller reads; only those are
    generated now, the others when a later run needs them.
    """
    root = Path(root) if root is not None else default_demo_root()
    unknown = sorted(set(splits or ()) - set(SPLITS))
    if unknown:
        raise ValueError(f'unknown demo data split(s) {unknown}; the splits are {list(SPLITS)}')
    params = dict(seed=seed, num_train=num_train, num_val=num_val, num_calib=num_calib,
                  img_size=img_size, num_tune=num_tune)
    if not is_demo_dataset_complete(root, splits=splits, **params):  # read-only fast path first
        make_demo_dataset(root, workers=workers, progress=progress, splits=splits, **params)
    return str(root)
