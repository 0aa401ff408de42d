"""Shared test settings."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    """One intra-op thread per test module, restored afterwards.

    Tensors in unit tests are tiny; on a busy 2-core machine OpenMP's thread barriers turn each op into a
    multi-millisecond wait. Subprocesses (the DVC pipeline tests) keep torch's default.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True, scope="module")
def _restore_determinism() -> Iterator[None]:
    """Trainer.fit turns on torch.use_deterministic_algorithms process-wide; give the next module the setting back."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(deterministic)
