"""A disk that stalls, for tests of what the node does while its writes hang."""

from __future__ import annotations

import pytest
from gevent import monkey

from taskflux.storage.disk import DiskStorage
from taskflux.storage.fileops import FileOps, ForwardingFileOps, OffloadedSyncs


class StalledSyncs(ForwardingFileOps):
    """Every fdatasync takes ``seconds`` longer, with the real, blocking sleep: wherever the node runs it (its
    disk thread, or the hub when it writes there itself), it blocks that thread, as a stalled disk would."""

    def __init__(self, inner: FileOps, seconds: float) -> None:
        super().__init__(inner)
        self.seconds = seconds
        self._sleep = monkey.get_original("time", "sleep")

    def fdatasync(self, fd: int) -> None:
        self._sleep(self.seconds)
        self.inner.fdatasync(fd)


def stall_appends(storage: DiskStorage, seconds: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every log append of ``storage`` (its fdatasync) takes ``seconds`` longer, from now on."""
    ops = storage.file_ops
    if isinstance(ops, OffloadedSyncs):  # a running node's: stall inside, where the disk thread calls
        monkeypatch.setattr(ops, "inner", StalledSyncs(ops.inner, seconds))
    else:
        monkeypatch.setattr(storage, "file_ops", StalledSyncs(ops, seconds))
