"""The committed demo checkpoints: small, plain tensors, loadable into their config's deploy model."""
import json
from pathlib import Path

import pytest
import torch
from mmengine.registry import init_default_scope

from detptq.engine.config_utils import load_config
from detptq.models.deploy import switch_to_deploy
from detptq.registry import MODELS
from detptq.utils.checkpoint import is_deploy_checkpoint, load_checkpoint_file, state_dict_of

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = sorted((ROOT / 'checkpoints').glob('*.pth'))


def test_both_demo_models_are_committed():
    assert {p.name for p in CHECKPOINTS} >= {'yolov6n_demo.pth', 'yolov6n_qa_demo.pth'}


@pytest.mark.parametrize('path', CHECKPOINTS, ids=lambda p: p.name)
def test_demo_checkpoint_loads_strictly_into_its_config(path):
    record = json.loads(path.with_suffix('.json').read_text())
    assert path.stat().st_size < 12 * 1024 ** 2
    assert record['metrics']['coco/bbox_mAP'] >= 0.5  # the floor, measured by test.py
    assert is_deploy_checkpoint(str(path))
    state = state_dict_of(load_checkpoint_file(str(path)))  # weights_only: plain tensors
    cfg = load_config(str(ROOT / record['config']))
    init_default_scope('detptq')  # as the runner does from default_scope
    model = switch_to_deploy(MODELS.build(cfg.model)).eval()
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    assert sum(v.numel() for v in state.values()) == record['params']
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 320, 320), mode='tensor')
    assert all(torch.isfinite(t).all() for t in torch.utils._pytree.tree_leaves(out))
