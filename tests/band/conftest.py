"""Band tests run single-threaded: their tensors are small, and on a shared 2-core box OpenMP threads only
oversubscribe (measured 2-3x slower with 2 threads under load). The previous setting is restored after."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
