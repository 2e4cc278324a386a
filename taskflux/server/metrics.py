"""Prometheus metrics of one node: a registry of its own, request counters, and values read at scrape time.

Every ``NodeMetrics`` owns a ``CollectorRegistry`` (never the process-wide default one), so several nodes
in one process (the tests) keep apart. Three kinds of metrics live in it:

- per request, counted by the client interfaces (``tcp``, ``rest``, ``grpc``): a counter by command and
  outcome, a latency histogram by command, and counters of records enqueued, handed out, acked and nacked;
- per Ready batch and per snapshot, counted by the node loop: persist (write + fsync) duration, entries per
  write (the group-commit batch), snapshot size and duration;
- everything else (term, role, leader, commit / applied / last index, replication lag, queue depth, log
  segments and bytes, connected clients) is read from the node by a collector when Prometheus scrapes,
  so it costs nothing between scrapes.

The counted metrics are plain Python numbers too, turned into Prometheus families only at scrape time
(``CountedCollector``): a record counter is an int, a histogram series an ``Observations`` (an int per
bucket, found by a bisect into the fixed bounds, and a float sum). A request adds to one series per
(interface, command, outcome): its count is that ``taskflux_requests_total``, and the latency histogram
of (interface, command) is the sum of its outcomes' series. There is no lock: every caller (the client
sessions, REST, the gRPC handlers, the node loop) runs in a greenlet on the hub's thread, and an update
never yields in its middle. The exposition is the one prometheus-client's own Counter and Histogram gave
(names, help, labels, bucket bounds, series order; ``*_created`` unless ``disable_created_metrics()``).

Measured with ``scripts/bench_metrics.py`` (best of 5 × 300,000 calls under gevent's monkey-patching) on the
shared 2-core development machine, other jobs running: ``InterfaceMetrics.observe_request`` ≈ 0.35–0.5 µs
per call, a record counter ≈ 0.1 µs, ``observe_persist`` ≈ 0.5–0.7 µs; prometheus-client's Counter and
Histogram (which lock, with gevent locks under monkey-patching) took ≈ 3.1–4.9, 1.1–1.4 and 4.0–7.0 µs in
the same runs. py-spy on a single node under ``scripts/bench.py -P 8 -C 8``: 0.5 % of the node's samples in
metrics code, 3 % before.
"""

from __future__ import annotations

import functools
import os
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import prometheus_client.metrics
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.utils import floatToGoString

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

SNAPSHOT_SOURCES = ("local", "leader")
ROLE_NAMES = {role: role.name.lower() for role in Role}


class Observations:
    """One histogram series as plain numbers: how many values fell in each bucket, and their sum.

    ``bounds`` are the buckets' finite upper bounds, ascending; ``counts`` has one more slot, +Inf. A value
    goes to the first bucket whose bound is >= it (``bisect_left``), as in prometheus-client's Histogram
    (only a NaN, which no caller passes, differs: it lands in the first bucket here, in none there).
    ``counts`` is per bucket, not cumulative: ``buckets()`` accumulates at scrape time.
    """

    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        """Count one value."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def add(self, other: Observations) -> None:
        """Count ``other``'s values too (same bounds), keeping the earlier creation time."""
        self.counts = [mine + theirs for mine, theirs in zip(self.counts, other.counts, strict=True)]
        self.sum += other.sum
        self.created = min(self.created, other.created)

    def buckets(self) -> list[tuple[str, float]]:
        """The cumulative buckets as ``HistogramMetricFamily`` takes them: (le, count), +Inf last."""
        cumulative = 0
        buckets = []
        for le, count in zip(le_labels(self.bounds), self.counts, strict=True):
            cumulative += count
            buckets.append((le, float(cumulative)))
        return buckets


@functools.cache
def le_labels(bounds: tuple[float, ...]) -> tuple[str, ...]:
    """The ``le`` label of each bucket of ``bounds``, +Inf last, spelt as prometheus-client spells them."""
    return (*map(floatToGoString, bounds), "+Inf")


