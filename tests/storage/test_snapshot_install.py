"""Installing a leader's snapshot over a log it contradicts, interrupted at every segment deletion."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from taskflux.raft.config import RaftConfig
from taskflux.raft.core import Raft
from taskflux.raft.types import SnapshotMeta
from taskflux.storage import DiskStorage

from .faults import FaultyFileOps
from .helpers import TINY, all_entries, make_entries, segment_files

ENTRIES = make_entries(1, 40, term=1)


def _log_with_segments(path: Path) -> list[int]:
    """A log of ENTRIES (term 1) in several segments; the segments' first indexes."""
    with DiskStorage(path, **TINY) as s:
        s.append(ENTRIES)
    firsts = [int(f.name[:20]) for f in segment_files(path)]
    assert len(firsts) >= 5
    return firsts


def assert_continues_the_snapshot(storage: DiskStorage, meta: SnapshotMeta) -> None:
    """What the node relies on after a restart: the snapshot is there, the log starts at most right after
    it, holds the snapshot's entry with its term if it reaches it, and no entry after it has a lower term."""
    assert storage.snapshot_meta() == meta
    assert storage.first_index() <= meta.index + 1
    assert storage.term(meta.index) == meta.term
    previous = meta.term
    for entry in all_entries(storage):
        if entry.index > meta.index:
            assert entry.term >= previous, f"entry {entry.index} has term {entry.term} after term {previous}"
            previous = entry.term
    raft = Raft(RaftConfig(node_id=0, cluster_size=3), storage, random.Random(1))
    assert raft.log.last_index() >= meta.index and raft.log.last_term() >= meta.term


def _snapshot_points(firsts: list[int]) -> list[int]:
    """Where a leader's snapshot may end: inside a segment, at a segment's end, past the log."""
    return [firsts[1] + 2, firsts[3] - 1, firsts[-1] - 1, ENTRIES[-1].index + 10]


@pytest.mark.parametrize("point", range(4))
def test_crash_at_every_unlink_of_an_install_leaves_a_log_that_continues_the_snapshot(
    tmp_path: Path, point: int
) -> None:
    """The leader's snapshot (term 2) contradicts the whole log (term 1): the log is deleted. A crash after
    any number of deletions must leave a directory that opens and whose log cannot outvote the snapshot."""
    firsts = _log_with_segments(tmp_path / "template")
    meta = SnapshotMeta(_snapshot_points(firsts)[point], 2)
    for nth in range(1, len(firsts) + 1):
        path = tmp_path / f"crash{nth}"
        _log_with_segments(path)
        ops = FaultyFileOps("unlink", nth)
        with DiskStorage(path, file_ops=ops, **TINY) as s, pytest.raises(OSError, match="injected"):
            s.save_snapshot(meta, [b"leader state"])
        # Every deletion was durable before the next began: what the crash leaves is what we now open.
        unlinks = [k for k, op in enumerate(ops.trace) if op == "unlink"]
        assert all(ops.trace[k + 1] == "fsync" for k in unlinks[:-1]), ops.trace
        with DiskStorage(path, **TINY) as s:
            assert_continues_the_snapshot(s, meta)
            assert s.last_index() == meta.index  # nothing of the contradicted log survives
            s.append(make_entries(meta.index + 1, 3, term=2))


def test_crash_at_every_unlink_of_a_compaction_keeps_the_log_after_the_snapshot(tmp_path: Path) -> None:
    """A local snapshot that matches the log deletes the covered segments oldest first: a crash part-way
    leaves a contiguous log that still holds every entry after the snapshot."""
    firsts = _log_with_segments(tmp_path / "template")
    meta = SnapshotMeta(firsts[3] + 1, 1)
    for nth in range(1, 4):
        path = tmp_path / f"crash{nth}"
        _log_with_segments(path)
        ops = FaultyFileOps("unlink", nth)
        with DiskStorage(path, file_ops=ops, **TINY) as s, pytest.raises(OSError, match="injected"):
            s.save_snapshot(meta, [b"local state"])
        with DiskStorage(path, **TINY) as s:
            assert_continues_the_snapshot(s, meta)
            assert s.first_index() == firsts[3]
            assert all_entries(s) == ENTRIES[firsts[3] - 1 :]


def test_a_log_after_the_snapshot_with_a_lower_term_is_discarded_at_open(tmp_path: Path) -> None:
    """Entries right after the snapshot whose term is below the snapshot's contradict it (terms never
    decrease along a log): opening discards them rather than let them count in a vote."""
    with DiskStorage(tmp_path, **TINY) as s:
        s.save_snapshot(SnapshotMeta(10, 1), [b"old"])
        s.append(make_entries(11, 10, term=1))
    with DiskStorage(tmp_path / "other", **TINY) as other:  # the snapshot file a leader of term 3 sent
        other.save_snapshot(SnapshotMeta(10, 3), [b"new"])
    (tmp_path / "other" / "snapshot").replace(tmp_path / "snapshot")
    with DiskStorage(tmp_path, **TINY) as s:
        assert_continues_the_snapshot(s, SnapshotMeta(10, 3))
        assert s.last_index() == 10
