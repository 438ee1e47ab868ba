"""A fixture that runs a test on one intra-op thread: on the shared 2-core machine the tiny tensors of
these tests are ~10x slower with two contending threads than with one."""

from collections.abc import Iterator

import pytest

from slimkit.calib.hessian import one_thread


@pytest.fixture
def single_thread() -> Iterator[None]:
    with one_thread():
        yield
