"""A fixture that runs a test on one intra-op thread: on the shared 2-core machine the tiny tensors of
these tests are ~10x slower with two contending threads than with one."""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture
def single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
