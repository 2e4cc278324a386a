"""A disk that stalls, for tests of what the node does while its writes hang."""

from __future__ import annotations

import pytest
from gevent import monkey

from taskflux.storage.disk import DiskStorage


def stall_appends(storage: DiskStorage, seconds: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every log append of ``storage`` takes ``seconds`` longer. It runs in the node's disk thread, or on the hub
    when the node writes there itself, so the real, blocking sleep is the one to use (a stalled disk blocks the
    hub)."""
    real_sleep = monkey.get_original("time", "sleep")
    append = storage.append

    def stalled(entries) -> None:  # type: ignore[no-untyped-def]
        real_sleep(seconds)
        append(entries)

    monkeypatch.setattr(storage, "append", stalled)
