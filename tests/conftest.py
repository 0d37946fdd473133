"""Fixtures shared by several test files (use with ``pytest.mark.usefixtures``)."""
import pytest
import torch


@pytest.fixture(scope='module')
def single_thread():
    """One torch thread for the module: tiny ops only pay thread start-up on a busy 2-core CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
