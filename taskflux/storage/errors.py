"""Errors of the durable storage engine."""

from __future__ import annotations

from taskflux.raft.storage import StorageError


class StorageCorrupted(StorageError):
    """Data on disk fails a check that a crash alone cannot explain; start-up must stop.

    The message names the file and, where it applies, the byte offset of the first bad byte, and how
    to recover.
    """

    def __init__(self, path: str, offset: int | None, reason: str) -> None:
        where = path if offset is None else f"{path} at byte offset {offset}"
        super().__init__(
            f"storage corrupted: {where}: {reason}. Do not edit the files: replace this node (empty its data "
            "directory, keeping a copy for a bug report, and start it again: it catches up from the leader; "
            "docs/operations.md, 'Replacing a failed node')"
        )
        self.path = path
        self.offset = offset
        self.reason = reason


class DataDirLocked(StorageError):
    """Another DiskStorage (in this or another process) holds the data directory."""
