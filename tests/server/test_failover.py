"""Three in-process nodes linked by real peer networks on loopback: when the leader's process closes its links
(as a crash does), the followers elect a new leader without waiting for their election timeout; a leader that
closes a link itself has given up its lease first."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskflux.domain.commands import AddRecord
from taskflux.domain.results import RecordAdded
from taskflux.raft.config import RaftConfig
from taskflux.raft.messages import Message
from taskflux.server.node import Node, NodeSettings
from taskflux.server.peers import PeerNetwork
from taskflux.storage.disk import DiskStorage
from tests.server.test_node import wait_until
from tests.support.cluster import free_port

pytestmark = pytest.mark.timeout(60)

TICK = 0.01
FIRST = 10  # node 0's election ticks: it wins the first election within 0.1–0.2 s
PATIENT = 1000  # the others' election ticks: 10–20 s, far longer than the test waits for a new leader


class LinkedNode:
    """A node and its peer network, wired as taskflux/server/main.py wires them."""

    def __init__(self, root: Path, node_id: int, ports: list[int]) -> None:
        self.storage = DiskStorage(root / f"node{node_id}")
        self.peers = PeerNetwork(node_id, [("127.0.0.1", port) for port in ports], ("127.0.0.1", ports[node_id]),
                                 f"127.0.0.1:{ports[node_id]}", self._deliver, timeout=2.0,
                                 peer_closed=self._peer_closed, closing_link=self._closing_link)
        election = FIRST if node_id == 0 else PATIENT
        self.node = Node(RaftConfig(node_id=node_id, cluster_size=len(ports), election_ticks=election),
                         self.storage, self.peers.send, NodeSettings(tick_interval=TICK), random.Random(node_id))
        self.stopped = False

    def _deliver(self, message: Message) -> None:
        self.node.deliver(message)

    def _peer_closed(self, peer: int) -> None:
        self.node.peer_closed(peer)

    def _closing_link(self, peer: int) -> None:
        self.node.end_lease()

    def start(self) -> None:
        self.node.start()
        self.peers.start()

    def stop(self) -> None:
        """Like a crash, as far as the peers can tell: the links close, nothing more is sent."""
        if not self.stopped:
            self.stopped = True
            self.node.stop()
            self.peers.stop()
            self.storage.close()


@pytest.fixture
def linked(tmp_path: Path) -> Iterator[list[LinkedNode]]:
    ports = [free_port() for _ in range(3)]
    nodes = [LinkedNode(tmp_path, i, ports) for i in range(3)]
    for node in nodes:
        node.start()
    yield nodes
    for node in nodes:
        node.stop()


def test_followers_whose_leaders_links_closed_elect_a_new_leader_long_before_their_election_timeout(
    linked: list[LinkedNode],
) -> None:
    leader = linked[0]
    wait_until(lambda: leader.node.is_leader and all(n.node.leader_id == 0 for n in linked))
    assert isinstance(leader.node.submit(AddRecord("", 0, b"before")), RecordAdded)
    term = leader.node.soft_state.term
    leader.stop()
    # The survivors' election timeouts are 10 s or more: only the closed links can have made them campaign.
    wait_until(lambda: linked[1].node.is_leader, timeout=5.0)
    assert linked[1].node.soft_state.term == term + 1  # the lowest id went first: no split vote
    assert linked[2].node.leader_id == 1
    assert isinstance(linked[1].node.submit(AddRecord("", 0, b"after")), RecordAdded)


def test_a_leader_closing_a_link_itself_ends_its_lease_and_renews_it_with_a_later_round(
    linked: list[LinkedNode],
) -> None:
    leader = linked[0]
    wait_until(lambda: leader.node.lease_valid)
    leader.node.end_lease()  # what closing_link does before any link this node dialled closes
    assert not leader.node.lease_valid
    leader.node.ensure_lease()  # a round started after it renews it (both followers still hear the leader)
    assert leader.node.lease_valid and leader.node.is_leader
