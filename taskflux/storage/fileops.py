"""The file-system calls through which the storage changes the disk: one seam for fault injection.

Every write, fsync, truncation, rename, unlink and directory creation of ``taskflux.storage`` goes
through a ``FileOps`` object (reads do not: they change nothing). ``DiskStorage`` uses ``FileOps()``,
which calls ``os`` directly; a test hands it a subclass that fails a chosen call, to check what the
storage and the node do when the disk is full or an fsync fails.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from threading import get_native_id  # the OS thread's id, also under gevent's monkey-patching
from typing import Any, Protocol


class FileOps:
    """The real calls, looked up on ``os`` at each call."""

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        return os.open(path, flags, mode)

    def pwrite(self, fd: int, data: bytes | bytearray | memoryview, offset: int) -> int:
        return os.pwrite(fd, data, offset)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def fdatasync(self, fd: int) -> None:
        os.fdatasync(fd)

    def ftruncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)

    def replace(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def unlink(self, path: str) -> None:
        os.unlink(path)

    def mkdir(self, path: str) -> None:
        os.mkdir(path)


REAL_FILE_OPS = FileOps()


class Runner(Protocol):
    """Runs a blocking call elsewhere and waits for it (``taskflux.server.disk_thread.DiskThread``)."""

    def call(self, function: Callable[..., Any], *args: Any) -> Any: ...


class ForwardingFileOps(FileOps):
    """Every call forwarded to ``inner``: the base of a variant that changes a few of them."""

    def __init__(self, inner: FileOps) -> None:
        self.inner = inner

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        return self.inner.open(path, flags, mode)

    def pwrite(self, fd: int, data: bytes | bytearray | memoryview, offset: int) -> int:
        return self.inner.pwrite(fd, data, offset)

    def fsync(self, fd: int) -> None:
        self.inner.fsync(fd)

    def fdatasync(self, fd: int) -> None:
        self.inner.fdatasync(fd)

    def ftruncate(self, fd: int, size: int) -> None:
        self.inner.ftruncate(fd, size)

    def replace(self, src: str, dst: str) -> None:
        self.inner.replace(src, dst)

    def unlink(self, path: str) -> None:
        self.inner.unlink(path)

    def mkdir(self, path: str) -> None:
        self.inner.mkdir(path)


class OffloadedSyncs(ForwardingFileOps):
    """``inner``'s calls, except that every fsync and fdatasync made from the thread that created this object
    (the hub's) is handed to ``runner``: the calling greenlet waits for the disk while the hub keeps serving,
    and the runner's thread runs one C call and hardly needs the GIL. Writes stay here: into the page cache,
    a few microseconds. Calls from any other thread (the runner's own, a worker writing a snapshot) and
    every call while ``direct`` is set are made here, as ``inner`` makes them."""

    def __init__(self, inner: FileOps, runner: Runner) -> None:
        super().__init__(inner)
        self.runner = runner
        self.direct = False
        self._thread = get_native_id()

    def fsync(self, fd: int) -> None:
        self._sync(self.inner.fsync, fd)

    def fdatasync(self, fd: int) -> None:
        self._sync(self.inner.fdatasync, fd)

    def _sync(self, sync: Callable[[int], None], fd: int) -> None:
        if self.direct or get_native_id() != self._thread:
            sync(fd)
        else:
            self.runner.call(sync, fd)
