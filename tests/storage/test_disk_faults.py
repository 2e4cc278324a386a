"""Disk faults: a write, fsync, rename, truncation or unlink that fails at any point, and a disk that is
really full. Whatever fails, nothing acknowledged is lost and the directory opens again."""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from taskflux.raft.storage import StorageError
from taskflux.raft.types import Entry, HardState, SnapshotMeta
from taskflux.storage import DiskStorage

from .faults import FaultyFileOps
from .helpers import TINY, all_entries, make_entries, segment_files
from .tmpfs import small_disk

OPS = ("open", "pwrite", "fsync", "fdatasync", "ftruncate", "replace", "unlink")
ERRORS = {"pwrite": errno.ENOSPC, "open": errno.ENOSPC}


@dataclass
class Model:
    """What the storage acknowledged (each call that returned), and the call that failed."""

    entries: dict[int, Entry] = field(default_factory=dict)
    hard_state: HardState = field(default_factory=HardState)
    snapshot: SnapshotMeta = field(default_factory=SnapshotMeta)
    failed: tuple[str, object] | None = None


def _append(entries: list[Entry], committed: int) -> Callable[[DiskStorage, Model], None]:
    def step(storage: DiskStorage, model: Model) -> None:
        storage.append(entries)
        storage.set_committed(committed)
        for index in [i for i in model.entries if i >= entries[0].index]:
            del model.entries[index]
        model.entries.update((e.index, e) for e in entries)

    step.__name__ = f"append {entries[0].index}..{entries[-1].index}"
    return step


def _hard_state(state: HardState) -> Callable[[DiskStorage, Model], None]:
    def step(storage: DiskStorage, model: Model) -> None:
        storage.set_hard_state(state)
        model.hard_state = state

    return step


def _snapshot(meta: SnapshotMeta) -> Callable[[DiskStorage, Model], None]:
    def step(storage: DiskStorage, model: Model) -> None:
        storage.save_snapshot(meta, [b"state at %d" % meta.index])
        model.snapshot = meta

    return step


def _workload() -> list[tuple[str, object, Callable[[DiskStorage, Model], None]]]:
    """Appends that roll segments, a local snapshot, a suffix replaced by a new term, a leader's
    snapshot past the log, hard states in between: every kind of disk change the node makes."""
    steps: list[tuple[str, object, Callable[[DiskStorage, Model], None]]] = [
        ("hard state", HardState(1, 0), _hard_state(HardState(1, 0)))
    ]
    for first in range(1, 33, 4):
        batch = make_entries(first, 4, term=1)
        steps.append(("append", batch, _append(batch, min(first + 3, 24))))
    steps.append(("snapshot", SnapshotMeta(12, 1), _snapshot(SnapshotMeta(12, 1))))
    steps.append(("hard state", HardState(2, 1), _hard_state(HardState(2, 1))))
    replacing = make_entries(29, 6, term=2, seed=1)
    steps.append(("append", replacing, _append(replacing, 24)))
    steps.append(("snapshot", SnapshotMeta(40, 3), _snapshot(SnapshotMeta(40, 3))))
    steps.append(("hard state", HardState(3, 2), _hard_state(HardState(3, 2))))
    for first in range(41, 49, 4):
        batch = make_entries(first, 4, term=3)
        steps.append(("append", batch, _append(batch, first + 3)))
    return steps


def run_workload(path: Path, ops: FaultyFileOps) -> Model:
    model = Model()
    try:
        storage = DiskStorage(path, file_ops=ops, **TINY)
    except OSError as error:  # creating the directory's parts failed: nothing was acknowledged
        assert "injected" in str(error)
        model.failed = ("open", None)
        return model
    try:
        for kind, argument, step in _workload():
            try:
                step(storage, model)
            except OSError as error:
                assert "injected" in str(error)
                model.failed = (kind, argument)
                break
    finally:
        storage.close()
    return model


