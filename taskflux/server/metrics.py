"""Prometheus metrics of one node: a registry of its own, request counters, and values read at scrape time.

Every ``NodeMetrics`` owns a ``CollectorRegistry`` (never the process-wide default one), so several nodes
in one process (the tests) keep apart. Three kinds of metrics live in it:

- per request, pushed by the client interfaces (``tcp``, ``rest``, ``grpc``): a counter by command and
  outcome, a latency histogram by command, and counters of records enqueued, handed out, acked and nacked;
- per Ready batch and per snapshot, pushed by the node loop: persist (write + fsync) duration, entries per
  write (the group-commit batch), snapshot size and duration;
- everything else (term, role, leader, commit / applied / last index, replication lag, queue depth, log
  segments and bytes, connected clients) is read from the node by a collector when Prometheus scrapes,
  so it costs nothing between scrapes.

The per-request path creates each labelled child once and keeps its bound ``inc`` / ``observe``.
Measured with timeit (best of 5 × 300,000 calls) on the shared 2-core development machine, under
gevent's monkey-patching (prometheus-client then locks with gevent locks): ``observe_request`` ≈ 2.5 µs
per call (counter + histogram), a record counter ≈ 0.7 µs, ``observe_persist`` ≈ 3.5 µs (once per
batch); calling ``.labels(...)`` on every request instead costs ≈ 5.3 µs. Per enqueue (request, then
its record counter, plus a share of a ~2.3-entry batch) that is ≈ 5 µs of the ≈ 220 µs of server CPU
``scripts/bench.py`` measures per enqueue on a single node (1.05 cores at ≈ 4,800 ops/s): ≈ 2.5 %.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from taskflux.raft.ready import Role

if TYPE_CHECKING:
    from taskflux.server.node import Node

INTERFACES = ("tcp", "rest", "grpc")

# Outcomes of a request, shared by every interface (an interface may add its own).
OK = "ok"
EMPTY = "empty"  # a dequeue that found no record in time
NACK = "nack"  # the client declined: an enqueue it did not confirm, a dequeued record it gave back
ERROR = "error"  # a business error (invalid name, missing queue, ...): an error code answered
POLICY_VIOLATION = "policy_violation"
NOT_LEADER = "not_leader"
TIMEOUT = "timeout"  # outcome unknown: not confirmed in time, or the node stopped after proposing the write
DISCONNECTED = "disconnected"  # the client went away or broke the protocol in the middle of the flow
STOPPED = "stopped"  # the node shut down under the request before anything of it was proposed
INTERNAL_ERROR = "internal_error"  # a bug: an unexpected exception

LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
BATCH_ENTRIES_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
SNAPSHOT_BYTES_BUCKETS = tuple(4096 * 4**k for k in range(11))  # 4 KiB .. 4 GiB
SNAPSHOT_SECONDS_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

ROLE_NAMES = {role: role.name.lower() for role in Role}

K = TypeVar("K")
V = TypeVar("V")


class _Children(dict[K, V]):
    """A cache of labelled children: a miss creates the entry with ``make(key)``, a hit is a dict look-up."""

    def __init__(self, make: Callable[[K], V]) -> None:
        super().__init__()
        self._make = make

    def __missing__(self, key: K) -> V:
        value = self[key] = self._make(key)
        return value


class InterfaceMetrics:
    """The request metrics of one client interface, its labelled children created once.

    ``enqueued``, ``dequeued``, ``acked`` and ``nacked`` are the bound ``inc`` of the record counters:
    call them with no argument for one record, or with a count.
    """

    __slots__ = ("_requests", "acked", "dequeued", "enqueued", "interface", "nacked")

    def __init__(self, metrics: NodeMetrics, interface: str) -> None:
        self.interface = interface
        self.enqueued: Callable[..., None] = metrics.records_enqueued_total.labels(interface).inc
        self.dequeued: Callable[..., None] = metrics.records_dequeued_total.labels(interface).inc
        self.acked: Callable[..., None] = metrics.records_acked_total.labels(interface).inc
        self.nacked: Callable[..., None] = metrics.records_nacked_total.labels(interface).inc
        requests, durations = metrics.requests_total, metrics.request_duration_seconds

        def make(key: tuple[str, str]) -> tuple[Callable[[], None], Callable[[float], None]]:
            command, outcome = key
            return requests.labels(interface, command, outcome).inc, durations.labels(interface, command).observe

        self._requests: _Children[tuple[str, str], tuple[Callable[[], None], Callable[[float], None]]] = \
            _Children(make)

    def observe_request(self, command: str, outcome: str, seconds: float) -> None:
        """One finished request: its command, outcome and latency in seconds."""
        inc, observe = self._requests[command, outcome]
        inc()
        observe(seconds)


class NodeMetrics:
    """The Prometheus metrics of one node, in a registry of their own.

    Wire it with ``Node(..., metrics=metrics)`` (the node registers itself for the values read at scrape
    time) and ``ClientServer(..., metrics=metrics)``; other interfaces call ``observe_request`` (or keep
    ``interface(name)``) and ``watch_clients``. Serve ``render()`` at ``GET /metrics``.
    """

    def __init__(self, process_metrics: bool = True) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests_total = Counter(
            "taskflux_requests", "Client requests finished, by interface, command and outcome.",
            ("interface", "command", "outcome"), registry=registry,
        )
        self.request_duration_seconds = Histogram(
            "taskflux_request_duration_seconds",
            "Client request latency from the decoded request to the final answer written (the binary "
            "protocol's Ack/Nack round trip included), by interface and command.",
            ("interface", "command"), buckets=LATENCY_BUCKETS, registry=registry,
        )
        self.records_enqueued_total = Counter(
            "taskflux_records_enqueued", "Records added to a queue (the enqueue committed).",
            ("interface",), registry=registry,
        )
        self.records_dequeued_total = Counter(
            "taskflux_records_dequeued", "Records handed out to a consumer (reserved until acked or nacked).",
            ("interface",), registry=registry,
        )
        self.records_acked_total = Counter(
            "taskflux_records_acked", "Handed-out records acknowledged and removed (the removal committed).",
            ("interface",), registry=registry,
        )
        self.records_nacked_total = Counter(
            "taskflux_records_nacked", "Handed-out records given back by the consumer (offered again).",
            ("interface",), registry=registry,
        )
        self.persist_duration_seconds = Histogram(
            "taskflux_raft_persist_duration_seconds",
            "Time the node loop waited for one Ready batch's write and fsync (entries and/or hard state).",
            buckets=LATENCY_BUCKETS, registry=registry,
        )
        self.persist_batch_entries = Histogram(
            "taskflux_raft_persist_batch_entries",
            "Log entries written by one write + fsync (the group-commit batch).",
            buckets=BATCH_ENTRIES_BUCKETS, registry=registry,
        )
        self.snapshot_size_bytes = Histogram(
            "taskflux_snapshot_size_bytes",
            "Size of each snapshot saved: source=local (taken by this node) or leader (installed from it).",
            ("source",), buckets=SNAPSHOT_BYTES_BUCKETS, registry=registry,
        )
        self.snapshot_duration_seconds = Histogram(
            "taskflux_snapshot_duration_seconds",
            "Time to encode and save a snapshot (local) or decode and save one from the leader (leader).",
            ("source",), buckets=SNAPSHOT_SECONDS_BUCKETS, registry=registry,
        )
        for source in ("local", "leader"):  # both series show from the start, at 0
            self.snapshot_size_bytes.labels(source)
            self.snapshot_duration_seconds.labels(source)
        self._observe_persist = self.persist_duration_seconds.observe
        self._observe_batch = self.persist_batch_entries.observe
        self._interfaces: _Children[str, InterfaceMetrics] = _Children(lambda name: InterfaceMetrics(self, name))
        for name in INTERFACES:  # every interface's record counters show from the start, at 0
            self.interface(name)
        self.collector = NodeCollector()
        registry.register(self.collector)
        if process_metrics:
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)

    # --- what the interfaces call ---------------------------------------------------------------

    def interface(self, name: str) -> InterfaceMetrics:
        """The cached request metrics of the client interface ``name`` (keep it: the fastest path)."""
        return self._interfaces[name]

    def observe_request(self, interface: str, command: str, outcome: str, seconds: float) -> None:
        """One finished request of ``interface``: its command, outcome and latency in seconds."""
        self._interfaces[interface].observe_request(command, outcome, seconds)

    def records_enqueued(self, interface: str, count: int = 1) -> None:
        self._interfaces[interface].enqueued(count)

    def records_dequeued(self, interface: str, count: int = 1) -> None:
        self._interfaces[interface].dequeued(count)

    def records_acked(self, interface: str, count: int = 1) -> None:
        self._interfaces[interface].acked(count)

    def records_nacked(self, interface: str, count: int = 1) -> None:
        self._interfaces[interface].nacked(count)

    def watch_clients(self, interface: str, count: Callable[[], int]) -> None:
        """Report ``count()`` as the connected clients of ``interface`` at every scrape (replaces an
        earlier callable of the same interface)."""
        self.collector.clients[interface] = count

    def watch_node(self, node: Node) -> None:
        """Read ``node``'s raft, storage and queue values at every scrape (``Node`` calls this itself)."""
        self.collector.node = node

    # --- what the node loop calls -----------------------------------------------------------------

    def observe_persist(self, seconds: float, entries: int) -> None:
        """One Ready batch made durable: the loop waited ``seconds``; ``entries`` log entries written."""
        self._observe_persist(seconds)
        if entries:
            self._observe_batch(entries)

    def observe_snapshot(self, source: str, size_bytes: int, seconds: float) -> None:
        """A snapshot saved: ``local`` (taken here) or ``leader`` (installed from the leader)."""
        self.snapshot_size_bytes.labels(source).observe(size_bytes)
        self.snapshot_duration_seconds.labels(source).observe(seconds)

    # --- exposition -------------------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of every metric, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4


