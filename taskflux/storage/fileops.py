"""The file-system calls through which the storage changes the disk: one seam for fault injection.

Every write, fsync, truncation, rename, unlink and directory creation of ``taskflux.storage`` goes
through a ``FileOps`` object (reads do not: they change nothing). ``DiskStorage`` uses ``FileOps()``,
which calls ``os`` directly; a test hands it a subclass that fails a chosen call, to check what the
storage and the node do when the disk is full or an fsync fails.
"""

from __future__ import annotations

import os


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
