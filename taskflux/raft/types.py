"""Values shared by the raft core and the storage that keeps its log: entries, hard state, snapshots."""

from __future__ import annotations

from dataclasses import dataclass

from taskflux.raft.members import Members

NO_VOTE = -1


@dataclass(frozen=True, slots=True)
class Entry:
    """One raft log entry. Indexes start at 1; the data is opaque to raft."""

    index: int
    term: int
    data: bytes


@dataclass(frozen=True, slots=True)
class HardState:
    """What raft must persist before it answers anything that depends on it."""

    term: int = 0
    vote: int = NO_VOTE


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """The position a snapshot covers: every entry up to and including (index, term), and the membership
    in force at that index (None: a snapshot written before memberships were recorded, or no snapshot).

    index 0 / term 0 means "no snapshot": the log starts at index 1.
    """

    index: int = 0
    term: int = 0
    members: Members | None = None
