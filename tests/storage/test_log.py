"""Round trips of DiskStorage: append, read, term, bounds, rolling, truncation, compaction, reopen."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from taskflux.raft.storage import LogCompacted, LogUnavailable, StorageError
from taskflux.raft.types import Entry, HardState, SnapshotMeta
from taskflux.storage import DiskStorage

from .helpers import TINY, all_entries, make_entries, open_storage, segment_files


def index_of(storage: DiskStorage) -> list[tuple[int, int, list[int], list[int]]]:
    """The in-memory index (white box): per segment, first index, count, offsets and terms."""
    log = storage._log
    assert log is not None
    return [(seg.first_index, seg.count, list(seg.offsets), list(seg.terms)) for seg in log.segments]


def test_empty_storage(tmp_path: Path) -> None:
    with DiskStorage(tmp_path) as s:
        assert (s.first_index(), s.last_index()) == (1, 0)
        assert s.term(0) == 0
        assert s.hard_state() == HardState()
        assert s.snapshot_meta() == SnapshotMeta()
        assert s.snapshot_size() == 0 and s.read_snapshot(0, 10) == b""
        assert s.entries(1, 1, 100) == []
        with pytest.raises(LogUnavailable):
            s.term(1)
        with pytest.raises(LogUnavailable):
            s.entries(1, 2, 100)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LOCK", "log", "tmp", "torn"]


def test_append_read_term_and_reopen(tmp_path: Path) -> None:
    entries = make_entries(1, 10) + make_entries(11, 10, term=3) + make_entries(21, 5, term=4, size=0)
    with DiskStorage(tmp_path) as s:
        s.append(entries[:1])
        s.append(entries[1:20])
        s.append(entries[20:])
        assert (s.first_index(), s.last_index()) == (1, 25)
        assert all_entries(s) == entries
        assert [s.term(i) for i in range(26)] == [0] + [e.term for e in entries]
        assert s.entries(5, 9, 1 << 20) == entries[4:8]
    with DiskStorage(tmp_path) as s:
        assert all_entries(s) == entries
        assert [s.term(i) for i in range(1, 26)] == [e.term for e in entries]


def test_rolls_across_segments_and_reopen_rebuilds_the_same_index(tmp_path: Path) -> None:
    entries = make_entries(1, 40)
    with open_storage(tmp_path) as s:
        for k in range(0, 40, 3):
            s.append(entries[k : k + 3])
        assert all_entries(s) == entries
        built = index_of(s)
    files = segment_files(tmp_path)
    assert len(files) > 5
    for f in files:  # each segment passes the hard limit by at most one record
        assert f.stat().st_size < TINY["hard_limit_bytes"] + 24 + 30
    firsts = [int(f.name[:20]) for f in files]
    assert firsts[0] == 1 and firsts == sorted(firsts)
    with open_storage(tmp_path) as s:
        assert index_of(s) == built
        assert all_entries(s) == entries
        for lo in range(1, 41, 7):
            assert s.entries(lo, 41, 1 << 20) == entries[lo - 1 :]


def test_one_big_batch_rolls_at_the_hard_limit(tmp_path: Path) -> None:
    entries = make_entries(1, 50)
    with open_storage(tmp_path) as s:
        s.append(entries)
        assert all_entries(s) == entries
    sizes = [f.stat().st_size for f in segment_files(tmp_path)]
    assert len(sizes) >= 50 * 54 // 300
    assert all(size >= TINY["hard_limit_bytes"] for size in sizes[:-1])


def test_soft_limit_rolls_only_when_committed(tmp_path: Path) -> None:
    with open_storage(tmp_path, soft_limit_bytes=100, hard_limit_bytes=10_000) as s:
        s.append(make_entries(1, 3))  # 20 + 3 * 54 bytes: over the soft limit
        s.append(make_entries(4, 1))
        assert len(segment_files(tmp_path)) == 1  # nothing committed: no roll
        s.set_committed(4)
        s.append(make_entries(5, 1))
        assert [f.name[:20] for f in segment_files(tmp_path)] == [f"{1:020d}", f"{5:020d}"]


def test_byte_bounded_reads(tmp_path: Path) -> None:
    entries = [Entry(i, 1, bytes([i]) * (10 * i)) for i in range(1, 21)]
    with open_storage(tmp_path) as s:
        s.append(entries)
        assert s.entries(5, 21, 0) == entries[4:5]  # at least one, whatever its size
        assert s.entries(5, 21, 49) == entries[4:5]
        assert s.entries(5, 21, 50 + 60) == entries[4:6]
        assert s.entries(5, 21, 50 + 60 + 69) == entries[4:6]
        got = s.entries(1, 21, 1000)
        assert got == entries[: len(got)]
        assert sum(len(e.data) for e in got) <= 1000 < sum(len(e.data) for e in entries[: len(got) + 1])


def test_truncate_suffix_inside_a_segment_and_across_segments(tmp_path: Path) -> None:
    old = make_entries(1, 30, term=1)
    with open_storage(tmp_path) as s:
        s.append(old)
        s.set_committed(5)
        new = make_entries(20, 3, term=2, seed=1)
        s.append(new)
        assert all_entries(s) == old[:19] + new
        newer = make_entries(8, 2, term=3, seed=2)
        s.append(newer)
        assert all_entries(s) == old[:7] + newer
        assert s.last_index() == 9
        with pytest.raises(LogUnavailable):
            s.term(10)
    with open_storage(tmp_path) as s:
        assert all_entries(s) == old[:7] + newer
        s.append(make_entries(10, 1, term=3))
        assert s.last_index() == 10


def test_truncate_at_a_segment_start_and_of_the_whole_log(tmp_path: Path) -> None:
    with open_storage(tmp_path) as s:
        s.append(make_entries(1, 30))
        second = int(segment_files(tmp_path)[1].name[:20])
        s.append(make_entries(second, 1, term=2))
        assert s.last_index() == second and s.term(second) == 2
        s.append(make_entries(1, 2, term=5))
        assert all_entries(s) == make_entries(1, 2, term=5)
        assert [f.name[:20] for f in segment_files(tmp_path)] == [f"{1:020d}"]


def test_truncating_committed_entries_is_refused(tmp_path: Path) -> None:
    with open_storage(tmp_path) as s:
        s.append(make_entries(1, 10))
        s.set_committed(6)
        with pytest.raises(ValueError, match="committed"):
            s.append(make_entries(6, 1, term=2))
        s.append(make_entries(7, 1, term=2))
        assert s.term(7) == 2


def test_bad_appends_write_nothing(tmp_path: Path) -> None:
    with open_storage(tmp_path) as s:
        s.append(make_entries(1, 5, term=2))
        before = all_entries(s)
        with pytest.raises(ValueError, match="hole"):
            s.append(make_entries(7, 1, term=2))
        with pytest.raises(ValueError, match="contiguous"):
            s.append([Entry(6, 2, b""), Entry(8, 2, b"")])
        with pytest.raises(ValueError, match="term"):
            s.append(make_entries(6, 1, term=1))
        with pytest.raises(ValueError, match="term"):
            s.append([Entry(6, 3, b""), Entry(7, 2, b"")])
        assert all_entries(s) == before
    with DiskStorage(tmp_path / "small", max_record_bytes=100) as small:
        small.append([Entry(1, 1, bytes(100))])
        with pytest.raises(ValueError, match="over the 100-byte limit"):
            small.append([Entry(2, 1, b""), Entry(3, 1, bytes(101))])
        assert small.last_index() == 1


def test_limits_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="hard_limit_bytes"):
        DiskStorage(tmp_path, soft_limit_bytes=200, hard_limit_bytes=100)
    with DiskStorage(tmp_path, soft_limit_bytes=100, hard_limit_bytes=100):
        pass


def test_bounds_errors(tmp_path: Path) -> None:
    with open_storage(tmp_path) as s:
        s.append(make_entries(1, 20))
        s.save_snapshot(SnapshotMeta(10, 1), [b"state"])
        first = s.first_index()
        assert 1 < first < 10  # whole segments up to the snapshot are gone, not the one holding 10
        with pytest.raises(LogCompacted):
            s.entries(first - 1, 15, 100)
        with pytest.raises(LogCompacted):
            s.term(first - 1)
        with pytest.raises(LogUnavailable):
            s.entries(15, 22, 100)
        assert s.term(10) == 1 and s.term(0) == 0
        assert s.entries(first, 21, 1 << 20) == make_entries(1, 20)[first - 1 :]


def test_hard_state_round_trip(tmp_path: Path) -> None:
    with DiskStorage(tmp_path) as s:
        s.set_hard_state(HardState(term=7, vote=2))
        s.set_hard_state(HardState(term=8, vote=-1))
        assert s.hard_state() == HardState(8, -1)
        with pytest.raises(ValueError):
            s.set_hard_state(HardState(term=9, vote=-2))
        assert s.hard_state() == HardState(8, -1)
    with DiskStorage(tmp_path) as s:
        assert s.hard_state() == HardState(8, -1)
    assert (tmp_path / "hardstate").stat().st_size == 28


def test_close_is_idempotent_and_closed_storage_refuses(tmp_path: Path) -> None:
    s = DiskStorage(tmp_path)
    s.close()
    s.close()
    with pytest.raises(ValueError, match="closed"):
        s.last_index()


def test_a_failed_fsync_refuses_further_appends_until_reopened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = make_entries(1, 5)
    with open_storage(tmp_path) as s:
        s.append(entries[:3])
        with monkeypatch.context() as m:

            def failing_fsync(fd: int) -> None:
                raise OSError(5, "Input/output error")

            m.setattr(os, "fdatasync", failing_fsync)
            with pytest.raises(OSError):
                s.append(entries[3:4])
        assert s.last_index() == 3  # nothing unsynced was published
        with pytest.raises(StorageError, match="reopen"):
            s.append(entries[3:4])
    with open_storage(tmp_path) as s:
        # The written (never fsynced) record may or may not be on disk: both are valid outcomes.
        assert s.last_index() in (3, 4)
        s.append(entries[s.last_index() :])
        assert all_entries(s) == entries


def test_reads_of_recent_batches_match_the_disk_across_truncations_and_snapshots(tmp_path: Path) -> None:
    """The newest batches are served from memory; what they return must be what the disk holds."""

    def batch(first: int, count: int, term: int) -> list[Entry]:
        return [Entry(i, term, b"%d-%d" % (i, term)) for i in range(first, first + count)]

    with DiskStorage(tmp_path / "d") as storage:
        for first in range(1, 100, 3):
            storage.append(batch(first, 3, 1))
        storage.append(batch(50, 5, 2))  # truncates 50..102, appends 50..54
        storage.append(batch(55, 2, 3))
        live = storage.entries(1, storage.last_index() + 1, 1 << 30)
        assert [e.index for e in live] == list(range(1, 57))
        assert storage.entries(45, 57, 1 << 30) == live[44:]
        assert len(storage.entries(50, 57, 1)) == 1  # byte bound: at least one entry
        storage.save_snapshot(SnapshotMeta(60, 9), [b"state"])  # not in the log: the whole log goes
        assert storage.last_index() == 60
        storage.append(batch(61, 2, 9))
        after = storage.entries(61, 63, 1 << 30)
    with DiskStorage(tmp_path / "d") as storage:
        assert storage.entries(61, 63, 1 << 30) == after


def test_every_range_of_the_recent_batches_reads_as_the_disk_does(tmp_path: Path) -> None:
    """Reads that start in any cached batch and end in any later one, the cache full (older batches dropped)."""
    with DiskStorage(tmp_path / "d") as storage:
        first = 1
        for size in [1, 2, 3, 5] * 20:  # 80 batches: more than the cache keeps
            storage.append([Entry(i, 1, b"e%d" % i) for i in range(first, first + size)])
            first += size
        last = storage.last_index()
        cached = {(lo, hi): storage.entries(lo, hi, 1 << 30) for lo in range(last - 150, last + 1)
                  for hi in range(lo + 1, last + 2)}
    with DiskStorage(tmp_path / "d") as storage:  # nothing cached: every read comes from the disk
        assert all(storage.entries(lo, hi, 1 << 30) == entries for (lo, hi), entries in cached.items())
