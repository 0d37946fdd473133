"""Generated COCO-format demo data set: 10 look-alike shape classes on cluttered backgrounds.

No real data set can be downloaded here, so the demo, the training configs and
the tests run on this one. Layout under the root folder::

    images/{train,val,calib}/000000.jpg ...
    annotations/instances_{train,val,calib}.json   (COCO detection format)
    manifest.json                                  (written last: marks completion)

Every image is drawn from its own random stream seeded by (seed, split,
index), so the output is byte-identical for the same parameters whatever the
number of worker processes. See ``demo_scene`` for the annotation rules
(visible-extent boxes, objects occluded > 60 % dropped) and ``demo_shapes``
for the classes.
"""
import ctypes
import fcntl
import json
import multiprocessing
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from .demo_scene import SHAPE_CLASSES, render_scene

DEMO_CLASSES: tuple[str, ...] = SHAPE_CLASSES
SPLITS: tuple[str, ...] = ('train', 'val', 'calib')
# Bump when the drawing code changes, so cached folders are regenerated.
GENERATOR_VERSION = 1
JPEG_QUALITY = 90
ENV_VAR = 'DETPTQ_DEMO_DATA'
MANIFEST = 'manifest.json'
_SPLIT_CODES = {'train': 0, 'val': 1, 'calib': 2}
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
    # One thread per process: the pool already provides the parallelism.
    cv2.setNumThreads(1)
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


def _parameters(seed: int, num_train: int, num_val: int, num_calib: int,
                img_size: int) -> dict:
    return dict(generator_version=GENERATOR_VERSION, seed=seed,
                num_train=num_train, num_val=num_val, num_calib=num_calib,
                img_size=img_size, classes=list(DEMO_CLASSES))


def make_demo_dataset(out_dir: str | os.PathLike, seed: int = 0, num_train: int = 4000,
                      num_val: int = 500, num_calib: int = 256, img_size: int = 320,
                      workers: int | None = None, progress: bool = False) -> dict:
    """Generate the data set into out_dir (its images/<split> folders are replaced); return the manifest."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # incomplete until rewritten last
    workers = min(2, os.cpu_count() or 1) if workers is None else max(1, workers)
    counts = dict(train=num_train, val=num_val, calib=num_calib)
    tasks = []
    for split in SPLITS:
        shutil.rmtree(out / 'images' / split, ignore_errors=True)
        (out / 'images' / split).mkdir(parents=True)
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

    manifest = _parameters(seed, num_train, num_val, num_calib, img_size)
    manifest['files'], manifest['annotations'] = {}, {}
    start = 0
    for split in SPLITS:
        per_image = results[start:start + counts[split]]
        start += counts[split]
        coco = _coco_dict(split, img_size, per_image)
        _write_json(out / 'annotations' / f'instances_{split}.json', coco)
        manifest['files'][split] = counts[split]
        manifest['annotations'][split] = len(coco['annotations'])
    _write_json(out / MANIFEST, manifest)
    return manifest


@contextmanager
def _worker_map(workers: int) -> Iterator:
    """An order-preserving map: in-process for one worker, else a fork pool."""
    if workers <= 1:
        yield map
        return
    # fork: workers inherit the imported modules instead of re-importing
    # detptq (and with it mmdet) as spawn would.
    ctx = multiprocessing.get_context('fork')
    with ctx.Pool(workers, initializer=_init_worker) as pool:
        yield lambda fn, tasks: pool.imap(fn, tasks, chunksize=16)


def is_demo_dataset_complete(root: str | os.PathLike, **params) -> bool:
    """True if root holds a finished data set generated with these parameters."""
    root = Path(root)
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    if any(manifest.get(k) != v for k, v in _parameters(**params).items()):
        return False
    for split in SPLITS:
        if not (root / 'annotations' / f'instances_{split}.json').is_file():
            return False
        folder = root / 'images' / split
        found = sum(1 for e in os.scandir(folder) if e.name.endswith('.jpg')) \
            if folder.is_dir() else -1
        if found != manifest['files'][split]:
            return False
    return True


@contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """Cross-process lock so concurrent callers don't generate the same folder twice."""
    with open(path, 'w') as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_demo_dataset(root: str | os.PathLike | None = None, seed: int = 0,
                        num_train: int = 4000, num_val: int = 500, num_calib: int = 256,
                        img_size: int = 320, workers: int | None = None,
                        progress: bool = False) -> str:
    """Generate the demo data set into root (default: default_demo_root()) unless already complete; return root."""
    root = Path(root) if root is not None else default_demo_root()
    root.mkdir(parents=True, exist_ok=True)
    params = dict(seed=seed, num_train=num_train, num_val=num_val,
                  num_calib=num_calib, img_size=img_size)
    with _exclusive_lock(root / '.generate.lock'):
        if not is_demo_dataset_complete(root, **params):
            make_demo_dataset(root, workers=workers, progress=progress, **params)
    return str(root)
