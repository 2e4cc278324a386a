"""The data-directory lock: an flock on ``LOCK`` held for the life of the DiskStorage."""

from __future__ import annotations

import contextlib
import fcntl
import os

from taskflux.storage.errors import DataDirLocked

LOCK_NAME = "LOCK"


class DirLock:
    """An exclusive, non-blocking flock on ``<data dir>/LOCK``; the file records the holder's pid.

    flock locks belong to an open file description, so a second DiskStorage in the same process is
    refused just like another process. The kernel drops the lock when the process dies.
    """

    def __init__(self, data_dir: str) -> None:
        self.path = os.path.join(data_dir, LOCK_NAME)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise DataDirLocked(
                f"data directory {data_dir} is in use by another TaskFlux storage{holder} "
                f"(lock file {self.path}); stop it first"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        # The pid is for the error message of a second opener only: a full disk must not stop start-up.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Unlock; the file stays (removing it would race with a process opening it)."""
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1


def _read_holder(fd: int) -> str:
    with contextlib.suppress(OSError):
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if text.isdigit():
            pid = int(text)
            return f" (pid {pid}, this process)" if pid == os.getpid() else f" (pid {pid})"
    return ""
