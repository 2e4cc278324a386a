"""The snapshot file: header, the membership in force at its index, opaque data, trailing data checksum;
validated by streaming at open. Format version 2 carries the membership; version 1 files (no membership) are
still read."""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterable
from zlib import crc32

from taskflux.raft.members import Members, MembershipError
from taskflux.raft.types import SnapshotMeta
from taskflux.storage.errors import StorageCorrupted
from taskflux.storage.fileops import FileOps
from taskflux.storage.fsutil import fsync_dir, pwrite_all, remove_quietly

SNAPSHOT_MAGIC = b"TFSN"
SNAPSHOT_VERSION = 2
# Version 1: magic, format version, last included index, its term, data length, CRC32 of the 32 bytes before it.
V1_HEADER = struct.Struct(">4sIQQQI")  # 36 bytes, then the data
# Version 2: ... data length, membership length m, CRC32 of the 36 bytes before it; then the membership (m bytes,
# 0: none recorded) and its CRC32, then the data.
V2_HEADER = struct.Struct(">4sIQQQII")  # 40 bytes
_V2_BODY = struct.Struct(">4sIQQQI")
_START = struct.Struct(">4sI")
_U32 = struct.Struct(">I")
TRAILER_SIZE = _U32.size
VERIFY_CHUNK_BYTES = 1 << 20
SYNC_STEP_BYTES = 8 << 20


