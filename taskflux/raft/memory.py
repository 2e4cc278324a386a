"""MemoryStorage: the LogStorage protocol kept in memory, for tests and the simulator.

Everything a MemoryStorage holds counts as persisted: a simulated crash throws away the raft core
(its unstable tail and any Ready not yet written) and keeps the storage object. What was "written but
not yet persisted" therefore lives in the driver between ``ready()`` and the write calls.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

from taskflux.raft.storage import LogCompacted, LogUnavailable
from taskflux.raft.types import Entry, HardState, SnapshotMeta


class MemoryStorage:
    """A LogStorage in memory. ``entries[0]`` is a dummy at the snapshot's (index, term)."""

    def __init__(self) -> None:
        self._hard_state = HardState()
        self._snapshot_meta = SnapshotMeta()
        self._snapshot_data = b""
        self._entries: list[Entry] = [Entry(0, 0, b"")]

    # --- reads ---

    def hard_state(self) -> HardState:
        return self._hard_state

    def snapshot_meta(self) -> SnapshotMeta:
        return self._snapshot_meta

    def snapshot_data(self) -> bytes:
        """The whole snapshot (a convenience of the in-memory store, used by drivers at restart)."""
        return self._snapshot_data

    def first_index(self) -> int:
        return self._entries[0].index + 1

    def last_index(self) -> int:
        return self._entries[-1].index

    def term(self, index: int) -> int:
        offset = self._entries[0].index
        if index < offset:
            raise LogCompacted(f"index {index} is compacted (snapshot at {offset})")
        if index > self._entries[-1].index:
            raise LogUnavailable(f"index {index} is past the last index {self._entries[-1].index}")
        return self._entries[index - offset].term

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        offset = self._entries[0].index
        if lo <= offset:
            raise LogCompacted(f"entries from {lo} are compacted (snapshot at {offset})")
        if hi > self._entries[-1].index + 1:
            raise LogUnavailable(f"entries up to {hi - 1} requested, last index {self._entries[-1].index}")
        out: list[Entry] = []
        size = 0
        for entry in self._entries[lo - offset : hi - offset]:
            size += len(entry.data)
            if out and size > max_bytes:
                break
            out.append(entry)
        return out

    def snapshot_size(self) -> int:
        return len(self._snapshot_data)

    def read_snapshot(self, offset: int, max_bytes: int) -> bytes:
        return self._snapshot_data[offset : offset + max_bytes]

    # --- writes (durable on return) ---

    def append(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        first = entries[0].index
        offset = self._entries[0].index
        if first <= offset:
            raise ValueError(f"append at {first} is at or below the snapshot index {offset}")
        if first > self._entries[-1].index + 1:
            raise ValueError(f"append at {first} leaves a gap after {self._entries[-1].index}")
        for prev, entry in itertools.pairwise(entries):
            if entry.index != prev.index + 1:
                raise ValueError(f"entries are not contiguous at {entry.index}")
        del self._entries[first - offset :]
        self._entries.extend(entries)

    def set_hard_state(self, state: HardState) -> None:
        self._hard_state = state

    def save_snapshot(self, meta: SnapshotMeta, chunks: Iterable[bytes]) -> None:
        if meta.index <= self._snapshot_meta.index:
            return
        self._snapshot_data = b"".join(chunks)
        self._snapshot_meta = meta
        offset = self._entries[0].index
        last = self._entries[-1].index
        if offset <= meta.index <= last and self._entries[meta.index - offset].term == meta.term:
            self._entries = [Entry(meta.index, meta.term, b""), *self._entries[meta.index - offset + 1 :]]
        else:
            self._entries = [Entry(meta.index, meta.term, b"")]
