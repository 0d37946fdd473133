"""Foundation: registries resolve mmdet and detptq parts; checkpoints round-trip safely."""
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import detptq
from detptq.registry import MODELS, TRANSFORMS
from detptq.utils.checkpoint import (CheckpointError, is_deploy_checkpoint,
                                     load_checkpoint_file, save_checkpoint_file)

CONFIG_TEXT = """
default_scope = 'detptq'
pipeline = [dict(type='RandomFlip', prob=0.0),
            dict(type='YOLOLetterbox', scale=(64, 64))]
preprocessor = dict(type='DetDataPreprocessor', mean=[0, 0, 0], std=[255, 255, 255])
"""


def test_version() -> None:
    assert isinstance(detptq.__version__, str) and detptq.__version__.count('.') == 2


def test_one_config_resolves_mmdet_and_detptq_components(tmp_path) -> None:
    path = tmp_path / 'cfg.py'
    path.write_text(CONFIG_TEXT)
    cfg = Config.fromfile(str(path))
    init_default_scope(cfg.default_scope)
    flip, letterbox = [TRANSFORMS.build(t) for t in cfg.pipeline]
    assert type(flip).__module__.startswith('mmdet.')
    assert type(letterbox).__module__.startswith('detptq.')
    # the data preprocessor comes from mmdet's MODELS through detptq's child registry
    pre = MODELS.build(cfg.preprocessor)
    assert type(pre).__name__ == 'DetDataPreprocessor'
    # the letterbox does real work: a 32x16 image is scaled to 64x32 and padded centred
    out = letterbox.transform(dict(img=np.zeros((16, 32, 3), np.uint8)))
    assert out['img'].shape == (64, 64, 3)
    assert out['scale_factor'] == (2.0, 2.0)
    np.testing.assert_array_equal(out['pad_param'], [16, 16, 0, 0])
    assert out['img'][0, 0, 0] == 114 and out['img'][32, 32, 0] == 0


def test_plain_checkpoint_round_trip(tmp_path) -> None:
    state = {'state_dict': {'conv.weight': torch.randn(2, 3, 3, 3),
                            'head.rbr_reparam.bias': torch.randn(2)},
             'meta': {'epoch': np.int64(3), 'mAP': np.float32(0.5),
                      'classes': ('a', 'b'), 'stats': np.arange(3)}}
    path = str(tmp_path / 'ckpt.pth')
    save_checkpoint_file(state, path)
    loaded = load_checkpoint_file(path)
    torch.testing.assert_close(loaded['state_dict']['conv.weight'],
                               state['state_dict']['conv.weight'])
    # numpy values became Python scalars / tensors, so any torch reads them
    assert loaded['meta']['epoch'] == 3 and type(loaded['meta']['epoch']) is int
    assert isinstance(loaded['meta']['stats'], torch.Tensor)
    assert is_deploy_checkpoint(path)


def test_runner_checkpoints_load_weights_only_wherever_they_are(tmp_path) -> None:
    from mmengine.logging import HistoryBuffer
    buf = HistoryBuffer()
    buf.update(1.5)
    path = str(tmp_path / 'epoch_1.pth')
    torch.save({'message_hub': {'log_scalars': {'loss': buf}},
                'meta': {'seed': np.int64(1)}}, path)
    # no folder is trusted: mmengine's HistoryBuffer is on the weights-only allow-list
    loaded = load_checkpoint_file(path)
    assert loaded['message_hub']['log_scalars']['loss'].current() == 1.5
    assert loaded['meta']['seed'] == 1


def test_truncated_and_random_files_name_the_file(tmp_path) -> None:
    good = str(tmp_path / 'good.pth')
    save_checkpoint_file({'state_dict': {'w': torch.randn(64, 64)}}, good)
    data = open(good, 'rb').read()
    for name, content in (('half.pth', data[:len(data) // 2]),
                          ('noise.pth', bytes(np.random.default_rng(0).integers(0, 256, 4096,
                                                                                 dtype=np.uint8))),
                          ('empty.pth', b'')):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(CheckpointError, match='not a readable PyTorch checkpoint') as err:
            load_checkpoint_file(str(path))
        assert name in str(err.value)


class Arbitrary:  # a class no checkpoint should be allowed to instantiate
    pass


def test_arbitrary_pickles_are_refused_with_a_clear_error(tmp_path) -> None:
    path = str(tmp_path / 'evil.pt')
    torch.save({'model': Arbitrary()}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint_file(path)
    message = str(err.value)
    assert 'evil.pt' in message and 'convert_ckpt.py' in message
    assert 'Arbitrary' in message


def test_missing_checkpoint_names_the_path(tmp_path) -> None:
    with pytest.raises(CheckpointError, match='nothere.pth'):
        load_checkpoint_file(osp.join(str(tmp_path), 'nothere.pth'))


def test_mmengine_load_checkpoint_uses_the_safe_loader(tmp_path) -> None:
    from mmengine.runner import load_checkpoint
    net = torch.nn.Linear(2, 2)
    path = str(tmp_path / 'lin.pth')
    save_checkpoint_file({'state_dict': net.state_dict(),
                          'meta': {'note': 'x'}}, path)
    other = torch.nn.Linear(2, 2)
    load_checkpoint(other, path)
    torch.testing.assert_close(other.weight, net.weight)
