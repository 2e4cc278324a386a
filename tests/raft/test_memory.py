"""MemoryStorage keeps the LogStorage protocol's promises (the same ones DiskStorage keeps)."""

from __future__ import annotations

import pytest

from taskflux.raft.log import RaftLog
from taskflux.raft.memory import MemoryStorage
from taskflux.raft.storage import LogCompacted, LogUnavailable
from taskflux.raft.types import Entry, HardState, SnapshotMeta


def storage_with(*terms: int) -> MemoryStorage:
    s = MemoryStorage()
    s.append([Entry(i + 1, t, b"%d" % (i + 1)) for i, t in enumerate(terms)])
    return s


def test_an_empty_log() -> None:
    s = MemoryStorage()
    assert (s.first_index(), s.last_index(), s.term(0)) == (1, 0, 0)
    assert s.hard_state() == HardState() and s.snapshot_meta() == SnapshotMeta()
    with pytest.raises(LogUnavailable):
        s.term(1)


def test_append_replaces_a_conflicting_suffix() -> None:
    s = storage_with(1, 1, 2, 2)
    s.append([Entry(3, 3, b"x")])
    assert [s.term(i) for i in range(1, s.last_index() + 1)] == [1, 1, 3]
    with pytest.raises(ValueError, match="gap"):
        s.append([Entry(9, 3, b"")])


def test_entries_are_bounded_in_bytes_but_never_empty() -> None:
    s = storage_with(1, 1, 1, 1)
    assert [e.index for e in s.entries(1, 5, 2)] == [1, 2]
    assert [e.index for e in s.entries(1, 5, 0)] == [1]
    with pytest.raises(LogUnavailable):
        s.entries(1, 6, 100)


def test_a_snapshot_inside_the_log_keeps_the_entries_after_it() -> None:
    s = storage_with(1, 1, 2, 2)
    s.save_snapshot(SnapshotMeta(2, 1), [b"ab", b"c"])
    assert (s.first_index(), s.last_index(), s.term(2), s.term(3)) == (3, 4, 1, 2)
    assert s.snapshot_size() == 3 and s.read_snapshot(1, 5) == b"bc"
    with pytest.raises(LogCompacted):
        s.term(1)
    with pytest.raises(LogCompacted):
        s.entries(2, 4, 100)


def test_a_snapshot_that_does_not_match_the_log_discards_it_and_an_older_one_is_ignored() -> None:
    s = storage_with(1, 1, 2, 2)
    s.save_snapshot(SnapshotMeta(3, 5), [b"new"])
    assert (s.first_index(), s.last_index(), s.term(3)) == (4, 3, 5)
    s.save_snapshot(SnapshotMeta(2, 1), [b"old"])
    assert s.snapshot_meta() == SnapshotMeta(3, 5) and s.snapshot_data() == b"new"


def test_the_unstable_tail_shadows_a_conflicting_persisted_suffix() -> None:
    s = storage_with(1, 1, 1)
    log = RaftLog(s)
    log.append([Entry(2, 2, b"new")])
    assert (log.last_index(), log.term(2), log.term(3), log.stable_index()) == (2, 2, None, 1)
    assert log.entries(1, 3, 100) == [Entry(1, 1, b"1"), Entry(2, 2, b"new")]
    s.append(log.unstable_entries())
    log.stable_to(2)
    assert (s.last_index(), log.unstable, log.stable_index()) == (2, [], 2)