class InterfaceMetrics:
    """The request metrics of one client interface.

    ``enqueued``, ``dequeued``, ``acked`` and ``nacked`` count records: call them with no argument for one
    record, or with a count. ``observe_request`` creates a (command, outcome) series on its first request.
    """

    __slots__ = ("_new_series", "_requests", "acked_count", "created", "dequeued_count", "enqueued_count",
                 "interface", "nacked_count")

    def __init__(self, interface: str, new_series: Callable[[str, str, str, Observations], None]) -> None:
        self.interface = interface
        self._new_series = new_series
        self._requests: dict[tuple[str, str], Observations] = {}
        self.enqueued_count = self.dequeued_count = self.acked_count = self.nacked_count = 0
        self.created = time.time()

    def observe_request(self, command: str, outcome: str, seconds: float) -> None:
        """One finished request: its command, outcome and latency in seconds."""
        try:
            series = self._requests[command, outcome]
        except KeyError:
            series = self._create(command, outcome)
        series.observe(seconds)

    def _create(self, command: str, outcome: str) -> Observations:
        series = self._requests[command, outcome] = Observations(LATENCY_BUCKETS)
        self._new_series(self.interface, command, outcome, series)
        return series

    def enqueued(self, count: int = 1) -> None:
        self.enqueued_count += count

    def dequeued(self, count: int = 1) -> None:
        self.dequeued_count += count

    def acked(self, count: int = 1) -> None:
        self.acked_count += count

    def nacked(self, count: int = 1) -> None:
        self.nacked_count += count


class NodeMetrics:
    """The Prometheus metrics of one node, in a registry of their own.

    Wire it with ``Node(..., metrics=metrics)`` (the node registers itself for the values read at scrape
    time) and ``ClientServer(..., metrics=metrics)``; other interfaces call ``observe_request`` (or keep
    ``interface(name)``) and ``watch_clients``. Serve ``render()`` at ``GET /metrics``.
    """

    def __init__(self, process_metrics: bool = True) -> None:
        self.registry = CollectorRegistry()
        self.counted = CountedCollector()
        self._persist_seconds = self.counted.persist_seconds
        self._persist_entries = self.counted.persist_entries
        for name in INTERFACES:  # every interface's record counters show from the start, at 0
            self.interface(name)
        self.collector = NodeCollector()
        self.registry.register(self.counted)
        self.registry.register(self.collector)
        if process_metrics:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)

    # --- what the interfaces call ---------------------------------------------------------------

    def interface(self, name: str) -> InterfaceMetrics:
        """The request metrics of the client interface ``name`` (keep it: the fastest path)."""
        return self.counted.interface(name)

    def observe_request(self, interface: str, command: str, outcome: str, seconds: float) -> None:
        """One finished request of ``interface``: its command, outcome and latency in seconds."""
        self.interface(interface).observe_request(command, outcome, seconds)

    def records_enqueued(self, interface: str, count: int = 1) -> None:
        self.interface(interface).enqueued(count)

    def records_dequeued(self, interface: str, count: int = 1) -> None:
        self.interface(interface).dequeued(count)

    def records_acked(self, interface: str, count: int = 1) -> None:
        self.interface(interface).acked(count)

    def records_nacked(self, interface: str, count: int = 1) -> None:
        self.interface(interface).nacked(count)

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
        self._persist_seconds.observe(seconds)
        if entries:
            self._persist_entries.observe(entries)

    def observe_snapshot(self, source: str, size_bytes: int, seconds: float) -> None:
        """A snapshot saved: ``local`` (taken here) or ``leader`` (installed from the leader)."""
        self.counted.snapshot_bytes[source].observe(size_bytes)
        self.counted.snapshot_seconds[source].observe(seconds)

    # --- exposition -------------------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of every metric, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4


