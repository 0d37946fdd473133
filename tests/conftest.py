"""Fixtures shared by several test files (use with ``pytest.mark.usefixtures``)."""
import os

import pytest
import torch

# `make test` runs the test files in pytest-xdist workers: each takes its share of the cores
_WORKERS = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
if _WORKERS > 1:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // _WORKERS))


@pytest.fixture(scope='module')
def single_thread():
    """One torch thread for the module: tiny ops only pay thread start-up on a busy 2-core CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
