"""RaftLog: the log as the core sees it, the persisted part in storage plus an unstable tail.

Invariant: entries below ``unstable_offset`` are read from storage (or, when a snapshot received
from the leader is pending, do not exist: the log then starts after that snapshot); entries from
``unstable_offset`` on are ``unstable`` (not yet handed to the driver, or handed out and not yet
acknowledged by ``advance()``). ``unstable_offset`` may lie below ``storage.last_index() + 1``
after a conflicting suffix was truncated: the unstable tail then shadows storage, and the driver's
next append overwrites it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from taskflux.raft.members import MEMBERS_PREFIX, Members, members_of
from taskflux.raft.storage import LogStorage, StorageError
from taskflux.raft.types import Entry, SnapshotMeta

_SCAN_BYTES = 16 * 1024 * 1024


class RaftLog:
    """The log, commit_index and last_applied of one node, and the memberships its entries carry."""

    def __init__(self, storage: LogStorage, bootstrap: Members = Members()) -> None:  # noqa: B008 (immutable)
        self.storage = storage
        snapshot = storage.snapshot_meta()
        self.unstable: list[Entry] = []
        self.unstable_offset = storage.last_index() + 1
        self.pending_snapshot: tuple[SnapshotMeta, bytes] | None = None
        # The driver restores the state machine from the storage's snapshot at start.
        self.commit_index = snapshot.index
        self.applied_index = snapshot.index
        # The membership at the snapshot index, and every membership entry above it (index ascending).
        self._bootstrap = bootstrap
        self._base_members = snapshot.members or bootstrap
        self._member_entries: list[tuple[int, Members]] = []
        self.on_members_changed: Callable[[Members], None] | None = None
        lo, hi = snapshot.index + 1, storage.last_index() + 1
        while lo < hi:
            batch = storage.entries(lo, hi, _SCAN_BYTES)
            self._note_members(batch)
            lo = batch[-1].index + 1

    # --- membership ---

    @property
    def members(self) -> Members:
        """The membership in force: the latest one in the log (committed or not), else the snapshot's."""
        return self._member_entries[-1][1] if self._member_entries else self._base_members

    def members_at(self, index: int) -> Members:
        """The membership in force at ``index`` (not below the snapshot index)."""
        found = self._base_members
        for at, members in self._member_entries:
            if at > index:
                break
            found = members
        return found

    def last_members_index(self) -> int:
        """The index of the latest membership entry above the snapshot (0: the snapshot's is in force)."""
        return self._member_entries[-1][0] if self._member_entries else 0

    def _note_members(self, entries: Iterable[Entry]) -> None:
        for entry in entries:
            if entry.data.startswith(MEMBERS_PREFIX):
                members = members_of(entry.data)
                assert members is not None
                self._member_entries.append((entry.index, members))

    def _set_members(self, change: Callable[[], None]) -> None:
        before = self.members
        change()
        if self.members != before and self.on_members_changed is not None:
            self.on_members_changed(self.members)

    def _truncate_members(self, first: int) -> None:
        while self._member_entries and self._member_entries[-1][0] >= first:
            self._member_entries.pop()

    def compacted_to(self, meta: SnapshotMeta) -> None:
        """The storage holds a snapshot at ``meta``: memberships at or below it are the base now."""
        self._base_members = self.members_at(meta.index)
        self._member_entries = [(i, m) for i, m in self._member_entries if i > meta.index]

    # --- reads ---

    def snapshot_index(self) -> int:
        if self.pending_snapshot is not None:
            return self.pending_snapshot[0].index
        return self.storage.snapshot_meta().index

    def first_index(self) -> int:
        if self.pending_snapshot is not None:
            return self.pending_snapshot[0].index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        return self.unstable_offset + len(self.unstable) - 1

    def stable_index(self) -> int:
        """The last index known durable and still part of this log."""
        return self.unstable_offset - 1

    def term(self, index: int) -> int | None:
        """The term at ``index``, or None when it is compacted away or beyond the log."""
        if index >= self.unstable_offset:
            pos = index - self.unstable_offset
            return self.unstable[pos].term if pos < len(self.unstable) else None
        if self.pending_snapshot is not None:
            meta = self.pending_snapshot[0]
            return meta.term if index == meta.index else None
        if index == 0:
            return 0
        try:
            return self.storage.term(index)
        except StorageError:
            return None

    def last_term(self) -> int:
        term = self.term(self.last_index())
        assert term is not None, f"the term of the last index {self.last_index()} is unknown"
        return term

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """§5.4.1: a candidate's log is at least as up-to-date as ours."""
        our_term = self.last_term()
        return last_term > our_term or (last_term == our_term and last_index >= self.last_index())

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry] | None:
        """Entries ``[lo, hi)`` bounded by ``max_bytes`` (at least one), None if ``lo`` is compacted."""
        if lo >= hi:
            return []
        if lo < self.first_index():
            return None
        out: list[Entry] = []
        if lo < self.unstable_offset:
            try:
                out = self.storage.entries(lo, min(hi, self.unstable_offset), max_bytes)
            except StorageError:
                return None
            if hi <= self.unstable_offset or len(out) < self.unstable_offset - lo:
                return out
        size = sum(len(e.data) for e in out)
        start = max(lo, self.unstable_offset) - self.unstable_offset
        for entry in self.unstable[start : hi - self.unstable_offset]:
            size += len(entry.data)
            if out and size > max_bytes:
                break
            out.append(entry)
        return out

    def first_index_of_term(self, index: int) -> int:
        """The first index of the run of entries sharing the term at ``index`` (bounded by the log start)."""
        term = self.term(index)
        first = self.first_index()
        while index > first and self.term(index - 1) == term:
            index -= 1
        return index

    def last_index_of_term(self, term: int, at_most: int) -> int:
        """The last index ≤ ``at_most`` whose term is ``term``, or 0 if none is found in the log."""
        index = min(at_most, self.last_index())
        first = self.first_index()
        while index >= first:
            t = self.term(index)
            if t is None or t < term:
                return 0
            if t == term:
                return index
            index -= 1
        return 0

    # --- writes ---

    def append(self, entries: list[Entry], carries_members: bool | None = None) -> None:
        """Put ``entries`` in the unstable tail, truncating whatever follows ``entries[0].index - 1``.
        ``carries_members``: whether a membership entry is among them, when the caller knows (None: look)."""
        if not entries:
            return
        first = entries[0].index
        assert first > self.commit_index, f"truncating committed entries at {first} (commit {self.commit_index})"
        assert first <= self.last_index() + 1, f"append at {first} leaves a gap after {self.last_index()}"
        if first >= self.unstable_offset:
            del self.unstable[first - self.unstable_offset :]
            self.unstable.extend(entries)
        else:
            # The conflict lies in the persisted part: the new tail shadows storage from ``first``.
            self.unstable_offset = first
            self.unstable = list(entries)
        if carries_members is None:
            carries_members = _carries_members(entries)
        if carries_members or (self._member_entries and self._member_entries[-1][0] >= first):

            def replace_tail() -> None:
                self._truncate_members(first)
                self._note_members(entries)

            self._set_members(replace_tail)

    def maybe_append(
        self, prev_index: int, prev_term: int, leader_commit: int, entries: tuple[Entry, ...]
    ) -> int | None:
        """The receiver's rule of AppendEntries (Figure 2): the index of the last new entry, or None
        when the log does not contain an entry at prev_index with prev_term."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        conflict = self._find_conflict(entries)
        if conflict:
            self.append(list(entries[conflict - entries[0].index :]))
        self.commit_to(min(leader_commit, last_new))
        return last_new

    def _find_conflict(self, entries: tuple[Entry, ...]) -> int:
        """The index of the first entry not already in the log with the same term (0: none)."""
        for entry in entries:
            if not self.match_term(entry.index, entry.term):
                return entry.index
        return 0

    def commit_to(self, index: int) -> None:
        if index > self.commit_index:
            assert index <= self.last_index(), f"commit {index} is past the last index {self.last_index()}"
            self.commit_index = index

    def maybe_commit(self, index: int, term: int) -> bool:
        """§5.4.2: commit up to ``index`` only if that entry is of the current ``term``."""
        if index > self.commit_index and self.term(index) == term:
            self.commit_to(index)
            return True
        return False

    def restore(self, meta: SnapshotMeta, data: bytes) -> None:
        """Replace the whole log by a snapshot received from the leader (not yet persisted)."""
        self.pending_snapshot = (meta, data)
        self.unstable = []
        self.unstable_offset = meta.index + 1
        self.commit_index = meta.index

        def replace_members() -> None:
            self._base_members = meta.members or self._bootstrap
            self._member_entries = []

        self._set_members(replace_members)

    # --- what the driver takes out, and acknowledges ---

    def unstable_entries(self) -> list[Entry]:
        return list(self.unstable)

    def committed_to_apply(self, max_bytes: int) -> list[Entry]:
        """Committed entries not yet applied (the driver persists before it applies)."""
        lo = max(self.applied_index, self.snapshot_index()) + 1
        hi = self.commit_index + 1
        if lo >= hi:
            return []
        out = self.entries(lo, hi, max_bytes)
        assert out is not None, f"committed entries from {lo} are gone before they were applied"
        return out

    def stable_to(self, index: int) -> None:
        """The driver persisted the unstable tail up to ``index``."""
        if index < self.unstable_offset:
            return
        del self.unstable[: index - self.unstable_offset + 1]
        self.unstable_offset = index + 1

    def snapshot_persisted(self) -> None:
        self.pending_snapshot = None

    def applied_to(self, index: int) -> None:
        assert index <= self.commit_index, f"applied {index} beyond commit {self.commit_index}"
        self.applied_index = max(self.applied_index, index)


def _carries_members(entries: Iterable[Entry]) -> bool:
    for entry in entries:  # noqa: SIM110 (a loop costs less than any(generator): it runs on every follower append)
        if entry.data.startswith(MEMBERS_PREFIX):
            return True
    return False
