"""A node's metrics in-process: the exposition parses, every family is there, and the values follow the node."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import gevent
import pytest
from prometheus_client import REGISTRY

from taskflux.domain.commands import AddRecord, CreateQueue, RemoveRecord
from taskflux.raft.messages import Message
from taskflux.server.metrics import NodeMetrics
from taskflux.server.node import Node
from taskflux.storage.disk import DiskStorage
from tests.metrics.helpers import EXPECTED_FAMILIES, Scrape, start_node, wait_until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Node, DiskStorage, NodeMetrics]]:
    metrics = NodeMetrics()
    node, storage = start_node(tmp_path / "data", metrics)
    wait_until(lambda: node.is_leader)
    yield node, storage, metrics
    node.stop()
    storage.close()


def test_the_exposition_parses_and_holds_every_family(running: tuple[Node, DiskStorage, NodeMetrics]) -> None:
    _, _, metrics = running
    scrape = Scrape(metrics)
    assert scrape.content_type.startswith("text/plain; version=0.0.4")
    for name, kind in EXPECTED_FAMILIES.items():
        assert name in scrape.families, f"{name} missing"
        assert scrape.families[name].type == kind, name
    assert "process_cpu_seconds" in scrape.families  # the process collector, in this registry only


def test_values_follow_the_node_under_load(running: tuple[Node, DiskStorage, NodeMetrics]) -> None:
    node, storage, metrics = running
    before = Scrape(metrics)
    assert before.value("taskflux_raft_role", role="leader") == 1
    assert before.value("taskflux_raft_role", role="follower") == 0
    assert before.value("taskflux_raft_leader_id") == 0
    assert before.value("taskflux_raft_node_id") == 0
    assert before.value("taskflux_cluster_members", kind="voter") == 1
    assert before.value("taskflux_cluster_members", kind="learner") == 0
    assert before.value("taskflux_raft_term") >= 1
    assert before.value("taskflux_raft_leader_changes_total") == 1
    assert before.labels_of("taskflux_raft_replication_lag_entries") == []  # no followers to lag
    index_before = before.value("taskflux_raft_commit_index")

    node.submit(CreateQueue("jobs"))
    submits = 200
    greenlets = [gevent.spawn(node.submit, AddRecord("jobs" if i % 2 else "", i, b"x" * 10)) for i in range(submits)]
    gevent.joinall(greenlets, raise_error=True)
    jobs = node.manager.get("jobs")
    assert jobs is not None
    record = jobs.reserve()
    assert record is not None
    node.submit(RemoveRecord("jobs", jobs.incarnation, record.id))
    jobs.reserve()  # one handed out, not yet acked

    after = Scrape(metrics)
    assert after.value("taskflux_raft_persist_batch_entries_count") > 0
    assert after.value("taskflux_raft_persist_batch_entries_sum") >= submits + 2
    assert after.value("taskflux_raft_persist_duration_seconds_count") > 0
    assert after.value("taskflux_raft_persist_duration_seconds_sum") > 0
    for name in ("taskflux_raft_commit_index", "taskflux_raft_applied_index", "taskflux_raft_last_index"):
        assert after.value(name) >= index_before + submits + 2, name
    assert after.value("taskflux_raft_commit_index") == node.commit_index
    assert after.value("taskflux_raft_applied_index") == node.applied_index
    for queue in node.manager.queues():
        assert after.value("taskflux_queue_depth", queue=queue.name) == queue.count
        assert after.value("taskflux_queue_reserved", queue=queue.name) == queue.reserved_count
        assert after.value("taskflux_queue_delayed", queue=queue.name) == queue.delayed_count
    assert after.value("taskflux_queue_depth", queue="jobs") == submits // 2 - 2
    assert after.value("taskflux_queue_reserved", queue="jobs") == 1
    assert after.value("taskflux_storage_log_segments") == 1
    assert after.value("taskflux_storage_log_bytes") == storage.log_usage()[1] > (submits + 2) * 10
    assert after.value("taskflux_raft_leader_changes_total") == 1


def test_snapshots_are_measured(tmp_path: Path) -> None:
    metrics = NodeMetrics()
    node, storage = start_node(tmp_path / "data", metrics, threshold=2, soft_limit_bytes=2048, hard_limit_bytes=4096)
    try:
        wait_until(lambda: node.is_leader)
        assert Scrape(metrics).value("taskflux_snapshot_size_bytes_count", source="local") == 0

        def writer(first: int) -> None:
            for i in range(first, first + 50):
                node.submit(AddRecord("", i, b"y" * 40))

        gevent.joinall([gevent.spawn(writer, 50 * w) for w in range(6)], raise_error=True)
        wait_until(lambda: storage.snapshot_meta().index > 0)
        scrape = Scrape(metrics)
        assert scrape.value("taskflux_snapshot_size_bytes_count", source="local") >= 1
        assert scrape.value("taskflux_snapshot_size_bytes_sum", source="local") > 0
        assert scrape.value("taskflux_snapshot_duration_seconds_count", source="local") >= 1
        assert scrape.value("taskflux_raft_snapshot_index") == storage.snapshot_meta().index > 0
        assert scrape.value("taskflux_storage_snapshot_bytes") == storage.snapshot_size() > 0
        segments, log_bytes = storage.log_usage()
        assert scrape.value("taskflux_storage_log_segments") == segments >= 1
        assert scrape.value("taskflux_storage_log_bytes") == log_bytes
        assert scrape.value("taskflux_queue_depth", queue="") == 300
    finally:
        node.stop()
        storage.close()


def test_a_leader_reports_the_lag_of_each_follower(tmp_path: Path) -> None:
    """Three nodes in-process, wired by direct delivery; cutting one follower off makes its lag grow."""
    cut_off: set[int] = set()
    nodes: list[Node] = []

    def send(message: Message) -> None:
        if message.dst not in cut_off and message.src not in cut_off:
            nodes[message.dst].deliver(message)

    all_metrics = [NodeMetrics(process_metrics=False) for _ in range(3)]
    storages = []
    for node_id, metrics in enumerate(all_metrics):
        node, storage = start_node(tmp_path / f"n{node_id}", metrics, node_id=node_id, cluster_size=3, send=send)
        nodes.append(node)
        storages.append(storage)
    try:
        wait_until(lambda: sum(node.is_leader for node in nodes) == 1)
        leader = next(node for node in nodes if node.is_leader)
        followers = [node.id for node in nodes if node is not leader]
        leader.submit(AddRecord("", 1, b"a"))
        wait_until(lambda: all(Scrape(all_metrics[node_id]).value("taskflux_raft_leader_id") == leader.id
                               for node_id in range(3)))
        for node in nodes:
            scrape = Scrape(all_metrics[node.id])
            assert scrape.value("taskflux_raft_role", role="leader") == (1 if node is leader else 0)
            assert scrape.value("taskflux_raft_leader_changes_total") >= 1
            if node is not leader:
                assert scrape.labels_of("taskflux_raft_replication_lag_entries") == []
        wait_until(lambda: all(Scrape(all_metrics[leader.id]).value(
            "taskflux_raft_replication_lag_entries", peer=str(peer)) == 0 for peer in followers))

        cut_off.add(followers[0])
        for i in range(5):
            leader.submit(AddRecord("", i, b"b"))  # the other follower makes the majority
        scrape = Scrape(all_metrics[leader.id])
        assert scrape.value("taskflux_raft_replication_lag_entries", peer=str(followers[0])) >= 5
        wait_until(lambda: Scrape(all_metrics[leader.id]).value(
            "taskflux_raft_replication_lag_entries", peer=str(followers[1])) == 0)
    finally:
        for node, storage in zip(nodes, storages, strict=True):
            node.stop()
            storage.close()


def test_request_metrics_cache_their_children_and_count() -> None:
    metrics = NodeMetrics(process_metrics=False)
    for _ in range(3):
        metrics.observe_request("rest", "enqueue", "ok", 0.0002)
    metrics.observe_request("rest", "enqueue", "policy_violation", 0.003)
    metrics.observe_request("grpc", "dequeue", "empty", 0.5)
    metrics.records_enqueued("rest", 3)
    metrics.records_dequeued("grpc")
    metrics.records_acked("grpc")
    metrics.records_nacked("rest", 2)
    assert metrics.interface("rest") is metrics.interface("rest")
    scrape = Scrape(metrics)
    assert scrape.value("taskflux_requests_total", interface="rest", command="enqueue", outcome="ok") == 3
    assert scrape.value("taskflux_requests_total", interface="rest", command="enqueue",
                        outcome="policy_violation") == 1
    assert scrape.value("taskflux_request_duration_seconds_count", interface="rest", command="enqueue") == 4
    assert scrape.value("taskflux_request_duration_seconds_bucket", interface="rest", command="enqueue",
                        le="0.00025") == 3
    assert scrape.value("taskflux_request_duration_seconds_bucket", interface="grpc", command="dequeue",
                        le="0.25") == 0
    assert scrape.value("taskflux_request_duration_seconds_bucket", interface="grpc", command="dequeue",
                        le="0.5") == 1
    assert scrape.value("taskflux_records_enqueued_total", interface="rest") == 3
    assert scrape.value("taskflux_records_enqueued_total", interface="tcp") == 0
    assert scrape.value("taskflux_records_dequeued_total", interface="grpc") == 1
    assert scrape.value("taskflux_records_acked_total", interface="grpc") == 1
    assert scrape.value("taskflux_records_nacked_total", interface="rest") == 2


def test_two_node_metrics_in_one_process_keep_apart(tmp_path: Path) -> None:
    first, second = NodeMetrics(), NodeMetrics()
    assert first.registry is not second.registry and first.registry is not REGISTRY
    node_a, storage_a = start_node(tmp_path / "a", first)
    node_b, storage_b = start_node(tmp_path / "b", second)
    try:
        wait_until(lambda: node_a.is_leader and node_b.is_leader)
        for i in range(7):
            node_a.submit(AddRecord("", i, b"a"))
        first.observe_request("tcp", "count", "ok", 0.001)
        first.watch_clients("tcp", lambda: 4)
        second.watch_clients("tcp", lambda: 9)
        a, b = Scrape(first), Scrape(second)
        assert a.value("taskflux_queue_depth", queue="") == 7
        assert b.value("taskflux_queue_depth", queue="") == 0
        assert a.value("taskflux_raft_commit_index") > b.value("taskflux_raft_commit_index")
        assert a.value("taskflux_requests_total", interface="tcp", command="count", outcome="ok") == 1
        assert b.labels_of("taskflux_requests_total") == []
        assert (a.value("taskflux_clients_connected", interface="tcp"),
                b.value("taskflux_clients_connected", interface="tcp")) == (4, 9)
        assert not any(name.startswith("taskflux_") for name in REGISTRY._names_to_collectors)
    finally:
        for node, storage in ((node_a, storage_a), (node_b, storage_b)):
            node.stop()
            storage.close()


def test_a_scrape_after_the_node_stopped_still_works(tmp_path: Path) -> None:
    metrics = NodeMetrics(process_metrics=False)
    node, storage = start_node(tmp_path / "data", metrics)
    wait_until(lambda: node.is_leader)
    node.stop()
    storage.close()
    scrape = Scrape(metrics)
    assert scrape.value("taskflux_storage_log_segments") == 0
    assert scrape.value("taskflux_raft_applied_index") == node.applied_index


def test_a_node_without_metrics_still_counts_leader_changes(tmp_path: Path) -> None:
    node, storage = start_node(tmp_path / "data", None)
    try:
        wait_until(lambda: node.is_leader)
        assert node.leader_changes == 1
        assert node.replication_lag() == {}
        assert node.storage is storage
    finally:
        node.stop()
        storage.close()