class SnapshotFile:
    """The current snapshot: its meta, data size and offset, and an open fd (None when there is no snapshot)."""

    def __init__(self, meta: SnapshotMeta, data_size: int, fd: int | None, data_offset: int = 0) -> None:
        self.meta = meta
        self.data_size = data_size
        self.fd = fd
        self.data_offset = data_offset

    def read(self, offset: int, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` of the data from ``offset``; empty at or past the end."""
        if offset < 0 or max_bytes < 0:
            raise ValueError(f"offset {offset} and max_bytes {max_bytes} must be >= 0")
        size = min(max_bytes, self.data_size - offset)
        if self.fd is None or size <= 0:
            return b""
        parts = []
        pos = self.data_offset + offset
        while size > 0:
            chunk = os.pread(self.fd, size, pos)
            if not chunk:
                break
            parts.append(chunk)
            pos += len(chunk)
            size -= len(chunk)
        return b"".join(parts)

    def open_data(self) -> io.BufferedReader:
        """A new, independent binary reader over the data only (it keeps working after a newer
        snapshot replaces this one: it holds its own fd on this file)."""
        if self.fd is None:
            return io.BufferedReader(_DataReader(None, 0, 0))
        return io.BufferedReader(_DataReader(os.dup(self.fd), self.data_offset, self.data_size))

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class _DataReader(io.RawIOBase):
    """Raw reader over ``[offset, offset + size)`` of a snapshot file (its data), by pread."""

    def __init__(self, fd: int | None, offset: int, size: int) -> None:
        super().__init__()
        self._fd = fd
        self._offset = offset
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        want = min(len(buffer), self._size - self._pos)
        if want <= 0 or self._fd is None:
            return 0
        chunk = os.pread(self._fd, want, self._offset + self._pos)
        n = len(chunk)
        memoryview(buffer)[:n] = chunk
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        super().close()


def load_snapshot(path: str) -> SnapshotFile:
    """Open and validate the snapshot at ``path`` without loading it; missing = no snapshot."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return SnapshotFile(SnapshotMeta(), 0, None)
    try:
        return _validate(fd, path)
    except BaseException:
        os.close(fd)
        raise


def _read_header(fd: int, path: str, file_size: int) -> tuple[SnapshotMeta, int, int]:
    """(meta, data offset, data size) from the header (and membership) of either format version."""
    start = os.pread(fd, _START.size, 0)
    if len(start) < _START.size:
        raise StorageCorrupted(path, 0, f"snapshot file is {file_size} bytes, shorter than its header")
    magic, version = _START.unpack(start)
    if magic != SNAPSHOT_MAGIC:
        raise StorageCorrupted(path, 0, f"bad snapshot magic {magic!r}")
    if version not in (1, 2):
        raise StorageCorrupted(path, 4, f"unsupported snapshot format version {version}")
    layout = V1_HEADER if version == 1 else V2_HEADER
    raw = os.pread(fd, layout.size, 0)
    if len(raw) < layout.size:
        raise StorageCorrupted(path, 0, f"snapshot file is {file_size} bytes, shorter than its header")
    fields = layout.unpack(raw)
    if crc32(raw[:-4]) != fields[-1]:
        raise StorageCorrupted(path, layout.size - 4, "snapshot header checksum mismatch")
    index, term, data_size = fields[2:5]
    if index < 1:
        raise StorageCorrupted(path, 8, f"snapshot index {index} < 1")
    if version == 1:
        return SnapshotMeta(index, term), layout.size, data_size
    members_size = fields[5]
    if layout.size + members_size + TRAILER_SIZE > file_size:
        raise StorageCorrupted(path, 32, f"snapshot membership of {members_size} bytes runs past the file's end")
    block = os.pread(fd, members_size + TRAILER_SIZE, layout.size)
    (stored,) = _U32.unpack_from(block, members_size)
    if crc32(block[:members_size]) != stored:
        raise StorageCorrupted(path, layout.size + members_size, "snapshot membership checksum mismatch")
    members = None
    if members_size:
        try:
            members = Members.decode(block[:members_size])
        except MembershipError as error:
            raise StorageCorrupted(path, layout.size, f"snapshot membership unreadable: {error}") from None
    return SnapshotMeta(index, term, members), layout.size + members_size + TRAILER_SIZE, data_size


def _validate(fd: int, path: str) -> SnapshotFile:
    file_size = os.fstat(fd).st_size
    meta, data_offset, data_size = _read_header(fd, path, file_size)
    expected = data_offset + data_size + TRAILER_SIZE
    if file_size != expected:
        raise StorageCorrupted(
            path, None, f"snapshot declares {data_size} data bytes: the file should be {expected} bytes, "
            f"it is {file_size}"
        )
    crc = 0
    pos = data_offset
    end = data_offset + data_size
    while pos < end:
        chunk = os.pread(fd, min(VERIFY_CHUNK_BYTES, end - pos), pos)
        if not chunk:
            raise StorageCorrupted(path, pos, "snapshot file shrank while being verified")
        crc = crc32(chunk, crc)
        pos += len(chunk)
    (stored,) = _U32.unpack(os.pread(fd, TRAILER_SIZE, end))
    if crc != stored:
        raise StorageCorrupted(path, end, "snapshot data checksum mismatch")
    return SnapshotFile(meta, data_size, fd, data_offset)


def write_snapshot(
    ops: FileOps, tmp_path: str, path: str, meta: SnapshotMeta, chunks: Iterable[bytes]
) -> SnapshotFile:
    """Stream ``chunks`` into a temp file, fsync, rename over ``path``, fsync the directory.

    The membership goes first, the header last (the data length is known only then), into the temp file.
    Returns the new snapshot, whose fd is the temp file's (the same inode after the rename).
    """
    if meta.index < 1 or meta.term < 0:
        raise ValueError(f"invalid snapshot meta {meta}")
    members = meta.members.encode() if meta.members is not None else b""
    data_offset = V2_HEADER.size + len(members) + TRAILER_SIZE
    fd = ops.open(tmp_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        pwrite_all(ops, fd, members + _U32.pack(crc32(members)), V2_HEADER.size)
        pos = data_offset
        crc = 0
        synced = pos
        for chunk in chunks:
            pwrite_all(ops, fd, chunk, pos)
            pos += len(chunk)
            crc = crc32(chunk, crc)
            if pos - synced >= SYNC_STEP_BYTES:  # small write-backs: the log's fsyncs never queue behind one huge one
                os.fdatasync(fd)
                synced = pos
        data_size = pos - data_offset
        pwrite_all(ops, fd, _U32.pack(crc), pos)
        body = _V2_BODY.pack(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, meta.index, meta.term, data_size, len(members))
        pwrite_all(ops, fd, body + _U32.pack(crc32(body)), 0)
        ops.fsync(fd)
        ops.replace(tmp_path, path)
    except BaseException:
        os.close(fd)
        remove_quietly(ops, tmp_path)
        raise
    try:
        fsync_dir(ops, os.path.dirname(path))
    except BaseException:
        os.close(fd)
        raise
    return SnapshotFile(meta, data_size, fd, data_offset)
