"""Shared fixtures of the band tests.

Band tests run single-threaded: their tensors are small, and on a shared 2-core box OpenMP threads only
oversubscribe (measured 2-3x slower with 2 threads under load); the previous setting is restored after. A
test that registers divergence names takes `registry`, which restores the registry after it.
"""

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


@pytest.fixture
def registry() -> Iterator[None]:
    """Restore the divergence registry after a test that registers names."""
    from bandpo.band import divergences

    saved = dict(divergences._REGISTRY)
    yield
    divergences._REGISTRY.clear()
    divergences._REGISTRY.update(saved)
