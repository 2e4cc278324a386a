"""DiskStorage: the durable LogStorage of a TaskFlux node (one data directory, see docs/storage.md)."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterable, Sequence
from types import TracebackType

from taskflux.raft.storage import LogCompacted, LogUnavailable
from taskflux.raft.types import Entry, HardState, SnapshotMeta
from taskflux.storage.errors import StorageCorrupted
from taskflux.storage.fileops import REAL_FILE_OPS, FileOps
from taskflux.storage.fsutil import fsync_dir
from taskflux.storage.hardstate import load_hard_state, save_hard_state
from taskflux.storage.lock import DirLock
from taskflux.storage.log import SegmentedLog
from taskflux.storage.records import DEFAULT_MAX_RECORD_BYTES
from taskflux.storage.snapshot import SnapshotFile, load_snapshot, write_snapshot

logger = logging.getLogger("taskflux.storage")

DEFAULT_SOFT_LIMIT_BYTES = 16 * 1024 * 1024
DEFAULT_HARD_LIMIT_BYTES = 32 * 1024 * 1024
RECENT_BATCHES = 64  # the newest appended batches kept in memory: raft reads them back at once
HARD_STATE_NAME = "hardstate"
SNAPSHOT_NAME = "snapshot"
STAGED_SNAPSHOT_NAME = "snapshot.staged"  # in tmp/: written by stage_snapshot, renamed by install_staged_snapshot
LOG_DIR = "log"
TMP_DIR = "tmp"
TORN_DIR = "torn"


class DiskStorage:
    """The raft log, hard state and snapshot of one node, durable in ``data_dir``.

    Implements ``taskflux.raft.storage.LogStorage``; every write is durable when it returns. Opening
    takes the directory lock, removes stale temp files, validates the hard state and the snapshot,
    scans every log segment (a torn tail of the last one — a bad record with no valid one after it —
    is cut and kept in ``torn/`` when there is room; anything else bad raises StorageCorrupted) and
    finishes a compaction a crash interrupted. Every change to the disk goes through ``file_ops``.

    Concurrency: ``append()`` may run in one worker thread while one other thread calls ``term()``,
    ``first_index()``, ``last_index()`` and ``entries()`` for indexes that were in the log before the
    append started (and not in a suffix the append replaces). An append writes and fsyncs first,
    then extends the in-memory index, and publishes the new records last by bumping the segment's
    record count; a new segment becomes visible by replacing an immutable tuple. So a reader never
    sees a record that is not durable, nor a half-updated index. Every other method, including
    ``set_committed()``, ``save_snapshot()`` and ``close()``, must not overlap with any call.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        soft_limit_bytes: int = DEFAULT_SOFT_LIMIT_BYTES,
        hard_limit_bytes: int = DEFAULT_HARD_LIMIT_BYTES,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        file_ops: FileOps = REAL_FILE_OPS,
    ) -> None:
        if soft_limit_bytes < 1 or max_record_bytes < 0:
            raise ValueError("soft_limit_bytes must be >= 1 and max_record_bytes >= 0")
        if hard_limit_bytes < soft_limit_bytes:
            raise ValueError(
                f"hard_limit_bytes ({hard_limit_bytes}) must not be below soft_limit_bytes ({soft_limit_bytes})"
            )
        self.data_dir = os.fspath(data_dir)
        self._ops = file_ops
        if not os.path.isdir(self.data_dir):
            os.makedirs(self.data_dir, exist_ok=True)
            fsync_dir(file_ops, os.path.dirname(os.path.abspath(self.data_dir)))
        self._lock: DirLock | None = DirLock(self.data_dir)
        self._log: SegmentedLog | None = None
        self._snapshot = SnapshotFile(SnapshotMeta(), 0, None)
        try:
            self._open(soft_limit_bytes, hard_limit_bytes, max_record_bytes)
        except BaseException:
            self.close()
            raise

    def _open(self, soft_limit_bytes: int, hard_limit_bytes: int, max_record_bytes: int) -> None:
        created = False
        for name in (LOG_DIR, TMP_DIR, TORN_DIR):
            if not os.path.isdir(self._path(name)):
                self._ops.mkdir(self._path(name))
                created = True
        if created:  # make the new directories' entries durable before files go into them
            fsync_dir(self._ops, self.data_dir)
        self._clean_tmp()
        self._hard_state = load_hard_state(self._path(HARD_STATE_NAME))
        self._snapshot = load_snapshot(self._path(SNAPSHOT_NAME))
        self._log = SegmentedLog(
            self._path(LOG_DIR),
            self._path(TMP_DIR),
            self._path(TORN_DIR),
            soft_limit_bytes=soft_limit_bytes,
            hard_limit_bytes=hard_limit_bytes,
            max_record_bytes=max_record_bytes,
            ops=self._ops,
        )
        self._log.recover()
        self._reconcile_with_snapshot()
        self._committed_index = self._snapshot.meta.index
        # The newest appended batches, oldest first, contiguous: replaced whole (never mutated), so a reader
        # in another thread sees one consistent run.
        self._recent: tuple[tuple[Entry, ...], ...] = ()

    def _reconcile_with_snapshot(self) -> None:
        """Make the log continue the snapshot: finish a compaction a crash interrupted (segments wholly
        covered by the snapshot, or a log whose entry at the snapshot index has another term, go), refuse
        a log that starts after it."""
        log = self._require_open()
        segments = log.segments
        snap = self._snapshot.meta
        if not segments:
            return
        first = segments[0].first_index
        if first > snap.index + 1:
            raise StorageCorrupted(
                self._path(LOG_DIR), None, f"the log starts at index {first} but the snapshot ends at "
                f"{snap.index}: entries {snap.index + 1}..{first - 1} are missing"
            )
        if snap.index >= first:
            self._compact(snap)  # a crash may have stopped the compaction of save_snapshot()
        elif snap.index and segments[-1].last_index >= first and log.term_at(first) < snap.term:
            # Terms never decrease along a log: entries after the snapshot with a lower term than its
            # last entry's are from a leader the snapshot's history overwrote.
            logger.warning("log discarded: its first entry (%d, term %d) is below the snapshot's term %d",
                           first, log.term_at(first), snap.term)
            log.discard_all()

    @property
    def file_ops(self) -> FileOps:
        """The calls through which every change reaches the disk; replaceable while no call is in progress
        (the node hands its fsyncs to its disk thread with ``OffloadedSyncs`` while it runs)."""
        return self._ops

    @file_ops.setter
    def file_ops(self, ops: FileOps) -> None:
        self._ops = ops
        if self._log is not None:
            self._log.ops = ops

    def _path(self, name: str) -> str:
        return os.path.join(self.data_dir, name)

    def _clean_tmp(self) -> None:
        tmp_dir = self._path(TMP_DIR)
        for name in os.listdir(tmp_dir):
            path = os.path.join(tmp_dir, name)
            logger.info("removing stale temporary file %s", path)
            self._ops.unlink(path)

    def _require_open(self) -> SegmentedLog:
        log = self._log
        if log is None:
            raise ValueError(f"storage of {self.data_dir} is closed")
        return log

    # --- reads ----------------------------------------------------------------------------------

    def hard_state(self) -> HardState:
        return self._hard_state

    def snapshot_meta(self) -> SnapshotMeta:
        return self._snapshot.meta

    def first_index(self) -> int:
        """Index of the first entry still in the log (snapshot index + 1 when empty)."""
        segments = self._require_open().segments
        if segments:
            return segments[0].first_index
        return self._snapshot.meta.index + 1

    def last_index(self) -> int:
        """Index of the last entry; the snapshot index when the log is empty."""
        segments = self._require_open().segments
        if segments:
            return segments[-1].last_index
        return self._snapshot.meta.index

    def term(self, index: int) -> int:
        """Term of the entry at ``index`` (see LogStorage.term)."""
        log = self._require_open()
        snap = self._snapshot.meta
        segments = log.segments
        if segments and segments[0].first_index <= index <= segments[-1].last_index:
            return log.term_at(index)
        if index == snap.index:
            return snap.term
        if index == 0:
            return 0
        if index < self.first_index():
            raise LogCompacted(f"index {index} is compacted (first index {self.first_index()})")
        raise LogUnavailable(f"index {index} is past the last index {self.last_index()}")

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        """Entries ``[lo, hi)`` bounded by ``max_bytes`` of data, at least one (see LogStorage)."""
        log = self._require_open()
        first = self.first_index()
        if lo < first:
            raise LogCompacted(f"index {lo} is compacted (first index {first})")
        last = self.last_index()
        if hi > last + 1:
            raise LogUnavailable(f"index {hi - 1} is past the last index {last}")
        if lo >= hi:
            return []
        cached = _from_batches(self._recent, lo, hi)
        if cached is not None:
            return _bounded(cached, max_bytes)
        return log.read(lo, hi, max_bytes)

    def sealed_segments_through(self, index: int) -> int:
        """How many sealed (not active) segments hold only entries at or below ``index``: what a
        snapshot at ``index`` would let the storage delete (the node's snapshot trigger)."""
        segments = self._require_open().segments[:-1]
        return sum(1 for segment in segments if segment.last_index <= index)

    def snapshot_size(self) -> int:
        """Size in bytes of the snapshot's data (0 when there is no snapshot)."""
        return self._snapshot.data_size

    def log_usage(self) -> tuple[int, int]:
        """The log's segment files and their bytes (header and records); (0, 0) once closed. Safe to call
        while an append runs in another thread (for metrics)."""
        log = self._log
        if log is None:
            return 0, 0
        segments = log.segments
        return len(segments), sum(segment.size_bytes for segment in segments)

    def read_snapshot(self, offset: int, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` of the snapshot's data from ``offset``."""
        return self._snapshot.read(offset, max_bytes)

    def open_snapshot_data(self) -> io.BufferedReader:
        """A binary reader over the current snapshot's data (empty when there is none).

        It has its own file descriptor: it stays valid, on the same snapshot, after a newer snapshot
        replaces it or the storage is closed. The caller closes it.
        """
        self._require_open()
        return self._snapshot.open_data()

    # --- writes ---------------------------------------------------------------------------------

    def set_committed(self, index: int) -> None:
        """Tell the storage the commit index (memory only): it decides rolling, and truncation at
        or below it is refused. It never moves back."""
        self._committed_index = max(self._committed_index, index)

    def committed_index(self) -> int:
        """The commit index last given to ``set_committed`` (the snapshot index after opening)."""
        return self._committed_index

    def append(self, entries: Sequence[Entry]) -> None:
        """Append contiguous entries durably with one fsync, replacing a conflicting suffix first."""
        log = self._require_open()
        if not entries:
            return
        first = entries[0].index
        last = self.last_index()
        snap_index = self._snapshot.meta.index
        if first > last + 1:
            raise ValueError(f"append at index {first} would leave a hole after the last index {last}")
        if first <= snap_index:
            raise ValueError(f"append at index {first} is not above the snapshot index {snap_index}")
        if first <= last and first <= self._committed_index:
            raise ValueError(
                f"append at index {first} would truncate committed entries (commit index "
                f"{self._committed_index})"
            )
        log.append(entries, self.term(first - 1), self._committed_index)
        self._remember(entries)

    def _remember(self, entries: Sequence[Entry]) -> None:
        """Keep the batch just made durable in memory (the last RECENT_BATCHES batches), dropping what it
        replaced: O(batches + batch), never O(entries kept); O(1) when the batch continues the log."""
        first = entries[0].index
        recent = self._recent
        if recent and recent[-1][-1].index + 1 == first:  # every append but one that replaces a suffix
            self._recent = (*recent[1 - RECENT_BATCHES :], tuple(entries))
            return
        kept: list[tuple[Entry, ...]] = []
        for batch in recent:
            if batch[-1].index < first:
                kept.append(batch)
            elif batch[0].index < first:
                kept.append(batch[: first - batch[0].index])
        if kept and kept[-1][-1].index + 1 != first:
            kept = []
        kept.append(tuple(entries))
        self._recent = tuple(kept[-RECENT_BATCHES:])

    def set_hard_state(self, state: HardState) -> None:
        """Durably replace the hard state (temp file, fsync, rename, fsync of the directory)."""
        self._require_open()
        if state == self._hard_state:
            return
        save_hard_state(self._ops, self._tmp_path(HARD_STATE_NAME), self._path(HARD_STATE_NAME), state)
        self._hard_state = state

    def save_snapshot(self, meta: SnapshotMeta, chunks: Iterable[bytes]) -> None:
        """Make a snapshot durable, then drop the log it covers (see LogStorage.save_snapshot).

        A snapshot at or below the current snapshot's index is ignored (its chunks are not read).
        """
        self._require_open()
        if meta.index <= self._snapshot.meta.index:
            return
        new = write_snapshot(self._ops, self._tmp_path(SNAPSHOT_NAME), self._path(SNAPSHOT_NAME), meta, chunks)
        self._replace_snapshot(new)

    def stage_snapshot(self, meta: SnapshotMeta, chunks: Iterable[bytes]) -> SnapshotFile:
        """The slow half of ``save_snapshot`` (write and fsync the file) into tmp/, where nothing reads it.

        It touches no other state of the storage: it may run in a thread of its own while ``append()`` runs in
        another. ``install_staged_snapshot`` (which must not overlap with any call) puts it in place.
        """
        staged = os.path.join(self._path(TMP_DIR), STAGED_SNAPSHOT_NAME)
        return write_snapshot(self._ops, self._tmp_path(STAGED_SNAPSHOT_NAME), staged, meta, chunks)

    def install_staged_snapshot(self, staged: SnapshotFile) -> None:
        """Make a staged snapshot the current one, then drop the log it covers (as ``save_snapshot``). A
        snapshot at or below the current snapshot's index is discarded."""
        self._require_open()
        path = os.path.join(self._path(TMP_DIR), STAGED_SNAPSHOT_NAME)
        if staged.meta.index <= self._snapshot.meta.index:
            staged.close()
            self._ops.unlink(path)
            return
        self._ops.replace(path, self._path(SNAPSHOT_NAME))
        fsync_dir(self._ops, self.data_dir)
        self._replace_snapshot(staged)

    def _replace_snapshot(self, new: SnapshotFile) -> None:
        meta = new.meta
        old, self._snapshot = self._snapshot, new
        old.close()
        self._committed_index = max(self._committed_index, meta.index)
        self._compact(meta)
        if self.last_index() <= meta.index:  # the log kept nothing after the snapshot: neither may the cache
            self._recent = ()

    def _compact(self, meta: SnapshotMeta) -> None:
        log = self._require_open()
        segments = log.segments
        if not segments:
            return
        has_entry = (
            segments[0].first_index <= meta.index <= segments[-1].last_index
            and log.term_at(meta.index) == meta.term
        )
        if has_entry:
            log.drop_through(meta.index)
        else:
            log.discard_all()
            logger.info("log discarded: it has no entry (%d, %d) of the snapshot", meta.index, meta.term)

    def _tmp_path(self, name: str) -> str:
        return os.path.join(self._path(TMP_DIR), name + ".tmp")

    # --- life cycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close every file and release the directory lock. Idempotent."""
        if self._log is not None:
            self._log.close()
            self._log = None
        self._snapshot.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> DiskStorage:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DiskStorage({self.data_dir!r})"


def _from_batches(batches: tuple[tuple[Entry, ...], ...], lo: int, hi: int) -> list[Entry] | None:
    """Entries ``[lo, hi)`` from the in-memory batches, or None when they do not hold all of them."""
    if not batches or lo < batches[0][0].index or hi - 1 > batches[-1][-1].index:
        return None
    # Reads are of recent entries (to apply, to replicate): look for ``lo`` from the newest batch back.
    k = len(batches) - 1
    while batches[k][0].index > lo:
        k -= 1
    batch = batches[k]
    start = batch[0].index
    found = list(batch[lo - start : hi - start])
    for batch in batches[k + 1 :]:
        start = batch[0].index
        if start >= hi:
            break
        found.extend(batch[: hi - start])
    return found


def _bounded(entries: Sequence[Entry], max_bytes: int) -> list[Entry]:
    """The longest prefix of ``entries`` whose data fits in ``max_bytes``, at least one entry."""
    total = 0
    for count, entry in enumerate(entries):
        total += len(entry.data)
        if total > max_bytes and count:
            return list(entries[:count])
    return list(entries)


__all__ = ["DiskStorage"]
