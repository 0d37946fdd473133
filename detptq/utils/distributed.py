"""Distributed runs through mmengine's launchers (torchrun, slurm, mpi): set-up and rank-0 work.

    parser = argparse.ArgumentParser()
    add_launcher_args(parser)          # --launcher {none,pytorch,slurm,mpi}, --local_rank
    args = parser.parse_args()
    cfg = ...                          # the run's mmengine Config
    init_distributed(cfg, args)        # before Runner.from_cfg(cfg)

The process group is set up here, before the Runner is built, so the tools
know their rank early and the Runner (which calls ``init_dist`` only when no
group exists) reuses it. With CUDA this is mmengine's ``init_dist`` with the
config's ``env_cfg.dist_cfg`` (nccl by default). Without CUDA it is gloo:
mmengine 0.10.7's ``_init_dist_pytorch`` calls ``torch.cuda.set_device``
unconditionally, which fails on a CPU-only torch, and nccl needs GPUs.

PTQ in a distributed run is computed once and broadcast (docs/ARCHITECTURE.md,
"Distributed runs"): rank 0 calibrates and reconstructs on every calibration
image exactly as one process would, then ``share_from_main`` gives the
quantized state to every rank, and only the evaluations are sharded.
Only the main process writes files.
"""
from __future__ import annotations

import datetime
import os
from typing import Any, Optional

import torch
import torch.distributed as torch_dist
from mmengine.dist import (broadcast_object_list, get_dist_info, init_dist, is_distributed,
                           is_main_process)
from mmengine.logging import print_log

from detptq.utils.cli import UserInputError

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')
CPU_BACKEND = 'gloo'
__all__ = ['LAUNCHERS', 'add_launcher_args', 'init_distributed', 'is_main_process',
           'share_from_main', 'share_state_from_main', 'unshard_sampler']


def add_launcher_args(parser) -> None:
    """``--launcher`` and ``--local_rank/--local-rank``, as mmdet's tools have them."""
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none',
                        help='job launcher (pytorch = torchrun, see tools/dist_*.sh)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help='set by torch.distributed.launch; torchrun sets LOCAL_RANK')


def init_distributed(cfg, args, default_timeout: Optional[int] = None) -> None:
    """Set ``cfg.launcher`` from ``args`` and start the process group for a distributed launcher.

    ``default_timeout`` (seconds) is used when ``env_cfg.dist_cfg`` sets none:
    ranks that wait for rank 0's PTQ need more than torch's 30 minutes.
    """
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    cfg.launcher = args.launcher
    if cfg.launcher == 'none' or is_distributed():
        return
    dist_cfg = dict((cfg.get('env_cfg') or {}).get('dist_cfg') or {})
    if default_timeout is not None:
        dist_cfg.setdefault('timeout', default_timeout)
    if torch.cuda.is_available():
        init_dist(cfg.launcher, **dist_cfg)
        return
    if cfg.launcher != 'pytorch':
        raise UserInputError(
            f'--launcher {cfg.launcher} needs CUDA (mmengine sets the CUDA device); on a '
            'machine without GPUs use --launcher pytorch (tools/dist_test.sh, '
            'tools/dist_quantize.sh)')
    backend = dist_cfg.pop('backend', CPU_BACKEND)
    if backend != CPU_BACKEND:
        print_log(f'distributed: no CUDA, so backend {CPU_BACKEND} instead of the config\'s '
                  f'env_cfg.dist_cfg.backend={backend!r}', logger='current')
    if dist_cfg.get('timeout') is not None:
        dist_cfg['timeout'] = datetime.timedelta(seconds=dist_cfg['timeout'])
    torch_dist.init_process_group(backend=CPU_BACKEND, **dist_cfg)
    # mmengine's default wrapper pins the module to device LOCAL_RANK, which is CUDA-only
    if cfg.get('model_wrapper_cfg') is None:
        cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None,
                                     broadcast_buffers=False)


def share_from_main(obj: Any) -> Any:
    """``obj`` as the main process has it, on every rank (``obj`` itself in one process)."""
    if not is_distributed():
        return obj
    holder = [obj if is_main_process() else None]
    broadcast_object_list(holder, src=0)
    return holder[0]


def share_state_from_main(model: torch.nn.Module) -> None:
    """Load the main process's state dict of ``model`` into ``model`` on every other rank.

    Quantizers adopt the stored scale shapes (``UniformQuantizer._load_from_state_dict``),
    so a model quantized but not calibrated becomes the main process's model.
    """
    if not is_distributed():
        return
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()} \
        if is_main_process() else None
    state = share_from_main(state)
    if not is_main_process():
        model.load_state_dict(state, strict=True)


def unshard_sampler(sampler) -> None:
    """Make a sampler built in a distributed run yield the whole data set, as in one process.

    mmengine's ``DefaultSampler`` gives each rank every ``world_size``-th index;
    the calibration set must be whole on the rank that calibrates.
    """
    _, world_size = get_dist_info()
    if world_size == 1 or getattr(sampler, 'world_size', 1) == 1:
        return
    if not hasattr(sampler, 'total_size'):
        raise UserInputError(f'calib_dataloader.sampler: {type(sampler).__name__} cannot give '
                             'rank 0 the whole calibration set in a distributed run; use '
                             'mmengine\'s DefaultSampler')
    sampler.rank, sampler.world_size = 0, 1
    sampler.num_samples = sampler.total_size = len(sampler.dataset)
