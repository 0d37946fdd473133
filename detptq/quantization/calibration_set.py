"""The calibration set: batches of model inputs for the calibration images, plus the images' ids.

Every step that runs a model on calibration images (``calibrate``, the DetPTQ
p search, reconstruction, sensitivity analysis, the ONNX export checks) takes
a :class:`CalibrationSet`, so mmengine data batches become model inputs in
this one place::

    calib = CalibrationSet.from_loader(loader, model.data_preprocessor, num_images=32)
    calib[0]           # the first batch: the data preprocessor's ``inputs`` tensor (B, 3, H, W)
    calib.image_ids    # ((img_id, file name), ...) of every image, in order
    calib.first(16)    # the first 16 images (the last batch cut to fit)

The batches are read from the loader once and kept as loaded (uint8 images);
the data preprocessor (eval mode: ``training=False``, no batch augmentation,
deterministic) turns one into its float input tensor each time it is read.
Kept as float tensors, 256 images at 640 x 640 would take 1.2 GB instead of
0.3 GB (the MinMax demo's peak memory rose from 821 to 1046 MB), while
preprocessing a batch costs milliseconds.
Batches that are not mmengine data dicts (tensors, or tuples of positional
arguments for a custom ``forward_fn``) are model inputs already, without ids.
"""
from __future__ import annotations

import os.path as osp
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass
from itertools import islice
from typing import Any, Callable, Iterable, Iterator, Optional, Tuple

import torch

ImageId = Tuple[Any, str]  # (img_id or None, file name)


def _is_data_batch(batch: Any) -> bool:
    """True for an mmengine data batch (a dict with ``inputs``), which needs preprocessing."""
    return isinstance(batch, dict) and 'inputs' in batch


def _images_in(batch: Any) -> int:
    """Images in one batch: an mmengine data batch's inputs, a tensor's leading size, else 1."""
    if _is_data_batch(batch):
        return len(batch['inputs'])
    return batch.shape[0] if isinstance(batch, torch.Tensor) else 1


def _image_id(sample: Any) -> ImageId:
    """(img_id, file name) of one data sample, from its metainfo."""
    meta = getattr(sample, 'metainfo', {})
    return meta.get('img_id'), osp.basename(str(meta.get('img_path', '')))


@dataclass(frozen=True, eq=False)
class CalibrationSet(SequenceABC):
    """A sequence of batches of model inputs (``len``, ``calib[i]``, iteration) and the images' ids.

    ``data``: the batches as loaded; ``sizes``: images used of each (fewer
    than it holds when ``first`` cut it); ``preprocess``: loaded batch ->
    model inputs (None: ``data`` are model inputs already).
    """
    data: Tuple[Any, ...]
    sizes: Tuple[int, ...]
    image_ids: Tuple[ImageId, ...] = ()
    preprocess: Optional[Callable[[Any], Any]] = None

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> Any:
        batch = self.data[index]
        if self.preprocess is not None:
            with torch.no_grad():
                batch = self.preprocess(batch)
        size = self.sizes[index]
        return batch[:size] if size < _images_in(batch) else batch

    def __iter__(self) -> Iterator[Any]:
        return (self[i] for i in range(len(self)))

    @property
    def num_images(self) -> int:
        """Images over all batches."""
        return sum(self.sizes)

    def first(self, num_images: Optional[int], whole_batches: bool = False) -> 'CalibrationSet':
        """The first ``num_images`` images (all if None).

        ``whole_batches`` keeps every batch whole: the batches from the start
        until at least ``num_images`` images; otherwise the last batch is cut.
        """
        if num_images is None:
            return self
        sizes, count = [], 0
        for size in self.sizes:
            if count >= num_images:
                break
            if not whole_batches:
                size = min(size, num_images - count)
            sizes.append(size)
            count += size
        return CalibrationSet(self.data[:len(sizes)], tuple(sizes), self.image_ids[:count],
                              self.preprocess)

    @classmethod
    def from_loader(cls, loader: Iterable, data_preprocessor: Optional[Callable] = None,
                    num_images: Optional[int] = None,
                    num_batches: Optional[int] = None) -> 'CalibrationSet':
        """The first batches of ``loader`` (any iterable of batches), read once.

        ``num_images``: whole batches until at least that many images (in the
        loader's ``batch_size``; at least one batch); ``num_batches``: that
        many batches; neither: all. mmengine data dicts become model inputs
        through ``data_preprocessor(batch, False)['inputs']``.
        """
        if num_images is not None:
            batch_size = getattr(loader, 'batch_size', None) or 1
            num_batches = max(1, -(-num_images // batch_size))
        data = tuple(islice(iter(loader), num_batches))
        loaded = [_is_data_batch(b) for b in data]
        if any(loaded) and not all(loaded):
            raise TypeError('calibration batches mix mmengine data dicts and model inputs')
        if not any(loaded):
            return cls(data, tuple(_images_in(b) for b in data))
        if data_preprocessor is None:
            raise TypeError('a calibration batch is an mmengine data dict; build the calibration '
                            'set with CalibrationSet.from_loader(loader, model.data_preprocessor)')
        ids = tuple(_image_id(s) for b in data for s in b.get('data_samples') or [])
        return cls(data, tuple(_images_in(b) for b in data), ids,
                   lambda batch: data_preprocessor(batch, False)['inputs'])

    @classmethod
    def of(cls, data: Iterable, num_batches: Optional[int] = None) -> 'CalibrationSet':
        """``data`` as a calibration set: itself if it is one, else its batches of model inputs.

        ``num_batches`` keeps only that many batches.
        """
        if isinstance(data, CalibrationSet):
            if num_batches is None or num_batches >= len(data):
                return data
            return data.first(sum(data.sizes[:num_batches]), whole_batches=True)
        return cls.from_loader(data, num_batches=num_batches)
