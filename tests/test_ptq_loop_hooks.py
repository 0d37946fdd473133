"""PTQLoop is the config's test loop: a user's custom hook sees the test hook points during PTQ."""
import importlib.util
import sys
from pathlib import Path

import pytest
from mmengine.hooks import Hook

from detptq.quantization import QUANT_MODULES
from detptq.registry import HOOKS

from helpers import TINY_PTQ_LOADERS, tiny_data_and_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY_DATA = dict(seed=1, num_train=2, num_val=6, num_calib=4, img_size=96)


@HOOKS.register_module(force=True)
class RecordTestHookPoints(Hook):
    """Records every test hook point it is called at; iteration points note the model's kind."""
    fired = []

    @staticmethod
    def _kind(runner) -> str:
        quantized = any(isinstance(m, QUANT_MODULES) for m in runner.model.modules())
        return 'quantized' if quantized else 'fp'

    def before_test(self, runner) -> None:
        self.fired.append('before_test')

    def before_test_epoch(self, runner) -> None:
        self.fired.append('before_test_epoch')

    def before_test_iter(self, runner, batch_idx, data_batch=None) -> None:
        self.fired.append(f'before_test_iter {self._kind(runner)} {batch_idx}')

    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        assert len(outputs) == len(data_batch['inputs'])  # the batch's predictions
        self.fired.append(f'after_test_iter {self._kind(runner)} {batch_idx}')

    def after_test_epoch(self, runner, metrics=None) -> None:
        self.fired.append(('after_test_epoch', sorted(metrics)))

    def after_test(self, runner) -> None:
        self.fired.append('after_test')


def load_quantize_tool():
    spec = importlib.util.spec_from_file_location('quantize_tool', ROOT / 'tools/quantize.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_custom_hook_sees_every_test_hook_point(tmp_path, monkeypatch) -> None:
    data, ckpt = tiny_data_and_checkpoint(tmp_path, TINY_DATA)
    cfg_path = tmp_path / 'hooked.py'
    cfg_path.write_text(
        f"_base_ = ['{ROOT / 'configs/demo/yolov6n_demo_minmax_w8a8.py'}']\n"
        f"data_root = '{data}/'\ndemo_data = {TINY_DATA}\nload_from = '{ckpt}'\n"
        "custom_hooks = [dict(type='RecordTestHookPoints')]\n" + TINY_PTQ_LOADERS)
    monkeypatch.setenv('DETPTQ_CACHE', str(tmp_path / 'cache'))  # the FP pass really runs
    monkeypatch.setattr(sys, 'argv', ['quantize.py', str(cfg_path),
                                      '--work-dir', str(tmp_path / 'work')])
    RecordTestHookPoints.fired.clear()
    load_quantize_tool().main()

    fired = RecordTestHookPoints.fired
    iters = [f'{point} {kind} {i}' for kind in ('fp', 'quantized') for i in range(3)
             for point in ('before_test_iter', 'after_test_iter')]  # 6 val images, batches of 2
    assert fired == ['before_test', 'before_test_epoch', *iters,
                     ('after_test_epoch', ['AP50', 'AP75', 'APl', 'APm', 'APs', 'mAP']),
                     'after_test']
    assert (tmp_path / 'work' / 'quantized.pth').is_file()


@pytest.mark.parametrize('flag, loop_cfg', [('--no-fp-eval', dict(eval_fp=False)),
                                             ('--no-eval', dict(eval_fp=False, run_eval=False))])
def test_flags_become_test_cfg_settings(tmp_path, monkeypatch, flag, loop_cfg) -> None:
    """The tool's flags are config options applied before the Runner is built."""
    tool = load_quantize_tool()
    data, ckpt = tiny_data_and_checkpoint(tmp_path, TINY_DATA)
    cfg_path = tmp_path / 'flags.py'
    cfg_path.write_text(
        f"_base_ = ['{ROOT / 'configs/demo/yolov6n_demo_minmax_w8a8.py'}']\n"
        f"data_root = '{data}/'\ndemo_data = {TINY_DATA}\nload_from = '{ckpt}'\n"
        + TINY_PTQ_LOADERS)
    monkeypatch.setattr(sys, 'argv', ['quantize.py', str(cfg_path), flag,
                                      '--work-dir', str(tmp_path / 'work')])
    built = {}

    class NotRun:
        def test(self) -> None:
            built['tested'] = True

    def build_runner(cfg, checkpoint):
        built['cfg'] = cfg
        return NotRun()

    monkeypatch.setattr(tool, 'build_eval_runner', build_runner)
    tool.main()
    assert built['tested']
    assert built['cfg'].test_cfg == dict(type='PTQLoop', **loop_cfg)
