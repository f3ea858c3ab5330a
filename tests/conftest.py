"""Shared test set-up."""

import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread():
    """Small models run fastest on one thread, and the test machine's cores are shared: a second
    intra-op thread that waits for a busy core makes every op many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