def check_against(storage: DiskStorage, model: Model) -> None:
    """Everything acknowledged is there; anything else comes from the one call that failed."""
    kind, attempted = model.failed or ("", None)
    assert storage.hard_state() in (model.hard_state, attempted if kind == "hard state" else None)
    assert storage.snapshot_meta() in (model.snapshot, attempted if kind == "snapshot" else None)
    snap = storage.snapshot_meta().index
    tried = {e.index: e for e in attempted} if kind == "append" else {}  # type: ignore[attr-defined]
    replaced_from = min(tried, default=1 << 62)
    on_disk = {e.index: e for e in all_entries(storage) if e.index > snap}
    for index, entry in model.entries.items():
        if index > snap and index < replaced_from:
            assert on_disk.get(index) == entry, f"acknowledged entry {index} lost"
    for index, entry in on_disk.items():
        assert entry in (model.entries.get(index), tried.get(index)), f"entry {index} came from nowhere"


@pytest.mark.parametrize("op", OPS)
def test_a_fault_at_any_call_loses_nothing_acknowledged(tmp_path: Path, op: str) -> None:
    dry = FaultyFileOps()
    run_workload(tmp_path / "dry", dry)
    calls = dry.calls[op]
    assert calls >= 1, dry.calls
    for nth in range(1, calls + 1):
        path = tmp_path / f"{op}{nth}"
        model = run_workload(path, FaultyFileOps(op, nth, ERRORS.get(op, errno.EIO)))
        assert model.failed is not None, f"{op} call {nth} did not fail anything"
        with DiskStorage(path, **TINY) as storage:
            check_against(storage, model)
            # ... and the node can carry on from there.
            last = storage.last_index()
            storage.append([Entry(last + 1, max(3, storage.term(last)), b"after the fault")])


def test_a_failed_append_refuses_more_until_reopened(tmp_path: Path) -> None:
    ops = FaultyFileOps()
    with DiskStorage(tmp_path, file_ops=ops, **TINY) as storage:
        storage.append(make_entries(1, 4))
        ops.arm("pwrite", 1, errno.ENOSPC, sticky=True)
        with pytest.raises(OSError, match="No space left"):
            storage.append(make_entries(5, 4))
        ops.heal()
        with pytest.raises(StorageError, match="reopen"):
            storage.append(make_entries(5, 4))
        assert storage.last_index() == 4


def _torn(path: Path) -> int:
    """A directory whose last segment ends with half a record; its intact size."""
    with DiskStorage(path, **TINY) as storage:
        storage.append(make_entries(1, 10))
    segment = segment_files(path)[-1]
    size = segment.stat().st_size
    with open(segment, "ab") as f:
        f.write(b"half a record")
    return size


def test_start_up_on_a_full_disk_cuts_a_torn_tail_without_keeping_a_copy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    size = _torn(tmp_path)
    ops = FaultyFileOps("pwrite", 1, errno.ENOSPC, sticky=True)
    with caplog.at_level(logging.WARNING, logger="taskflux.storage"), DiskStorage(tmp_path, file_ops=ops) as s:
        assert s.last_index() == 10
    assert ops.failures and segment_files(tmp_path)[-1].stat().st_size == size
    assert list((tmp_path / "torn").iterdir()) == []  # the partial copy was removed
    assert any("without a copy" in r.getMessage() and "No space left" in r.getMessage() for r in caplog.records)


@pytest.mark.timeout(60)
def test_a_really_full_disk(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A 4 MiB tmpfs filled by appends: the append that does not fit fails with ENOSPC, the directory
    still opens on the full disk (torn tail cut without a copy), and once the disk grows the log goes on
    with every acknowledged entry."""
    with small_disk(tmp_path / "disk") as disk:
        data_dir = disk.path / "data"
        acked: list[Entry] = []
        with DiskStorage(data_dir, soft_limit_bytes=1 << 20, hard_limit_bytes=2 << 20) as storage:
            for first in range(1, 10_000, 8):
                batch = make_entries(first, 8, size=20_000)
                try:
                    storage.append(batch)
                except OSError as error:
                    assert error.errno == errno.ENOSPC
                    break
                storage.set_committed(batch[-1].index)
                acked.extend(batch)
            else:
                pytest.fail("a 4 MiB disk took 200 MB")
        assert len(acked) > 50
        with caplog.at_level(logging.WARNING, logger="taskflux.storage"), DiskStorage(data_dir) as storage:
            assert all_entries(storage)[: len(acked)] == acked
            last = storage.last_index()
        disk.grow("64m")
        with DiskStorage(data_dir) as storage:
            more = make_entries(last + 1, 8, size=20_000)
            storage.append(more)
            assert all_entries(storage)[: len(acked)] == acked and storage.last_index() == last + 8
