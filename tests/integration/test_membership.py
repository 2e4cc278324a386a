"""Membership changes with real node processes, driven by ``python -m taskflux.admin`` while clients write:
grow 1 → 3 → 5, shrink, replace a node killed with SIGKILL, remove the leader, and the wiped-copy scenario.
Every acknowledged record must be there afterwards, in priority order."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from taskflux.client.client import TaskFluxClient
from taskflux.client.errors import TaskFluxError
from tests.support.cluster import LocalCluster, NodeProcess, wait_until

pytestmark = pytest.mark.timeout(300)


class Writer:
    """A client that enqueues numbered records (priority = its number, reversed) until stopped; it keeps the
    numbers whose enqueue was acknowledged."""

    def __init__(self, cluster: LocalCluster, queue: str = "") -> None:
        self.cluster = cluster
        self.queue = queue
        self.acked: list[int] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        client = TaskFluxClient([n.client_address for n in self.cluster.nodes if n.running], timeout=5)
        number = 0
        try:
            while not self._stop.is_set() and number < 100_000:
                number += 1
                try:
                    client.enqueue(self.queue, -number, b"%d" % number)
                    self.acked.append(number)
                except TaskFluxError:
                    self.failures += 1  # outcome unknown or no leader for a moment: not counted as acked
                    self._stop.wait(0.05)
        finally:
            client.close()

    @contextmanager
    def running(self) -> Iterator[Writer]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(30)

    def wait_for(self, count: int) -> None:
        start = len(self.acked)
        wait_until(lambda: len(self.acked) >= start + count, 60, f"{count} more acknowledged records")


def drain(cluster: LocalCluster, queue: str = "") -> list[int]:
    """Every record of ``queue``, taken from the leader, as numbers in the order they came out."""
    client = TaskFluxClient([n.client_address for n in cluster.nodes if n.running], timeout=10)
    out = []
    try:
        while (record := client.dequeue(queue)) is not None:
            out.append(int(record.payload))
            record.ack()
    finally:
        client.close()
    return out


def assert_everything_acknowledged_is_there(cluster: LocalCluster, writer: Writer) -> None:
    numbers = drain(cluster)
    missing = set(writer.acked) - set(numbers)
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {sorted(missing)[:5]}\n{cluster.logs()}"
    assert numbers == sorted(numbers, reverse=True), "not in priority order"


def voters_and_learners(cluster: LocalCluster, node: NodeProcess) -> tuple[list[int], list[int]]:
    view = cluster.members(node)
    assert view is not None
    return view["voters"], view["learners"]


def grow(cluster: LocalCluster) -> NodeProcess:
    """Add a new node the safe way: add as a learner, start it empty, promote it once caught up."""
    new = cluster.new_node()
    added = cluster.admin("add", cluster.member_address(new))
    assert f"node {new.node_id} added as a learner" in added.stdout, added.stdout
    new.start()
    cluster.admin("promote", str(new.node_id), "--wait", "60")
    return new


def test_grow_from_one_to_three_to_five_and_shrink_while_clients_write(tmp_path: Path) -> None:
    cluster = LocalCluster(1, tmp_path, snapshot_creation_segments_threshold="1", log_file_soft_limit="64KiB",
                           log_file_hard_limit="128KiB")
    with cluster.running():
        writer = Writer(cluster)
        with writer.running():
            writer.wait_for(200)
            for _ in range(2):
                grow(cluster)
                writer.wait_for(100)
            assert voters_and_learners(cluster, cluster.nodes[0]) == ([0, 1, 2], [])
            # A node added at run time restarts from its own data directory like any other.
            cluster.nodes[2].kill()
            writer.wait_for(50)
            cluster.nodes[2].start()
            wait_until(lambda: (view := cluster.members(cluster.nodes[2])) is not None and view["voters"] == [0, 1, 2]
                       and view["leader_id"] is not None, 30, "node 2 to come back with its membership")
            writer.wait_for(50)
            for _ in range(2):
                grow(cluster)
            writer.wait_for(100)
            leader = cluster.wait_for_leader()
            view = cluster.members(cluster.nodes[leader])
            assert view is not None and view["voters"] == [0, 1, 2, 3, 4] and view["next_id"] == 5
            # Shrink by two, the leader's own id among them when it is 3 or 4 (it hands over and steps down).
            for node_id in (3, 4):
                cluster.admin("remove", str(node_id))
                writer.wait_for(50)
            for node_id in (3, 4):
                cluster.nodes[node_id].kill()
            writer.wait_for(100)
        assert voters_and_learners(cluster, cluster.nodes[cluster.wait_for_leader()]) == ([0, 1, 2], [])
        # A removed node's id is refused for good.
        refused = cluster.admin("promote", "3", check=False)
        assert refused.returncode == 1 and "was removed" in refused.stderr
        assert_everything_acknowledged_is_there(cluster, writer)


def test_replace_a_node_killed_with_sigkill_by_a_new_empty_node_while_clients_write(tmp_path: Path) -> None:
    cluster = LocalCluster(3, tmp_path)
    with cluster.running():
        writer = Writer(cluster)
        with writer.running():
            writer.wait_for(100)
            leader = cluster.wait_for_leader()
            dead = next(i for i in range(3) if i != leader)
            cluster.nodes[dead].kill()
            writer.wait_for(100)
            # The dead node is removed (the two left answer: no force needed), a new one takes its place.
            cluster.admin("remove", str(dead))
            new = grow(cluster)
            assert new.node_id == 3
            writer.wait_for(100)
            view = cluster.members(cluster.nodes[cluster.wait_for_leader()])
            assert view is not None and sorted(view["voters"]) == sorted({0, 1, 2, 3} - {dead})
        # The dead node restarted under its old id, with its data or without, is refused by every member.
        cluster.nodes[dead].start()
        wait_until(lambda: "which was removed from the cluster" in cluster.nodes[leader].log(), 30,
                   "the leader to refuse the removed node's handshake")
        assert_everything_acknowledged_is_there(cluster, writer)


def test_removing_the_leader_hands_over_and_nothing_acknowledged_is_lost(tmp_path: Path) -> None:
    cluster = LocalCluster(3, tmp_path)
    with cluster.running():
        writer = Writer(cluster)
        with writer.running():
            writer.wait_for(100)
            old = cluster.wait_for_leader()
            done = cluster.admin("remove", str(old))
            assert f"node {old} removed" in done.stdout
            writer.wait_for(100)
            new = cluster.wait_for_leader(among=[i for i in range(3) if i != old])
            assert new != old
            assert "membership in force" in cluster.nodes[old].log()
            writer.wait_for(100)
        cluster.nodes[old].kill()
        view = cluster.members(cluster.nodes[new])
        assert view is not None and view["voters"] == sorted(set(range(3)) - {old})
        assert_everything_acknowledged_is_there(cluster, writer)


def test_a_lost_copy_is_replaced_by_a_new_member_and_the_entry_survives_the_other_copy(tmp_path: Path) -> None:
    """A, B, C; X acknowledged while C is cut off (X on A and B only). B's disk is lost: B is removed and a new
    empty node D is added and promoted (it copies X from A). Then A fails: C and D elect a leader with X."""
    cluster = LocalCluster(3, tmp_path, proxied=True, client_request_timeout="2s")
    with cluster.running():
        a = cluster.wait_for_leader()
        b, c = (i for i in range(3) if i != a)
        client = TaskFluxClient([cluster.nodes[a].client_address], timeout=5)
        client.enqueue("", 1, b"1")
        cluster.isolate(c)
        client.enqueue("", 2, b"2")  # X: on A and B only
        client.close()
        cluster.nodes[b].kill()  # B's disk is gone
        cluster.heal()
        cluster.admin("remove", str(b), "--force", via=cluster.nodes[a])
        d = grow(cluster)
        cluster.nodes[a].kill()
        leader = cluster.wait_for_leader(among=[c, d.node_id], timeout=30)
        assert leader in (c, d.node_id)
        assert drain(cluster) == [1, 2]  # X (2) survived; priority 1 is the more urgent


def test_a_client_follows_the_membership_to_nodes_added_after_it_started(tmp_path: Path) -> None:
    """A client given only node 0 learns the nodes added later from ClusterMetadata; once node 0 is removed and
    gone, it still finds the cluster."""
    cluster = LocalCluster(1, tmp_path)
    with cluster.running():
        client = TaskFluxClient([cluster.nodes[0].client_address], timeout=10)
        try:
            client.enqueue("", 1, b"1")
            grow(cluster)
            grow(cluster)
            metadata = client.cluster_metadata()
            assert [e for e in metadata.endpoints if e] == [n.client_address for n in cluster.nodes]
            cluster.admin("remove", "0")
            cluster.nodes[0].kill()
            client.enqueue("", 2, b"2")
            assert client.cluster_metadata().endpoints[0] == ""  # node 0 is reported no more
        finally:
            client.close()
        assert drain(cluster) == [1, 2]
