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


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    """(folder, data, checkpoint): tiny demo data and a random-weight YOLOv6-N."""
    tmp = tmp_path_factory.mktemp('ptq_hooks')
    return (tmp, *tiny_data_and_checkpoint(tmp, TINY_DATA))


def write_config(tiny, name: str, extra: str = '', load_from: bool = True) -> Path:
    """A tiny MinMax W8A8 demo PTQ config plus ``extra`` lines."""
    tmp, data, ckpt = tiny
    path = tmp / f'{name}.py'
    path.write_text(f"_base_ = ['{ROOT / 'configs/demo/yolov6n_demo_minmax_w8a8.py'}']\n"
                    f"data_root = '{data}/'\ndemo_data = {TINY_DATA}\n"
                    + (f"load_from = '{ckpt}'\n" if load_from else '') + extra + TINY_PTQ_LOADERS)
    return path


def load_tool(name: str):
    """tools/<name>.py as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f'{name}_tool', ROOT / f'tools/{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_custom_hook_sees_every_test_hook_point(tiny, tmp_path, monkeypatch) -> None:
    cfg_path = write_config(tiny, 'hooked', "custom_hooks = [dict(type='RecordTestHookPoints')]\n")
    monkeypatch.setenv('DETPTQ_CACHE', str(tmp_path / 'cache'))  # the FP pass really runs
    monkeypatch.setattr(sys, 'argv', ['quantize.py', str(cfg_path),
                                      '--work-dir', str(tmp_path / 'work')])
    RecordTestHookPoints.fired.clear()
    load_tool('quantize').main()

    fired = RecordTestHookPoints.fired
    iters = [f'{point} {kind} {i}' for kind in ('fp', 'quantized') for i in range(3)
             for point in ('before_test_iter', 'after_test_iter')]  # 6 val images, batches of 2
    assert fired == ['before_test', 'before_test_epoch', *iters,
                     ('after_test_epoch', ['AP50', 'AP75', 'APl', 'APm', 'APs', 'mAP']),
                     'after_test']
    assert (tmp_path / 'work' / 'quantized.pth').is_file()


@pytest.mark.parametrize('flag, loop_cfg', [('--no-fp-eval', dict(eval_fp=False)),
                                             ('--no-eval', dict(eval_fp=False, run_eval=False))])
def test_flags_become_test_cfg_settings(tiny, tmp_path, monkeypatch, flag, loop_cfg) -> None:
    """The tool's flags are config options applied before the Runner is built."""
    tool = load_tool('quantize')
    cfg_path = write_config(tiny, 'flags')
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


def test_quant_wrapper_hook_in_a_plain_test_run(tiny, tmp_path, monkeypatch) -> None:
    """tools/test.py on a PTQ config runs mmengine's TestLoop; a QuantWrapperHook quantizes first."""
    cfg_path = write_config(
        tiny, 'fake_quant', load_from=False,
        extra="custom_hooks = [dict(type='QuantWrapperHook', quant_cfg=dict(w_bits=4, a_bits=4),\n"
              "                     num_batches=2, stages='before_test'),\n"
              "                dict(type='RecordTestHookPoints')]\n")
    ckpt = tiny[2]
    tool = load_tool('test')
    monkeypatch.setattr(sys, 'argv', ['test.py', str(cfg_path), str(ckpt),
                                      '--work-dir', str(tmp_path / 'work')])
    RecordTestHookPoints.fired.clear()
    tool.main()
    iters = [f'{point} quantized {i}' for i in range(3)
             for point in ('before_test_iter', 'after_test_iter')]
    fired = RecordTestHookPoints.fired
    assert fired[:2] == ['before_test', 'before_test_epoch'] and fired[2:8] == iters
    assert fired[-1] == 'after_test' and not (tmp_path / 'work' / 'quantized.pth').exists()
