"""Small blocking file-system helpers: full writes and reads, directory fsync, atomic file creation.

The helpers that change the disk take the ``FileOps`` to call (see ``taskflux.storage.fileops``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable

from taskflux.storage.fileops import FileOps

FILE_MODE = 0o644
COPY_CHUNK_BYTES = 1 << 20


def pwrite_all(ops: FileOps, fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    """Write every byte of ``data`` at ``offset`` (a pwrite may write less than asked)."""
    view = memoryview(data)
    while view:
        written = ops.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def pread_exact(fd: int, size: int, offset: int) -> bytes:
    """Read exactly ``size`` bytes at ``offset``; a short file is an OSError (the caller checked sizes)."""
    data = os.pread(fd, size, offset)
    if len(data) == size:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = os.pread(fd, size - got, offset + got)
        if not more:
            raise OSError(f"unexpected end of file at offset {offset + got} (wanted {size} bytes)")
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def fsync_dir(ops: FileOps, path: str) -> None:
    """Make the directory entries of ``path`` durable (creations, renames, deletions)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        ops.fsync(fd)
    finally:
        os.close(fd)


def write_new_file(ops: FileOps, tmp_path: str, final_path: str, chunks: Iterable[bytes]) -> None:
    """Create ``final_path`` atomically: write ``tmp_path``, fsync, rename, fsync the target directory.

    On an exception the temporary file is removed (best effort) and ``final_path`` is untouched.
    """
    fd = ops.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        try:
            offset = 0
            for chunk in chunks:
                pwrite_all(ops, fd, chunk, offset)
                offset += len(chunk)
            ops.fsync(fd)
        finally:
            os.close(fd)
        ops.replace(tmp_path, final_path)
    except BaseException:
        remove_quietly(ops, tmp_path)
        raise
    fsync_dir(ops, os.path.dirname(final_path))


def copy_range_to_new_file(ops: FileOps, src_fd: int, start: int, end: int, dst_path: str) -> None:
    """Copy bytes ``[start, end)`` of ``src_fd`` into a new file ``dst_path``, fsynced with its directory.

    On an exception (a full disk, say) the partial copy is removed (best effort).
    """
    fd = ops.open(dst_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        try:
            pos = start
            while pos < end:
                chunk = os.pread(src_fd, min(COPY_CHUNK_BYTES, end - pos), pos)
                if not chunk:
                    break
                pwrite_all(ops, fd, chunk, pos - start)
                pos += len(chunk)
            ops.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(ops, os.path.dirname(dst_path))
    except BaseException:
        remove_quietly(ops, dst_path)
        raise


def remove_quietly(ops: FileOps, path: str) -> None:
    """Remove a file if it exists; errors are ignored (used on clean-up paths only)."""
    with contextlib.suppress(OSError):
        ops.unlink(path)
