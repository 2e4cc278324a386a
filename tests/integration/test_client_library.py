"""The Python client library against a real 3-node cluster: discovery, NotLeader, failover, acks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from taskflux.client import MaxQueueSizeExceeded, QueueAlreadyExists, QueueDoesNotExist, TaskFluxClient
from tests.support.cluster import LocalCluster

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with LocalCluster(3, tmp_path).running() as cluster:
        yield cluster


def test_every_operation_through_one_follower_endpoint(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader()
    follower = cluster.client_addresses[(leader + 1) % 3]
    with TaskFluxClient([follower], timeout=10) as client:  # discovers the leader through ClusterMetadata
        client.create_queue("jobs", "h4", max_queue_size=3)
        with pytest.raises(QueueAlreadyExists):
            client.create_queue("jobs")
        for priority, payload in [(5, b"e"), (1, b"a"), (5, b"f")]:
            client.enqueue("jobs", priority, payload)
        with pytest.raises(MaxQueueSizeExceeded) as full:
            client.enqueue("jobs", 0, b"x")
        assert full.value.max_queue_size == 3
        assert client.count("jobs") == 3
        with client.consume("jobs") as record:
            assert record is not None and record.payload == b"a"
        with pytest.raises(RuntimeError), client.consume("jobs") as record:
            assert record is not None and record.payload == b"e"
            raise RuntimeError("the handler failed: nack")
        assert [client.dequeue("jobs").payload for _ in range(2)] == [b"f", b"e"]  # type: ignore[union-attr]
        summaries = {summary.name: summary for summary in client.list_queues()}
        assert summaries["jobs"].max_queue_size == 3
        client.delete_queue("jobs")
        with pytest.raises(QueueDoesNotExist):
            client.count("jobs")
        assert client.cluster_metadata().leader_id == leader


def test_the_client_follows_a_failover(cluster: LocalCluster) -> None:
    with TaskFluxClient(cluster.client_addresses, timeout=15) as client:
        client.enqueue("", 1, b"before")
        leader = client.cluster_metadata().leader_id
        assert leader is not None
        cluster.nodes[leader].kill()
        client.enqueue("", 1, b"after")  # reconnects, finds the new leader, retries safely
        assert client.cluster_metadata().leader_id != leader
        assert sorted(client.dequeue("").payload for _ in range(2)) == [b"after", b"before"]  # type: ignore[union-attr]
