"""ImageFolderDataset: calibration images from any folder, no annotations.

    calib_dataloader = dict(batch_size=8, num_workers=2, sampler=dict(type='DefaultSampler'),
                            dataset=dict(type='ImageFolderDataset', data_root='my_images/',
                                         num_images=256, seed=0, pipeline=test_pipeline))

Every ``.jpg`` / ``.jpeg`` / ``.png`` under ``data_root`` (recursively, extensions
in any case) is a candidate. ``num_images`` of them are drawn with
``random.Random(seed)`` from the sorted path list, so the same folder and seed
always give the same images; files that cannot be decoded are skipped (and
counted in one log line) and the next candidate takes their place. The
pipeline is the model's test pipeline without ``LoadAnnotations``
(``detptq.engine.config_utils.calib_dir_dataloader`` builds it).
"""
from __future__ import annotations

import os
import os.path as osp
import random
from typing import List, Optional, Sequence

import mmcv
from mmengine.dataset import BaseDataset
from mmengine.fileio import get
from mmengine.logging import print_log

from detptq.registry import DATASETS

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')
#: seed of the calibration sample when none is given (documented in the README)
DEFAULT_CALIB_SEED = 0


class ImageFolderError(FileNotFoundError):
    """The folder does not exist or holds no readable image."""


def list_images(folder: str, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> List[str]:
    """Sorted paths of the image files under ``folder`` (recursive, case-insensitive ext)."""
    if not osp.isdir(folder):
        raise ImageFolderError(f'calibration image folder {folder!r} does not exist')
    exts = tuple(e.lower() for e in extensions)
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs.sort()
        found += [osp.join(root, f) for f in files if f.lower().endswith(exts)]
    return sorted(found)


def is_readable_image(path: str, backend_args: Optional[dict] = None) -> bool:
    """True when ``path`` decodes as an image the way ``LoadImageFromFile`` reads it."""
    try:
        img = mmcv.imfrombytes(get(path, backend_args=backend_args), flag='color')
    except Exception:  # noqa: BLE001 - any decoder failure means "unreadable"
        return False
    return img is not None and img.size > 0


@DATASETS.register_module()
class ImageFolderDataset(BaseDataset):
    """A seeded sample of the images under ``data_root``; items carry ``img_path`` and ``img_id``.

    Args:
        num_images: how many images to draw (None: all readable ones).
        seed: seed of the draw (default ``DEFAULT_CALIB_SEED``).
        extensions: file name endings accepted (compared in lower case).
        backend_args: mmengine file backend arguments, as ``LoadImageFromFile``'s.
        **kwargs: ``BaseDataset`` arguments (``data_root``, ``pipeline``, ...).
    """

    METAINFO = dict(classes=())

    def __init__(self, num_images: Optional[int] = None, seed: int = DEFAULT_CALIB_SEED,
                 extensions: Sequence[str] = IMAGE_EXTENSIONS,
                 backend_args: Optional[dict] = None, **kwargs) -> None:
        if num_images is not None and (isinstance(num_images, bool)
                                       or not isinstance(num_images, int) or num_images < 1):
            raise ValueError(f'ImageFolderDataset: num_images={num_images!r}; '
                             'expected a positive int or None')
        self.num_images = num_images
        self.seed = seed
        self.extensions = tuple(extensions)
        self.backend_args = backend_args
        self.skipped: List[str] = []
        kwargs.setdefault('test_mode', True)
        super().__init__(**kwargs)

    def load_data_list(self) -> List[dict]:
        """Draw the sample: shuffled candidates, unreadable ones skipped, until enough."""
        folder = self.data_root
        candidates = list_images(folder, self.extensions)
        random.Random(self.seed).shuffle(candidates)
        wanted = len(candidates) if self.num_images is None else self.num_images
        chosen, self.skipped = [], []
        for path in candidates:
            if len(chosen) == wanted:
                break
            (chosen if is_readable_image(path, self.backend_args) else self.skipped).append(path)
        if self.skipped:
            print_log(f'ImageFolderDataset: skipped {len(self.skipped)} unreadable image '
                      f'file(s) in {folder!r}, e.g. {self.skipped[0]!r}', logger='current')
        if not chosen:
            what = (f'no image file ({"/".join(self.extensions)})' if not candidates
                    else f'no readable image among its {len(candidates)} image files')
            raise ImageFolderError(f'calibration image folder {folder!r} holds {what}')
        chosen.sort()
        print_log(f'ImageFolderDataset: {len(chosen)} of {len(candidates)} images in '
                  f'{folder!r} (seed {self.seed})', logger='current')
        return [dict(img_path=path, img_id=i) for i, path in enumerate(chosen)]

    def file_list(self) -> List[str]:
        """Paths of the chosen images, in data set order."""
        return [self.get_data_info(i)['img_path'] for i in range(len(self))]
