"""The process's garbage-collection policy: long-lived objects are kept out of full collections."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator

import pytest

from taskflux.domain.manager import QueueManager
from taskflux.server.main import freeze_survivors


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()  # other tests run in this process


def test_records_frozen_out_of_full_collections_make_them_cheap(unfrozen: None) -> None:
    manager = QueueManager()
    queue = manager.get("")
    for i in range(300_000):
        queue.add(i % 5, b"r")  # type: ignore[union-attr]
    started = time.perf_counter()
    gc.collect()
    scanning = time.perf_counter() - started
    freeze_survivors()
    assert gc.get_freeze_count() >= 300_000
    started = time.perf_counter()
    gc.collect()
    frozen = time.perf_counter() - started
    assert frozen < scanning / 3, f"a full collection took {frozen:.3f} s frozen, {scanning:.3f} s before"
    assert queue.stored == 300_000  # type: ignore[union-attr]  # nothing lost: frozen objects stay alive
