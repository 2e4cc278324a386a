"""A FileOps that fails chosen calls: the disk faults a real disk cannot be made to produce on demand."""

from __future__ import annotations

import errno
import os
from collections import Counter

from taskflux.storage.fileops import FileOps


class FaultyFileOps(FileOps):
    """Real file-system calls, except that the ``nth`` call (1-based) of operation ``op`` raises
    ``OSError(error)`` — and every later one too when ``sticky`` (a disk that stays full or broken).

    ``op`` is a FileOps method name: ``pwrite``, ``fsync``, ``fdatasync``, ``ftruncate``, ``replace``,
    ``unlink``, ``mkdir`` or ``open``. ``calls`` counts every call made, by operation; ``failures`` how
    many were made to fail, ``trace`` every call's operation in order. ``heal()`` lets every later call
    through.
    """

    def __init__(self, op: str = "", nth: int = 0, error: int = errno.EIO, *, sticky: bool = False) -> None:
        self.op = op
        self.nth = nth
        self.error = error
        self.sticky = sticky
        self.calls: Counter[str] = Counter()
        self.trace: list[str] = []
        self.failures = 0

    def arm(self, op: str, nth: int, error: int = errno.EIO, *, sticky: bool = False) -> None:
        """Fail the ``nth`` call of ``op`` from now on (counting from now)."""
        self.op, self.nth, self.error, self.sticky = op, self.calls[op] + nth, error, sticky

    def heal(self) -> None:
        self.op = ""

    def _check(self, op: str) -> None:
        self.calls[op] += 1
        self.trace.append(op)
        count = self.calls[op]
        if op == self.op and (count == self.nth or (self.sticky and count > self.nth)):
            self.failures += 1
            raise OSError(self.error, f"{os.strerror(self.error)} (injected: {op} call {count})")

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        self._check("open")
        return super().open(path, flags, mode)

    def pwrite(self, fd: int, data: bytes | bytearray | memoryview, offset: int) -> int:
        self._check("pwrite")
        return super().pwrite(fd, data, offset)

    def fsync(self, fd: int) -> None:
        self._check("fsync")
        super().fsync(fd)

    def fdatasync(self, fd: int) -> None:
        self._check("fdatasync")
        super().fdatasync(fd)

    def ftruncate(self, fd: int, size: int) -> None:
        self._check("ftruncate")
        super().ftruncate(fd, size)

    def replace(self, src: str, dst: str) -> None:
        self._check("replace")
        super().replace(src, dst)

    def unlink(self, path: str) -> None:
        self._check("unlink")
        super().unlink(path)

    def mkdir(self, path: str) -> None:
        self._check("mkdir")
        super().mkdir(path)
