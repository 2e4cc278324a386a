"""What a node does when its disk fills or fails: in-process over a failing FileOps, and as a real
process whose data directory is a 4 MiB tmpfs."""

from __future__ import annotations

import errno
import json
import random
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import gevent
import pytest

from taskflux.domain.commands import AddRecord
from taskflux.domain.results import RecordAdded
from taskflux.raft.config import RaftConfig
from taskflux.server.node import Node, NodeSettings, NodeStopped, StoppedAfterProposing, StorageFailed
from taskflux.storage import DiskStorage
from taskflux.wire import client_protocol as wire
from tests.support.cluster import LocalCluster, NodeProcess, wait_until
from tests.support.raw_client import RawConnection

from .faults import FaultyFileOps
from .tmpfs import small_disk


def _wait(condition, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        gevent.sleep(0.01)


@pytest.fixture
def node_over(tmp_path: Path) -> Iterator[tuple[Node, FaultyFileOps]]:
    """A single-node cluster in this process whose storage writes go through a FaultyFileOps."""
    ops = FaultyFileOps()
    storage = DiskStorage(tmp_path / "data", file_ops=ops)
    config = RaftConfig(node_id=0, cluster_size=1, election_ticks=4, heartbeat_ticks=1)
    node = Node(config, storage, lambda message: None, NodeSettings(tick_interval=0.01), random.Random(1))
    node.start()
    _wait(lambda: node.is_leader)
    yield node, ops
    node.stop()
    storage.close()


def _count_after_restart(data_dir: Path) -> int:
    with DiskStorage(data_dir) as storage:
        config = RaftConfig(node_id=0, cluster_size=1, election_ticks=4, heartbeat_ticks=1)
        node = Node(config, storage, lambda message: None, NodeSettings(tick_interval=0.01), random.Random(2))
        node.start()
        try:
            _wait(lambda: node.is_leader)
            node.ensure_serving()
            return node.manager.get("").count  # type: ignore[union-attr]
        finally:
            node.stop()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("op", "error"), [("fdatasync", errno.EIO), ("pwrite", errno.ENOSPC)])
def test_a_failed_write_stops_the_node_and_every_writer_is_told_why(
    node_over: tuple[Node, FaultyFileOps], tmp_path: Path, op: str, error: int
) -> None:
    node, ops = node_over
    acked = [node.submit(AddRecord("", 1, b"a%d" % i)) for i in range(20)]
    assert all(isinstance(result, RecordAdded) for result in acked)
    ops.arm(op, 1, error, sticky=True)
    writers = [gevent.spawn(node.submit, AddRecord("", 1, b"b%d" % i)) for i in range(10)]
    gevent.joinall(writers, timeout=20)
    assert all(w.ready() for w in writers), "a writer was left waiting"
    failures = [w.exception for w in writers]
    # A write the loop had taken may have reached followers (outcome unknown); one still in the inbox was
    # not executed. Both are told the storage failed.
    assert all(isinstance(f, (StorageFailed, StoppedAfterProposing)) for f in failures), failures
    assert all("storage failed" in str(f) for f in failures), failures
    message = str(failures[0])
    assert "storage failed" in message and errno.errorcode[error] not in message  # readable, not a code
    assert ("Input/output error" if error == errno.EIO else "No space left on device") in message
    assert str(tmp_path / "data") in message and "Free space or repair the disk" in message
    assert isinstance(node.failed, StorageFailed)
    # Later requests get the same answer at once (StorageFailed is a NodeStopped: not executed).
    with pytest.raises(StorageFailed, match="storage failed"):
        node.submit(AddRecord("", 1, b"later"))
    with pytest.raises(NodeStopped):
        node.read_barrier()
    node.stop()
    node.storage.close()
    ops.heal()
    # Restarted once the disk works: every acknowledged record is there (failed writes are "outcome
    # unknown": those that reached the disk before the failure may be there too).
    assert 20 <= _count_after_restart(tmp_path / "data") <= 30


@pytest.mark.timeout(180)
def test_a_node_whose_disk_fills_exits_1_and_restarts_with_everything_once_space_is_freed(
    tmp_path: Path,
) -> None:
    with small_disk(tmp_path / "disk") as disk:
        cluster = LocalCluster(1, disk.path)
        node = cluster.nodes[0]
        node.log_path = tmp_path / "node0.log"  # keep the log off the full disk
        try:
            cluster.start()
            cluster.wait_for_leader()
            conn = RawConnection(node.client_address)
            acked = 0
            payload = random.Random(3).randbytes(64 * 1024)
            with pytest.raises((ConnectionError, OSError, AssertionError)):
                for _ in range(200):  # 12.8 MB: three times the disk
                    assert conn.enqueue("", 1, payload) == wire.Ok()
                    acked += 1
            assert acked > 10
            assert node.process is not None
            wait_until(lambda: node.process.poll() is not None, 30, "the node to exit")  # type: ignore[union-attr]
            assert node.process.returncode == 1
            critical = [line for line in node.log().splitlines() if "CRITICAL" in line]
            assert any("storage failed: [Errno 28] No space left on device" in line for line in critical), critical

            disk.grow("64m")
            node.start()
            cluster.wait_for_leader()
            conn = RawConnection(node.client_address)
            answer = conn.command(wire.CountCommand(""))
            count = answer.response.count  # type: ignore[union-attr]
            assert acked <= count <= acked + 1  # the write that failed is "outcome unknown"
            assert conn.enqueue("", 1, b"after") == wire.Ok()
        finally:
            cluster.stop()


def _applied_index(node: NodeProcess) -> int:
    with urllib.request.urlopen(f"http://{node.http_address}/api/v1/cluster", timeout=5) as answer:
        return int(json.load(answer)["applied_index"])


@pytest.mark.timeout(240)
def test_a_follower_whose_disk_fills_stops_while_the_cluster_serves_and_catches_up_once_space_is_freed(
    tmp_path: Path,
) -> None:
    # A long election timeout: on a loaded machine, no election but the one at the start.
    cluster = LocalCluster(3, tmp_path, client_request_timeout="5s", raft_election_timeout="2s")
    with small_disk(tmp_path / "follower-disk") as disk:
        try:
            cluster.start()
            leader = cluster.wait_for_leader()
            follower = cluster.nodes[(leader + 1) % 3]
            follower.kill()
            shutil.move(follower.data_dir, disk.path / "data")  # the follower's data moves onto the small disk
            follower.data_dir = disk.path / "data"
            follower.start()
            conn = RawConnection(cluster.nodes[leader].client_address)
            payload = random.Random(4).randbytes(64 * 1024)
            acked = 0
            while follower.running:
                assert conn.enqueue("", 1, payload) == wire.Ok()  # two of three nodes suffice
                acked += 1
                assert acked < 400, "the follower never filled its 4 MiB disk (25.6 MB sent)"
            assert follower.process is not None and follower.process.wait(30) == 1
            assert "storage failed: [Errno 28] No space left on device" in follower.log()
            for _ in range(20):  # the cluster goes on serving writes and reads
                assert conn.enqueue("", 1, b"small") == wire.Ok()
                acked += 1
            assert conn.command(wire.CountCommand("")).response.count == acked  # type: ignore[union-attr]

            disk.grow("64m")
            follower.start()
            target = _applied_index(cluster.nodes[leader])
            wait_until(lambda: _applied_index(follower) >= target, 60, "the follower to catch up")
        finally:
            cluster.stop()