REQUESTS_HELP = "Client requests finished, by interface, command and outcome."
REQUEST_DURATION_HELP = (
    "Client request latency from the decoded request to the final answer written (the binary protocol's "
    "Ack/Nack round trip included), by interface and command."
)
RECORD_COUNTERS = (  # (family, its help, the InterfaceMetrics attribute)
    ("taskflux_records_enqueued", "Records added to a queue (the enqueue committed).", "enqueued_count"),
    ("taskflux_records_dequeued", "Records handed out to a consumer (reserved until acked or nacked).",
     "dequeued_count"),
    ("taskflux_records_acked", "Handed-out records acknowledged and removed (the removal committed).",
     "acked_count"),
    ("taskflux_records_nacked", "Handed-out records given back by the consumer (offered again).", "nacked_count"),
)
PERSIST_SECONDS_HELP = \
    "Time the node loop waited for one Ready batch's write and fsync (entries and/or hard state)."
PERSIST_ENTRIES_HELP = "Log entries written by one write + fsync (the group-commit batch)."
SNAPSHOT_BYTES_HELP = \
    "Size of each snapshot saved: source=local (taken by this node) or leader (installed from it)."
SNAPSHOT_SECONDS_HELP = \
    "Time to encode and save a snapshot (local) or decode and save one from the leader (leader)."


def created_metrics() -> bool:
    """Whether counters and histograms expose ``*_created`` (prometheus-client's switch, on by default)."""
    return bool(getattr(prometheus_client.metrics, "_use_created", True))


class CountedCollector:
    """The counted metrics' numbers, and the Prometheus families they make when Prometheus scrapes.

    Families and series come out in the order prometheus-client's own metrics gave them: series in the
    order they were first counted.
    """

    def __init__(self) -> None:
        self.interfaces: dict[str, InterfaceMetrics] = {}
        self.requests: list[tuple[str, str, str, Observations]] = []  # (interface, command, outcome, series)
        self.persist_seconds = Observations(LATENCY_BUCKETS)
        self.persist_entries = Observations(BATCH_ENTRIES_BUCKETS)
        self.snapshot_bytes = {source: Observations(SNAPSHOT_BYTES_BUCKETS) for source in SNAPSHOT_SOURCES}
        self.snapshot_seconds = {source: Observations(SNAPSHOT_SECONDS_BUCKETS) for source in SNAPSHOT_SOURCES}

    def interface(self, name: str) -> InterfaceMetrics:
        """The metrics of interface ``name``, created on first use."""
        metrics = self.interfaces.get(name)
        if metrics is None:
            metrics = self.interfaces[name] = InterfaceMetrics(name, self._new_request_series)
        return metrics

    def _new_request_series(self, interface: str, command: str, outcome: str, series: Observations) -> None:
        self.requests.append((interface, command, outcome, series))

    def describe(self) -> Iterable[Metric]:
        """The families (the registry reads their names, to check them for clashes)."""
        return self._families(created=False)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families(created=created_metrics()))

    def _families(self, created: bool) -> list[Metric]:
        """Every family with its current series; ``*_created`` samples if ``created``."""
        return [
            self._requests_family(created),
            self._duration_family(created),
            *(self._record_family(name, documentation, attribute, created)
              for name, documentation, attribute in RECORD_COUNTERS),
            histogram_family("taskflux_raft_persist_duration_seconds", PERSIST_SECONDS_HELP, (),
                             [((), self.persist_seconds)], created),
            histogram_family("taskflux_raft_persist_batch_entries", PERSIST_ENTRIES_HELP, (),
                             [((), self.persist_entries)], created),
            histogram_family("taskflux_snapshot_size_bytes", SNAPSHOT_BYTES_HELP, ("source",),
                             [((source,), series) for source, series in self.snapshot_bytes.items()], created),
            histogram_family("taskflux_snapshot_duration_seconds", SNAPSHOT_SECONDS_HELP, ("source",),
                             [((source,), series) for source, series in self.snapshot_seconds.items()], created),
        ]

    def _requests_family(self, created: bool) -> Metric:
        family = CounterMetricFamily("taskflux_requests", REQUESTS_HELP, labels=("interface", "command", "outcome"))
        for interface, command, outcome, series in self.requests:
            family.add_metric((interface, command, outcome), series.count, series.created if created else None)
        return family

    def _duration_family(self, created: bool) -> Metric:
        """The latency of each (interface, command): the sum of its outcomes' series."""
        by_command: dict[tuple[str, str], Observations] = {}
        for interface, command, _, series in self.requests:
            merged = by_command.get((interface, command))
            if merged is None:
                merged = by_command[interface, command] = Observations(LATENCY_BUCKETS)
            merged.add(series)
        return histogram_family("taskflux_request_duration_seconds", REQUEST_DURATION_HELP,
                                ("interface", "command"), by_command.items(), created)

    def _record_family(self, name: str, documentation: str, attribute: str, created: bool) -> Metric:
        family = CounterMetricFamily(name, documentation, labels=("interface",))
        for interface, metrics in self.interfaces.items():
            family.add_metric((interface,), getattr(metrics, attribute), metrics.created if created else None)
        return family


