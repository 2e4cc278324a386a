"""Three in-process nodes over real DiskStorage, messages routed in memory so a test can cut a node off: the
leader lease, and a follower catching up through a snapshot."""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator
from pathlib import Path

import gevent
import pytest

from taskflux.domain.commands import AddRecord
from taskflux.domain.snapshot_codec import state_digest
from taskflux.raft.config import RaftConfig
from taskflux.raft.messages import Message
from taskflux.server.node import Node, NodeSettings, NotLeader
from taskflux.server.service import Delivery, QueueService
from taskflux.storage.disk import DiskStorage
from tests.server.test_node import wait_until
from tests.support.stalls import stall_appends

pytestmark = pytest.mark.timeout(60)

TICK = 0.01


class MemoryCluster:
    """Nodes whose messages go straight into each other's inboxes, unless a link is cut."""

    def __init__(self, root: Path, size: int = 3, threshold: int = 5, **storage_options: int) -> None:
        self.cut: set[int] = set()
        self.storages = [DiskStorage(root / f"node{i}", **storage_options) for i in range(size)]
        self.nodes = [
            Node(RaftConfig(node_id=i, cluster_size=size), self.storages[i], self._route,
                 NodeSettings(tick_interval=TICK, snapshot_segments_threshold=threshold), random.Random(i))
            for i in range(size)
        ]

    def _route(self, message: Message) -> None:
        if message.src not in self.cut and message.dst not in self.cut:
            self.nodes[message.dst].deliver(message)

    def leader(self) -> Node:
        wait_until(lambda: sum(node.is_leader for node in self.nodes) == 1)
        return next(node for node in self.nodes if node.is_leader)

    def stop(self) -> None:
        for node, storage in zip(self.nodes, self.storages, strict=True):
            node.stop()
            storage.close()


def submit_quietly(node: Node, command: AddRecord) -> None:
    """A write whose outcome the test does not need (the node may stop before it ends)."""
    with contextlib.suppress(Exception):
        node.submit(command)


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[MemoryCluster]:
    cluster = MemoryCluster(tmp_path, **getattr(request, "param", {}))
    for node in cluster.nodes:
        node.start()
    yield cluster
    cluster.stop()


def test_a_leader_cut_off_with_a_stalled_disk_stops_handing_out_records_within_its_lease(
    cluster: MemoryCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    leader = cluster.leader()
    for i in range(50):
        leader.submit(AddRecord("", i, b"r"))
    service = QueueService(leader)
    assert isinstance(service.reserve("", 0), Delivery)  # a leader with its lease hands records out

    cut_at = time.monotonic()
    cluster.cut.add(leader.id)
    # Its disk now takes 2 s per write: the loop waits for it and counts no ticks, so check-quorum (counted in
    # ticks) cannot notice the lost followers meanwhile.
    stall_appends(cluster.storages[leader.id], 2.0, monkeypatch)
    gevent.spawn(submit_quietly, leader, AddRecord("", 0, b"stuck"))
    handed_out = []
    while time.monotonic() < cut_at + 1.5:
        try:
            if isinstance(service.reserve("", 0), Delivery):
                handed_out.append(time.monotonic() - cut_at)
        except NotLeader:
            pass
        gevent.sleep(0.005)
    lease = (10 - 2) * TICK
    assert all(at < lease + 0.05 for at in handed_out), f"handed out {len(handed_out)}: last at {handed_out[-1]:.3f} s"
    others = [node for node in cluster.nodes if node is not leader]
    wait_until(lambda: any(node.is_leader for node in others))  # meanwhile the others elected a new leader


@pytest.mark.parametrize("cluster", [{"threshold": 1, "soft_limit_bytes": 2048, "hard_limit_bytes": 4096}],
                         indirect=True)
def test_a_follower_catches_up_through_a_snapshot_while_writes_go_on(cluster: MemoryCluster) -> None:
    leader = cluster.leader()
    lagging = next(node for node in cluster.nodes if node is not leader)
    cluster.cut.add(lagging.id)
    for i in range(200):  # several segments: the leader snapshots and compacts what the lagging node lacks
        leader.submit(AddRecord("", i % 5, b"s%03d" % i + b"." * 100))
    wait_until(lambda: cluster.storages[leader.id].first_index() > 1)
    cluster.cut.clear()
    writer = gevent.spawn(lambda: [leader.submit(AddRecord("", i % 3, b"after")) for i in range(200)])
    wait_until(lambda: cluster.storages[lagging.id].snapshot_meta().index > 0)  # installed while writes go on
    writer.get()
    leader.read_barrier()
    wait_until(lambda: lagging.applied_index == leader.applied_index)
    assert state_digest(lagging.manager) == state_digest(leader.manager)
    assert lagging.manager.get("").stored == 400  # type: ignore[union-attr]


def terms(cluster: MemoryCluster) -> set[int]:
    return {node.soft_state.term for node in cluster.nodes}


@pytest.mark.parametrize("stalled", ["leader", "followers"])
def test_a_disk_stall_longer_than_an_election_timeout_keeps_the_leader(
    cluster: MemoryCluster, monkeypatch: pytest.MonkeyPatch, stalled: str
) -> None:
    """The leader's loop waiting for its fsync still sends heartbeats; followers' loops waiting for theirs still
    answer them (so check-quorum keeps the leader). Each write below stalls 1 s: ten election timeouts."""
    leader = cluster.leader()
    leader.submit(AddRecord("", 0, b"before"))
    term = leader.soft_state.term
    nodes = [leader] if stalled == "leader" else [node for node in cluster.nodes if node is not leader]
    for node in nodes:
        stall_appends(cluster.storages[node.id], 1.0, monkeypatch)
    writes = [gevent.spawn(leader.submit, AddRecord("", 0, b"during")) for _ in range(3)]
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline and not all(write.ready() for write in writes):
        assert leader.is_leader and terms(cluster) == {term}, f"a new election while the {stalled}' disk stalled"
        gevent.sleep(0.01)
    assert all(write.successful() for write in writes)
    assert leader.is_leader and terms(cluster) == {term}
    assert sum(node.heartbeats_while_waiting for node in nodes) > 0
