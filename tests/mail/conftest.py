"""Fixtures of the delivery tests."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from taxease_auth.heap import freeze_startup_objects


@pytest.fixture
def worker_process_heap() -> Iterator[None]:
    """The collector as a `taxease-auth worker` process has it: start-up's objects frozen
    (taxease_auth/heap.py), so that a test of the real-time pace meets the pauses a worker
    meets. Without it, a full collection over this test process's heap (moto, the whole
    suite's modules) stalls the event loop for 0.2-0.5 s, which costs the dispatcher that many
    turns."""
    freeze_startup_objects()
    yield
    gc.unfreeze()
