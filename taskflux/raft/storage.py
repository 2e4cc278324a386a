"""The seam between the raft core and whatever keeps its log: a Protocol and its errors.

The core only reads through this interface; the driver (the node runtime, or the simulator) performs
the writes a ``Ready`` batch asks for. ``taskflux.storage.DiskStorage`` is the durable implementation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from taskflux.raft.types import Entry, HardState, SnapshotMeta


class StorageError(Exception):
    """Base class of the errors a log storage reports to the raft core."""


class LogCompacted(StorageError):
    """The requested index lies at or below the snapshot: its entry is gone from the log."""


class LogUnavailable(StorageError):
    """The requested index lies beyond the last entry of the log."""


class LogStorage(Protocol):
    """A raft log with its hard state and its latest snapshot.

    Invariants: ``first_index() == snapshot_meta().index + 1`` when the log is compacted up to the
    snapshot (it may also keep older entries, then ``first_index()`` is smaller);
    ``last_index() >= first_index() - 1`` (equality: the log is empty).
    """

    def hard_state(self) -> HardState: ...

    def snapshot_meta(self) -> SnapshotMeta: ...

    def first_index(self) -> int:
        """Index of the first entry still in the log (snapshot index + 1 when empty)."""
        ...

    def last_index(self) -> int:
        """Index of the last entry; the snapshot index when the log is empty."""
        ...

    def term(self, index: int) -> int:
        """Term of the entry at ``index``; the snapshot's term for the snapshot index; 0 for index 0.

        Raises LogCompacted below that, LogUnavailable past ``last_index()``.
        """
        ...

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        """Entries ``[lo, hi)``, stopping before the total data size would pass ``max_bytes``.

        At least one entry is returned when ``lo < hi``, whatever its size.
        Raises LogCompacted when ``lo < first_index()``, LogUnavailable when ``hi > last_index() + 1``.
        """
        ...

    def snapshot_size(self) -> int:
        """Size in bytes of the snapshot's data (0 when there is no snapshot)."""
        ...

    def read_snapshot(self, offset: int, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` of the snapshot's data from ``offset`` (for chunked InstallSnapshot)."""
        ...

    # --- writes, made by the driver; each one is durable when it returns ---

    def append(self, entries: Sequence[Entry]) -> None:
        """Append contiguous entries. Entries at or after ``entries[0].index`` already in the log are
        replaced (a conflicting suffix is truncated first). ``entries[0].index`` must be at most
        ``last_index() + 1`` and above the snapshot index."""
        ...

    def set_hard_state(self, state: HardState) -> None: ...

    def save_snapshot(self, meta: SnapshotMeta, chunks: Iterable[bytes]) -> None:
        """Make a snapshot durable, then drop what it covers.

        If the log holds an entry at ``meta.index`` with ``meta.term``, only the entries up to it are
        dropped (the rest stays); otherwise the whole log is discarded and the next append starts at
        ``meta.index + 1``. A snapshot older than the current one is ignored.
        """
        ...
