"""The node loop in-process: a single-node cluster over a real DiskStorage, no sockets."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import gevent
import gevent.event
import pytest

from taskflux.domain.commands import AddRecord, CreateQueue, DeleteQueue, RemoveRecord
from taskflux.domain.results import OK, RecordAdded, RecordRemoved
from taskflux.domain.snapshot_codec import state_digest
from taskflux.raft.config import RaftConfig
from taskflux.server.node import CommitTimeout, Node, NodeSettings, NodeStopped, NotLeader, StorageFailed
from taskflux.storage.disk import DiskStorage
from taskflux.storage.fileops import ForwardingFileOps, OffloadedSyncs
from tests.support.stalls import stall_appends

pytestmark = pytest.mark.timeout(60)


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        gevent.sleep(0.01)


class SingleNode:
    def __init__(self, path: Path, **storage_options: int) -> None:
        self.path = path
        self.storage_options = storage_options
        self.storage: DiskStorage | None = None
        self.node: Node | None = None

    def start(self, threshold: int = 5, request_timeout: float = 5.0, inline_fsync_entries: int = 0) -> Node:
        self.storage = DiskStorage(self.path, **self.storage_options)
        config = RaftConfig(node_id=0, cluster_size=1, election_ticks=4, heartbeat_ticks=1)
        settings = NodeSettings(tick_interval=0.01, snapshot_segments_threshold=threshold,
                                request_timeout=request_timeout, inline_fsync_entries=inline_fsync_entries)
        self.node = Node(config, self.storage, lambda message: None, settings, random.Random(1))
        self.node.start()
        wait_until(lambda: self.node.is_leader)
        return self.node

    def stop(self) -> None:
        assert self.node is not None and self.storage is not None
        self.node.stop()
        self.storage.close()


@pytest.fixture
def single(tmp_path: Path) -> Iterator[SingleNode]:
    harness = SingleNode(tmp_path / "data")
    yield harness
    if harness.node is not None and harness.storage is not None and harness.storage._log is not None:
        harness.stop()


def test_a_single_node_elects_itself_and_applies_what_it_commits(single: SingleNode) -> None:
    node = single.start()
    assert node.submit(CreateQueue("jobs")) is OK
    assert node.submit(AddRecord("jobs", 5, b"a")) == RecordAdded(1)
    node.read_barrier()
    assert node.manager.get("jobs").count == 1  # type: ignore[union-attr]


def test_concurrent_proposals_share_fsyncs(single: SingleNode) -> None:
    node = single.start()
    batches_before = node.batches
    greenlets = [gevent.spawn(node.submit, AddRecord("", i, b"x")) for i in range(200)]
    gevent.joinall(greenlets, raise_error=True)
    ids = sorted(g.value.record_id for g in greenlets)
    assert ids == list(range(1, 201))
    assert node.batches - batches_before < 100  # group commit: far fewer fsyncs than proposals


def test_state_survives_a_restart(single: SingleNode) -> None:
    node = single.start()
    node.submit(CreateQueue("q"))
    for i in range(20):
        node.submit(AddRecord("q", i % 3, b"%d" % i))
    queue = node.manager.get("q")
    assert node.submit(RemoveRecord("q", queue.incarnation, 1)) == RecordRemoved(True)  # type: ignore[union-attr]
    node.submit(DeleteQueue("q"))
    node.submit(CreateQueue("q2"))
    node.submit(AddRecord("q2", 1, b"kept"))
    digest = state_digest(node.manager)
    single.stop()
    node = single.start()
    node.read_barrier()  # the new term's no-op commits everything before it
    assert state_digest(node.manager) == digest


def test_snapshots_compact_the_log_and_restore(tmp_path: Path) -> None:
    harness = SingleNode(tmp_path / "data", soft_limit_bytes=2048, hard_limit_bytes=4096)
    node = harness.start(threshold=2)

    def writer(first: int) -> list[int]:
        return [node.submit(AddRecord("", i, b"y" * 40)).record_id for i in range(first, first + 50)]  # type: ignore[union-attr]

    writers = [gevent.spawn(writer, 50 * w) for w in range(6)]  # clients keep writing while snapshots are taken
    gevent.joinall(writers, raise_error=True)
    assert sorted(i for w in writers for i in w.value) == list(range(1, 301))
    wait_until(lambda: harness.storage.snapshot_meta().index > 0)
    assert node.manager.get("").count == 300  # type: ignore[union-attr]
    digest = state_digest(node.manager)
    harness.stop()
    node = harness.start(threshold=2)
    node.read_barrier()
    assert harness.storage.first_index() > 1
    assert state_digest(node.manager) == digest


def test_a_follower_refuses_with_not_leader(tmp_path: Path) -> None:
    storage = DiskStorage(tmp_path / "data")
    node = Node(RaftConfig(node_id=1, cluster_size=3), storage, lambda message: None,
                NodeSettings(tick_interval=0.01), random.Random(2))
    node.start()
    try:
        with pytest.raises(NotLeader) as raised:
            node.submit(AddRecord("", 0, b""))
        assert raised.value.leader_id == -1
        with pytest.raises(NotLeader):
            node.read_barrier()
    finally:
        node.stop()
        storage.close()


def test_a_proposal_not_committed_in_time_is_a_commit_timeout_and_may_still_apply(
    single: SingleNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = single.start(request_timeout=0.2)
    node.submit(CreateQueue("slow"))
    stall_appends(single.storage, 0.6, monkeypatch)  # type: ignore[arg-type]
    started = time.monotonic()
    with pytest.raises(CommitTimeout):
        node.submit(AddRecord("slow", 1, b"late"))
    assert time.monotonic() - started < 0.5  # answered at its deadline, not when the disk came back
    wait_until(lambda: node.manager.get("slow").count == 1)  # type: ignore[union-attr]  # the outcome was unknown: it did commit


def test_stop_answers_every_waiting_session(single: SingleNode, monkeypatch: pytest.MonkeyPatch) -> None:
    node = single.start()
    stall_appends(single.storage, 0.3, monkeypatch)  # type: ignore[arg-type]
    in_flight = [gevent.spawn(node.submit, AddRecord("", i, b"x")) for i in range(5)]
    gevent.sleep(0.05)
    stopper = gevent.spawn(single.stop)
    gevent.sleep(0)
    late = [gevent.spawn(node.submit, AddRecord("", i, b"y")) for i in range(5)]
    gevent.joinall([*in_flight, *late, stopper], timeout=10)
    assert stopper.successful()
    for greenlet in in_flight:  # none hangs: committed before the stop, or told the node stopped
        assert greenlet.dead and (greenlet.successful() or isinstance(greenlet.exception, NodeStopped))
    for greenlet in late:
        assert greenlet.dead and isinstance(greenlet.exception, NodeStopped)


def break_tmp_dir(data_dir: Path) -> None:
    """A real storage fault: the data directory's tmp/ becomes a file, so the next new log segment (written
    there first) fails with ENOTDIR, also for root."""
    tmp = data_dir / "tmp"
    for leftover in tmp.iterdir():
        leftover.unlink()
    tmp.rmdir()
    tmp.write_bytes(b"")


def test_stop_after_the_loop_failed_is_quick_and_closes_everything(tmp_path: Path) -> None:
    harness = SingleNode(tmp_path / "data", soft_limit_bytes=1024, hard_limit_bytes=2048)
    node = harness.start()
    break_tmp_dir(harness.path)
    with pytest.raises((NodeStopped, NotLeader, CommitTimeout)):
        for i in range(200):  # enough for the active segment to fill and a new one to be needed
            node.submit(AddRecord("", i, b"z" * 64))
    wait_until(lambda: node.failed is not None)
    assert isinstance(node.failed, StorageFailed) and isinstance(node.failed.__cause__, OSError)
    assert not node.is_leader  # nothing may still treat it as the leader (a hand-over, a session)
    with pytest.raises(NodeStopped):
        node.submit(AddRecord("", 0, b"late"))
    assert node.transfer_leadership(1, timeout=5) is False  # answered at once, no exception
    started = time.monotonic()
    node.stop()
    node.stop()  # again: still fine
    assert time.monotonic() - started < 2
    assert node.ended.is_set()
    harness.storage.close()  # type: ignore[union-attr]


@pytest.mark.timeout(180)
def test_a_snapshot_of_a_large_state_does_not_stall_the_loop(tmp_path: Path) -> None:
    harness = SingleNode(tmp_path / "data", soft_limit_bytes=4096, hard_limit_bytes=8192)
    node = harness.start(threshold=1)
    node.submit(CreateQueue("big"))
    node.read_barrier()
    # 200k records put straight into the state machine: writing them through the log would take minutes here.
    queue = node.manager.get("big")
    for i in range(200_000):
        queue.add(i % 7, b"p" * 200)  # type: ignore[union-attr]
    lateness: list[float] = []
    stop = gevent.event.Event()

    def probe() -> None:  # how late the hub wakes a sleeper: how long anything on it was blocked
        while not stop.is_set():
            started = time.monotonic()
            gevent.sleep(0.002)
            lateness.append(time.monotonic() - started - 0.002)

    latencies: list[float] = []

    def writer() -> None:  # fills segments (a snapshot is due after one) and keeps writing while it is taken
        i = 0
        while not stop.is_set():
            started = time.monotonic()
            node.submit(AddRecord("", i, b"w" * 100))
            latencies.append(time.monotonic() - started)
            i += 1

    node.longest_stall = 0.0
    greenlets = [gevent.spawn(probe), *(gevent.spawn(writer) for _ in range(4))]
    wait_until(lambda: harness.storage.snapshot_meta().index > 0, timeout=120)  # type: ignore[union-attr]
    stop.set()
    gevent.joinall(greenlets, raise_error=True)
    # Measured here: the hub blocked 0.04 s at most, the longest loop turn and write 0.08 s (0.72 s when the
    # loop encoded the snapshot itself); the bound leaves room for a loaded machine, below an election timeout.
    assert max(lateness) < 0.3, f"the hub was blocked for {max(lateness):.3f} s"
    assert node.longest_stall < 0.3, f"a loop turn took {node.longest_stall:.3f} s"
    assert max(latencies) < 0.3, f"a write took {max(latencies):.3f} s"
    node.read_barrier()
    digest = state_digest(node.manager)
    harness.stop()
    node = harness.start(threshold=1)  # the snapshot (and the log after it) give exactly the same state
    node.read_barrier()
    assert state_digest(node.manager) == digest
    assert node.manager.get("big").stored == 200_000  # type: ignore[union-attr]


def test_the_loop_writes_a_batch_itself_and_hands_only_its_fsync_to_the_disk_thread(
    single: SingleNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk thread runs the fdatasync alone (one C call, hardly any GIL); the write into the page cache
    is the loop's, on the hub's thread. After the node stops, the storage has its own calls back."""
    node = single.start()
    node.submit(AddRecord("", 0, b"w"))  # the election's writes (hard state, no-op entry) are done
    assert single.storage is not None
    ops = single.storage.file_ops
    assert isinstance(ops, OffloadedSyncs)
    calls: list[tuple[str, int]] = []

    class Recording(ForwardingFileOps):
        def pwrite(self, fd: int, data: bytes | bytearray | memoryview, offset: int) -> int:
            calls.append(("pwrite", threading.get_native_id()))
            return self.inner.pwrite(fd, data, offset)

        def fdatasync(self, fd: int) -> None:
            calls.append(("fdatasync", threading.get_native_id()))
            self.inner.fdatasync(fd)

    monkeypatch.setattr(ops, "inner", Recording(ops.inner))
    hub = threading.get_native_id()
    assert node.submit(AddRecord("", 1, b"x")) == RecordAdded(2)
    assert [name for name, _ in calls] == ["pwrite", "fdatasync"]
    assert calls[0][1] == hub and calls[1][1] != hub
    node.stop()
    assert single.storage.file_ops is ops.inner


def test_large_batches_are_fsynced_on_the_hub_until_an_fsync_there_is_slow(
    single: SingleNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = single.start(inline_fsync_entries=4)
    assert node._disk_thread is not None
    node.submit(AddRecord("", 0, b"w"))  # the election's writes (hard state, no-op entry) are done
    handed_to_thread = []
    call = node._disk_thread.call
    monkeypatch.setattr(node._disk_thread, "call", lambda *args: handed_to_thread.append(1) or call(*args))

    def batch_of(count: int) -> None:
        writes = [gevent.spawn(node.submit, AddRecord("", 0, b"w")) for _ in range(count)]
        gevent.joinall(writes, raise_error=True)

    batch_of(1)  # below the threshold: the disk thread
    assert handed_to_thread == [1]
    batch_of(8)  # one batch of 8 on the hub
    assert handed_to_thread == [1]
    stall_appends(node.storage, 0.05, monkeypatch)  # slower than SLOW_INLINE_FSYNC
    batch_of(8)
    assert handed_to_thread == [1]  # this one was on the hub, and slow...
    batch_of(8)
    assert handed_to_thread == [1, 1]  # ...so the next large batch goes to the thread
    assert node.manager.get("").stored == 26  # type: ignore[union-attr]