class NodeCollector:
    """The values read from a node (and the interfaces' connection counts) when Prometheus scrapes.

    Scrapes run in a greenlet on the hub like the node loop, so nothing changes under a read; the
    storage's segment tuple is replaced, never mutated, so reading it while the disk thread appends
    is safe too.
    """

    def __init__(self) -> None:
        self.node: Node | None = None
        self.clients: dict[str, Callable[[], int]] = {}

    def describe(self) -> Iterable[Metric]:
        """The metric names, without values (the registry checks them for clashes)."""
        return list(self._families().values())

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        clients = families["taskflux_clients_connected"]
        for interface, count in sorted(self.clients.items()):
            clients.add_metric([interface], count())
        node = self.node
        if node is not None:
            self._collect_node(node, families)
        return iter(families.values())

    @staticmethod
    def _families() -> dict[str, Any]:
        def gauge(name: str, documentation: str, labels: tuple[str, ...] = ()) -> tuple[str, Metric]:
            return name, GaugeMetricFamily(name, documentation, labels=labels)

        return dict([
            gauge("taskflux_clients_connected", "Client connections open now, by interface.", ("interface",)),
            gauge("taskflux_queue_depth", "Records available to dequeue, by queue (what Count answers).",
                  ("queue",)),
            gauge("taskflux_queue_reserved", "Records handed out and not yet acked or nacked, by queue.",
                  ("queue",)),
            gauge("taskflux_raft_node_id", "This node's id (its index in cluster_peers)."),
            gauge("taskflux_raft_term", "The current raft term."),
            gauge("taskflux_raft_role", "1 for this node's current raft role, 0 for the others.", ("role",)),
            gauge("taskflux_raft_leader_id", "The leader this node knows of (-1: none)."),
            ("taskflux_raft_leader_changes", CounterMetricFamily(
                "taskflux_raft_leader_changes",
                "Times this node learned of a new leader (itself included) since it started.",
            )),
            gauge("taskflux_raft_commit_index", "Index of the last entry known committed."),
            gauge("taskflux_raft_applied_index", "Index of the last entry applied to the queues."),
            gauge("taskflux_raft_last_index", "Index of the last entry in the log (committed or not)."),
            gauge("taskflux_raft_snapshot_index", "Index of the last entry the snapshot covers (0: none)."),
            gauge("taskflux_raft_replication_lag_entries",
                  "Leader only: entries a follower lacks (last index minus its match index), by peer.",
                  ("peer",)),
            gauge("taskflux_storage_log_segments", "Segment files of the log (sealed and active)."),
            gauge("taskflux_storage_log_bytes", "Bytes in the log's segment files."),
            gauge("taskflux_storage_snapshot_bytes", "Bytes of the current snapshot's data (0: none)."),
        ])

    @staticmethod
    def _collect_node(node: Node, families: dict[str, Any]) -> None:
        soft_state = node.soft_state
        for queue in node.manager.queues():
            families["taskflux_queue_depth"].add_metric([queue.name], queue.count)
            families["taskflux_queue_reserved"].add_metric([queue.name], queue.reserved_count)
        families["taskflux_raft_node_id"].add_metric([], node.id)
        families["taskflux_raft_term"].add_metric([], soft_state.term)
        for role, name in ROLE_NAMES.items():
            families["taskflux_raft_role"].add_metric([name], 1 if soft_state.role is role else 0)
        families["taskflux_raft_leader_id"].add_metric([], soft_state.leader_id)
        families["taskflux_raft_leader_changes"].add_metric([], node.leader_changes)
        families["taskflux_raft_commit_index"].add_metric([], node.commit_index)
        families["taskflux_raft_applied_index"].add_metric([], node.applied_index)
        families["taskflux_raft_last_index"].add_metric([], node.last_index)
        for peer, lag in sorted(node.replication_lag().items()):
            families["taskflux_raft_replication_lag_entries"].add_metric([str(peer)], lag)
        storage = node.storage
        families["taskflux_raft_snapshot_index"].add_metric([], storage.snapshot_meta().index)
        segments, log_bytes = storage.log_usage()
        families["taskflux_storage_log_segments"].add_metric([], segments)
        families["taskflux_storage_log_bytes"].add_metric([], log_bytes)
        families["taskflux_storage_snapshot_bytes"].add_metric([], storage.snapshot_size())
