"""Scrape a NodeMetrics the way Prometheus would, and run nodes in-process for the metrics tests."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import gevent
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from taskflux.raft.config import RaftConfig
from taskflux.raft.messages import Message
from taskflux.server.metrics import NodeMetrics
from taskflux.server.node import Node, NodeSettings
from taskflux.storage.disk import DiskStorage

# Every TaskFlux family (the parser's names: counters without _total) and its type.
EXPECTED_FAMILIES = {
    "taskflux_requests": "counter",
    "taskflux_request_duration_seconds": "histogram",
    "taskflux_records_enqueued": "counter",
    "taskflux_records_dequeued": "counter",
    "taskflux_records_acked": "counter",
    "taskflux_records_nacked": "counter",
    "taskflux_raft_persist_duration_seconds": "histogram",
    "taskflux_raft_persist_batch_entries": "histogram",
    "taskflux_snapshot_size_bytes": "histogram",
    "taskflux_snapshot_duration_seconds": "histogram",
    "taskflux_clients_connected": "gauge",
    "taskflux_queue_depth": "gauge",
    "taskflux_queue_reserved": "gauge",
    "taskflux_queue_delayed": "gauge",
    "taskflux_storage_free_bytes": "gauge",
    "taskflux_storage_capacity_bytes": "gauge",
    "taskflux_records_dead_lettered": "counter",
    "taskflux_raft_node_id": "gauge",
    "taskflux_cluster_members": "gauge",
    "taskflux_raft_term": "gauge",
    "taskflux_raft_role": "gauge",
    "taskflux_raft_leader_id": "gauge",
    "taskflux_raft_leader_changes": "counter",
    "taskflux_raft_commit_index": "gauge",
    "taskflux_raft_applied_index": "gauge",
    "taskflux_raft_last_index": "gauge",
    "taskflux_raft_snapshot_index": "gauge",
    "taskflux_raft_replication_lag_entries": "gauge",
    "taskflux_storage_log_segments": "gauge",
    "taskflux_storage_log_bytes": "gauge",
    "taskflux_storage_snapshot_bytes": "gauge",
}


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        gevent.sleep(0.01)


class Scrape:
    """One parsed exposition of a registry."""

    def __init__(self, metrics: NodeMetrics) -> None:
        text, self.content_type = metrics.render()
        self.families: dict[str, Metric] = {
            family.name: family for family in text_string_to_metric_families(text.decode())
        }

    def value(self, sample_name: str, **labels: str) -> float:
        """The value of the one sample named ``sample_name`` whose labels include ``labels``."""
        found = [
            sample.value
            for family in self.families.values()
            for sample in family.samples
            if sample.name == sample_name and labels.items() <= sample.labels.items()
        ]
        assert len(found) == 1, f"{len(found)} samples {sample_name}{labels}"
        return found[0]

    def value_or_zero(self, sample_name: str, **labels: str) -> float:
        try:
            return self.value(sample_name, **labels)
        except AssertionError:
            return 0.0

    def labels_of(self, sample_name: str) -> list[dict[str, str]]:
        return [
            sample.labels
            for family in self.families.values()
            for sample in family.samples
            if sample.name == sample_name
        ]


def start_node(
    path: Path,
    metrics: NodeMetrics | None,
    node_id: int = 0,
    cluster_size: int = 1,
    send: Callable[[Message], None] = lambda message: None,
    threshold: int = 5,
    **storage_options: int,
) -> tuple[Node, DiskStorage]:
    """A started node over a DiskStorage in ``path``, fast raft ticks."""
    storage = DiskStorage(path, **storage_options)
    config = RaftConfig(node_id=node_id, cluster_size=cluster_size, election_ticks=4, heartbeat_ticks=1)
    settings = NodeSettings(tick_interval=0.01, snapshot_segments_threshold=threshold)
    node = Node(config, storage, send, settings, random.Random(node_id + 1), metrics=metrics)
    node.start()
    return node, storage
