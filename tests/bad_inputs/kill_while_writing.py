"""Run tools/quantize.py and SIGKILL it half-way through writing ``quantized.pth``.

    python tests/bad_inputs/kill_while_writing.py CONFIG [quantize.py args...]

torch.save is wrapped so that, for quantized.pth only, half of the bytes reach
the (temporary) file before the process kills itself: the state a power cut or
``kill -9`` during the final write leaves behind.
"""
import io
import os
import runpy
import signal
import sys
from pathlib import Path

import torch

import detptq.utils.checkpoint as checkpoint_module

ROOT = Path(__file__).resolve().parents[2]
_real_save = torch.save
_real_atomic = checkpoint_module.torch_save_atomic
_writing_final = []


def _dying_save(obj, f, *args, **kwargs):
    if not _writing_final:
        return _real_save(obj, f, *args, **kwargs)
    buffer = io.BytesIO()
    _real_save(obj, buffer, *args, **kwargs)
    data = buffer.getvalue()
    f.write(data[:len(data) // 2])
    f.flush()
    os.fsync(f.fileno())
    os.kill(os.getpid(), signal.SIGKILL)


def _watch_final(obj, path):
    if str(path).endswith('quantized.pth'):
        _writing_final.append(path)
    return _real_atomic(obj, path)


torch.save = _dying_save
checkpoint_module.torch_save_atomic = _watch_final
sys.argv = [str(ROOT / 'tools' / 'quantize.py'), *sys.argv[1:]]
runpy.run_path(sys.argv[0], run_name='__main__')
