"""PTQLoop's calib_seed: a seed picks a reproducible calibration subset; None keeps the first images."""
import pytest
from mmdet.models.data_preprocessors import DetDataPreprocessor
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

from detptq.datasets.demo_data import DEMO_CLASSES, ensure_demo_dataset
from detptq.engine.loops.ptq_loop import PTQLoop


class _LoaderOnlyRunner:
    """What calibration_set uses of a Runner: build_dataloader and the run's seed."""
    build_dataloader = staticmethod(Runner.build_dataloader)
    seed = 0  # Runner.seed (set_randomness); only a shuffling sampler without its own seed reads it


@pytest.fixture(scope='module')
def calib_loader(tmp_path_factory):
    data = tmp_path_factory.mktemp('calib_seed') / 'data'
    ensure_demo_dataset(data, seed=1, num_train=1, num_val=1, num_calib=8, img_size=64)
    init_default_scope('detptq')
    pipeline = [dict(type='LoadImageFromFile'),
                dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape',
                                                      'img_shape'))]
    return dict(batch_size=2, num_workers=0, persistent_workers=False,
                sampler=dict(type='DefaultSampler', shuffle=False),
                dataset=dict(type='CocoDataset', data_root=str(data),
                             metainfo=dict(classes=DEMO_CLASSES),
                             ann_file='annotations/instances_calib.json',
                             data_prefix=dict(img='images/calib/'), test_mode=True,
                             pipeline=pipeline))


def calib_ids(loader_cfg, seed):
    loop = PTQLoop.__new__(PTQLoop)  # only the calibration step is exercised
    loop._runner = _LoaderOnlyRunner()
    loop.calib_dataloader_cfg, loop.num_calib_images, loop.calib_seed = loader_cfg, 4, seed
    return [img_id for img_id, _ in loop.calibration_set(DetDataPreprocessor()).image_ids]


def test_calib_seed_draws_reproducible_different_subsets(calib_loader):
    first = calib_ids(calib_loader, None)
    assert len(first) == 4 and first == sorted(first)  # the loader's own order
    by_seed = {seed: calib_ids(calib_loader, seed) for seed in range(4)}
    assert calib_ids(calib_loader, 2) == by_seed[2]  # reproducible
    assert len({tuple(sorted(ids)) for ids in by_seed.values()}) > 1  # seeds differ
    assert all(len(set(ids)) == 4 for ids in by_seed.values())
    assert calib_loader['sampler'] == dict(type='DefaultSampler', shuffle=False)  # not mutated
