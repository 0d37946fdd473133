"""Official YOLO rectangular evaluation batches, the mmengine/mmdet way.

Official YOLOv6 ``tools/eval.py`` (default ``infer_on_rect``) and YOLOv7
``test.py`` (``rect=True``) evaluate in batches of images of similar aspect
ratio, each batch letterboxed to its own shape:

* images in file-name order, then ``np.argsort`` of the aspect ratio
  (YOLOv6: ``w / h``; YOLOv7: ``h / w``);
* batch ``i`` = sorted positions ``[i * batch_size, (i + 1) * batch_size)``;
* relative shape ``[1, 1]``, or when every image of the batch is portrait /
  landscape the shape of its least elongated member; batch shape
  ``ceil(rel * img_size / stride + pad) * stride`` (h, w), ``pad`` 0.5.

:class:`YOLOBatchShapePolicy` (as mmyolo's ``BatchShapePolicy``) reorders a
dataset's ``data_list`` and writes each image's ``batch_shape``, which
:class:`~detptq.datasets.transforms.YOLOLetterbox` uses as its canvas;
:class:`YOLORectCocoDataset` applies it; :class:`YOLORectBatchSampler`
yields exactly those batches.
"""
from __future__ import annotations

from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
from mmdet.datasets import CocoDataset
from torch.utils.data import Sampler

from detptq.registry import DATA_SAMPLERS, DATASETS, TASK_UTILS

FAMILIES = ('yolov6', 'yolov7')


def official_rect_batches(hw: Sequence[Tuple[int, int]], batch_size: int,
                          img_size: int = 640, stride: int = 32,
                          pad: float = 0.5, family: str = 'yolov6'
                          ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order, batch index per sorted position, batch shapes (n_batches, 2) as (h, w)).

    ``hw`` are the image sizes (h, w) in file-name order; ``order`` indexes
    into it. The arithmetic follows each family's ``sort_files_shapes`` /
    ``LoadImagesAndLabels`` literally (operation order included).
    """
    if family not in FAMILIES:
        raise ValueError(f'family must be one of {FAMILIES}, got {family!r}')
    if batch_size < 1 or len(hw) == 0:
        raise ValueError(f'need batch_size >= 1 and images, got {batch_size}, {len(hw)}')
    s = np.array(hw, dtype=np.float64)  # (h, w)
    batch_index = np.floor(np.arange(len(s)) / batch_size).astype(np.int_)
    num_batches = batch_index[-1] + 1
    ar = s[:, 1] / s[:, 0] if family == 'yolov6' else s[:, 0] / s[:, 1]
    order = ar.argsort()
    ar = ar[order]
    shapes = [[1, 1]] * num_batches
    for i in range(num_batches):
        ari = ar[batch_index == i]
        mini, maxi = ari.min(), ari.max()
        if family == 'yolov6':  # ar = w / h; shapes [h, w]
            if maxi < 1:
                shapes[i] = [1, maxi]
            elif mini > 1:
                shapes[i] = [1 / mini, 1]
        else:  # yolov7: ar = h / w; shapes [h, w]
            if maxi < 1:
                shapes[i] = [maxi, 1]
            elif mini > 1:
                shapes[i] = [1, 1 / mini]
    batch_shapes = np.ceil(np.array(shapes) * img_size / stride + pad).astype(np.int_) * stride
    return order, batch_index, batch_shapes


@TASK_UTILS.register_module()
class YOLOBatchShapePolicy:
    """Reorder a data list into official rect batches and give each image its ``batch_shape``."""

    def __init__(self, batch_size: int = 32, img_size: int = 640, stride: int = 32,
                 pad: float = 0.5, family: str = 'yolov6') -> None:
        if family not in FAMILIES:
            raise ValueError(f'YOLOBatchShapePolicy: family must be one of {FAMILIES}, '
                             f'got {family!r}')
        self.batch_size, self.img_size, self.stride = batch_size, img_size, stride
        self.pad, self.family = pad, family

    def __call__(self, data_list: List[dict]) -> List[dict]:
        """The reordered list; each entry gains ``batch_shape`` (h, w) and ``rect_batch``."""
        by_name = sorted(range(len(data_list)), key=lambda i: data_list[i]['img_path'])
        named = [data_list[i] for i in by_name]
        hw = [(d['height'], d['width']) for d in named]
        order, batch_index, shapes = official_rect_batches(
            hw, self.batch_size, self.img_size, self.stride, self.pad, self.family)
        out = []
        for pos, i in enumerate(order):
            info = dict(named[i])
            info['rect_batch'] = int(batch_index[pos])
            info['batch_shape'] = tuple(int(v) for v in shapes[batch_index[pos]])
            out.append(info)
        return out


@DATASETS.register_module()
class YOLORectCocoDataset(CocoDataset):
    """mmdet's ``CocoDataset`` in official rect-batch order (``batch_shapes_cfg``)."""

    def __init__(self, *args, batch_shapes_cfg: Optional[dict] = None, **kwargs) -> None:
        self.batch_shapes_cfg = batch_shapes_cfg
        super().__init__(*args, **kwargs)

    def _apply_policy(self, data_list: List[dict]) -> List[dict]:
        if not self.batch_shapes_cfg:
            return data_list
        policy = TASK_UTILS.build(self.batch_shapes_cfg)
        self.rect_batch_size = policy.batch_size
        return policy(data_list)

    def filter_data(self) -> List[dict]:
        """Filter as mmdet, then (without ``indices``) reorder into rect batches."""
        data_list = super().filter_data()
        return data_list if self._indices is not None else self._apply_policy(data_list)

    def _get_unserialized_subset(self, indices) -> List[dict]:
        """The ``indices`` subset, then rect batches over it (shapes need the final list)."""
        return self._apply_policy(super()._get_unserialized_subset(indices))


@DATA_SAMPLERS.register_module()
class YOLORectBatchSampler(Sampler):
    """Yields the rect batches of a :class:`YOLORectCocoDataset`, in dataset order."""

    def __init__(self, sampler: Sampler, batch_size: int, drop_last: bool = False) -> None:
        dataset = getattr(sampler, 'dataset', None)
        expected = getattr(dataset, 'rect_batch_size', None)
        if expected is None:
            raise ValueError('YOLORectBatchSampler needs a YOLORectCocoDataset with '
                             'batch_shapes_cfg (dataset.type / batch_shapes_cfg in the config)')
        if batch_size != expected:
            raise ValueError(f'YOLORectBatchSampler: dataloader batch_size {batch_size} differs '
                             f'from batch_shapes_cfg.batch_size {expected}; set them equal')
        if getattr(sampler, 'world_size', 1) != 1 or getattr(sampler, 'shuffle', False):
            raise ValueError('YOLORectBatchSampler: rect batches need one process and '
                             'an unshuffled sampler')
        self.sampler, self.batch_size = sampler, batch_size

    def __iter__(self) -> Iterator[List[int]]:
        """Consecutive, unshuffled chunks: exactly the policy's batches."""
        batch: List[int] = []
        for idx in self.sampler:
            batch.append(idx)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def __len__(self) -> int:
        return (len(self.sampler) + self.batch_size - 1) // self.batch_size