def histogram_family(name: str, documentation: str, label_names: tuple[str, ...],
                     series: Iterable[tuple[tuple[str, ...], Observations]], created: bool) -> Metric:
    """A histogram family of ``series`` (their label values and observations), with ``*_created`` if asked."""
    family = HistogramMetricFamily(name, documentation, labels=label_names)
    for label_values, observations in series:
        family.add_metric(label_values, observations.buckets(), observations.sum)
        if created:
            family.add_sample(name + "_created", dict(zip(label_names, label_values, strict=True)),
                              observations.created)
    return family


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
            gauge("taskflux_queue_delayed", "Records not due yet (delayed enqueues, retries waiting), by queue.",
                  ("queue",)),
            gauge("taskflux_raft_node_id", "This node's id (never reused by the cluster)."),
            gauge("taskflux_cluster_members", "Members of the membership in force on this node, by kind.", ("kind",)),
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
            gauge("taskflux_storage_free_bytes",
                  "Bytes free for this node on the file system of its data directory (what statvfs gives non-root)."),
            gauge("taskflux_storage_capacity_bytes", "Size of the file system of the data directory, in bytes."),
            ("taskflux_records_dead_lettered", CounterMetricFamily(
                "taskflux_records_dead_lettered",
                "Records moved to a dead-letter queue since this node started, by the queue they failed in.",
                labels=("queue",),
            )),
        ])

    @staticmethod
    def _collect_node(node: Node, families: dict[str, Any]) -> None:
        soft_state = node.soft_state
        for queue in node.manager.queues():
            families["taskflux_queue_depth"].add_metric([queue.name], queue.count)
            families["taskflux_queue_reserved"].add_metric([queue.name], queue.reserved_count)
            families["taskflux_queue_delayed"].add_metric([queue.name], queue.delayed_count)
        families["taskflux_raft_node_id"].add_metric([], node.id)
        members = node.members
        families["taskflux_cluster_members"].add_metric(["voter"], len(members.voters))
        families["taskflux_cluster_members"].add_metric(["learner"], len(members.learners))
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
        try:
            disk = os.statvfs(storage.data_dir)
        except OSError:
            pass  # the directory went away: the storage errors say so; no space figures then
        else:
            families["taskflux_storage_free_bytes"].add_metric([], disk.f_bavail * disk.f_frsize)
            families["taskflux_storage_capacity_bytes"].add_metric([], disk.f_blocks * disk.f_frsize)
        # Every queue with a dead-letter queue has its series from the start (at 0), so that increase() sees the
        # first dead letter too.
        dead_lettered = dict.fromkeys((queue.name for queue in node.manager.queues()
                                       if queue.policies.delivery.dead_letter_queue is not None), 0)
        dead_lettered.update(node.manager.dead_lettered)
        for source, count in sorted(dead_lettered.items()):
            families["taskflux_records_dead_lettered"].add_metric([source], count)
