"""The counted metrics (plain numbers read at scrape time) expose exactly what prometheus-client's own Counter
and Histogram expose when fed the same values: the same families, help texts, types, series, buckets,
counts and sums."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

import prometheus_client.metrics
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from taskflux.server import metrics as m
from taskflux.server.metrics import NodeMetrics, Observations

pytestmark = pytest.mark.timeout(60)

BUCKET_SPECS = [m.LATENCY_BUCKETS, m.BATCH_ENTRIES_BUCKETS, m.SNAPSHOT_BYTES_BUCKETS, m.SNAPSHOT_SECONDS_BUCKETS]


class Reference:
    """The metrics as prometheus-client objects, defined as the node defined them before they were counted in
    plain numbers: the contract of the exposition."""

    def __init__(self) -> None:
        registry = self.registry = CollectorRegistry()
        self.requests = Counter(
            "taskflux_requests", "Client requests finished, by interface, command and outcome.",
            ("interface", "command", "outcome"), registry=registry,
        )
        self.durations = Histogram(
            "taskflux_request_duration_seconds",
            "Client request latency from the decoded request to the final answer written (the binary "
            "protocol's Ack/Nack round trip included), by interface and command.",
            ("interface", "command"), buckets=m.LATENCY_BUCKETS, registry=registry,
        )
        self.records = {
            kind: Counter(f"taskflux_records_{kind}", documentation, ("interface",), registry=registry)
            for kind, documentation in (
                ("enqueued", "Records added to a queue (the enqueue committed)."),
                ("dequeued", "Records handed out to a consumer (reserved until acked or nacked)."),
                ("acked", "Handed-out records acknowledged and removed (the removal committed)."),
                ("nacked", "Handed-out records given back by the consumer (offered again)."),
            )
        }
        self.persist_seconds = Histogram(
            "taskflux_raft_persist_duration_seconds",
            "Time the node loop waited for one Ready batch's write and fsync (entries and/or hard state).",
            buckets=m.LATENCY_BUCKETS, registry=registry,
        )
        self.persist_entries = Histogram(
            "taskflux_raft_persist_batch_entries", "Log entries written by one write + fsync (the group-commit batch).",
            buckets=m.BATCH_ENTRIES_BUCKETS, registry=registry,
        )
        self.snapshot_bytes = Histogram(
            "taskflux_snapshot_size_bytes",
            "Size of each snapshot saved: source=local (taken by this node) or leader (installed from it).",
            ("source",), buckets=m.SNAPSHOT_BYTES_BUCKETS, registry=registry,
        )
        self.snapshot_seconds = Histogram(
            "taskflux_snapshot_duration_seconds",
            "Time to encode and save a snapshot (local) or decode and save one from the leader (leader).",
            ("source",), buckets=m.SNAPSHOT_SECONDS_BUCKETS, registry=registry,
        )
        for source in ("local", "leader"):
            self.snapshot_bytes.labels(source)
            self.snapshot_seconds.labels(source)
        for interface in m.INTERFACES:
            for counter in self.records.values():
                counter.labels(interface)

    def observe_request(self, interface: str, command: str, outcome: str, seconds: float) -> None:
        self.requests.labels(interface, command, outcome).inc()
        self.durations.labels(interface, command).observe(seconds)

    def count_records(self, kind: str, interface: str, count: int) -> None:
        self.records[kind].labels(interface).inc(count)

    def observe_persist(self, seconds: float, entries: int) -> None:
        self.persist_seconds.observe(seconds)
        if entries:
            self.persist_entries.observe(entries)

    def observe_snapshot(self, source: str, size_bytes: int, seconds: float) -> None:
        self.snapshot_bytes.labels(source).observe(size_bytes)
        self.snapshot_seconds.labels(source).observe(seconds)


def edge_values(bounds: tuple[float, ...]) -> list[float]:
    """Every bound, the floats just below and above it, zero and values past the last bound."""
    values: list[float] = [0.0, math.inf, bounds[-1] * 10]
    for bound in bounds:
        values += [bound, math.nextafter(bound, -math.inf), math.nextafter(bound, math.inf)]
    return values


@pytest.fixture(params=[True, False], ids=["created", "no-created"])
def created(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[bool]:
    """prometheus-client's ``*_created`` switch, set for the test and restored after it."""
    monkeypatch.setattr(prometheus_client.metrics, "_use_created", request.param)
    yield request.param


@pytest.mark.parametrize("bounds", BUCKET_SPECS, ids=["latency", "batch", "snapshot_bytes", "snapshot_seconds"])
def test_observations_bucket_count_and_sum_like_a_prometheus_histogram(bounds: tuple[float, ...]) -> None:
    rng = random.Random(7)
    values = edge_values(bounds) + [rng.uniform(0, bounds[-1] * 1.5) for _ in range(2000)]
    rng.shuffle(values)
    reference = Histogram("h", "h", buckets=bounds, registry=CollectorRegistry())
    observations = Observations(bounds)
    for value in values:
        reference.observe(value)
        observations.observe(value)

    samples = {(s.name, s.labels.get("le")): s.value for metric in reference.collect() for s in metric.samples}
    expected_buckets = [(le, value) for (name, le), value in samples.items() if name == "h_bucket"]
    assert observations.buckets() == expected_buckets
    assert observations.count == samples["h_count", None] == len(values)
    assert observations.sum == samples["h_sum", None]  # the same additions in the same order: exact


def scraped(registry: CollectorRegistry) -> list[tuple[str, str, str, list[tuple[str, dict[str, str], float]]]]:
    """The parsed exposition: (name, help, type, samples) per family, in the order exposed."""
    text = generate_latest(registry).decode()
    return [
        (family.name, family.documentation, family.type,
         [(sample.name, sample.labels, sample.value) for sample in family.samples])
        for family in text_string_to_metric_families(text)
    ]


def feed(node: NodeMetrics, reference: Reference, rng: random.Random, requests: int) -> None:
    """The same random requests, records, batches and snapshots to both."""
    commands = {"tcp": ["enqueue", "dequeue", "count"], "rest": ["add_record", "ack"], "grpc": ["Enqueue.data"]}
    outcomes = [m.OK, m.OK, m.OK, m.EMPTY, m.ERROR, m.TIMEOUT]
    for _ in range(requests):
        interface = rng.choice(list(commands))
        command, outcome = rng.choice(commands[interface]), rng.choice(outcomes)
        seconds = rng.choice([rng.expovariate(2000), rng.choice(m.LATENCY_BUCKETS), 20.0])
        node.interface(interface).observe_request(command, outcome, seconds)
        reference.observe_request(interface, command, outcome, seconds)
        kind, count = rng.choice(["enqueued", "dequeued", "acked", "nacked"]), rng.randint(1, 3)
        getattr(node.interface(interface), kind)(count)
        reference.count_records(kind, interface, count)
        if rng.random() < 0.3:
            seconds, entries = rng.expovariate(4000), rng.choice([0, 1, 2, 3, 4, 40, 5000])
            node.observe_persist(seconds, entries)
            reference.observe_persist(seconds, entries)
        if rng.random() < 0.01:
            source, size, seconds = rng.choice(["local", "leader"]), rng.randint(0, 5 * 4**16), rng.uniform(0, 70)
            node.observe_snapshot(source, size, seconds)
            reference.observe_snapshot(source, size, seconds)


def test_the_exposition_is_the_one_prometheus_client_metrics_give(created: bool) -> None:
    node, reference = NodeMetrics(process_metrics=False), Reference()
    # the node's own collector (raft, queues, clients) is not part of the comparison
    node.registry.unregister(node.collector)
    rng = random.Random(10)
    feed(node, reference, rng, 3000)
    mine, expected = scraped(node.registry), scraped(reference.registry)

    assert [family[:3] for family in mine] == [family[:3] for family in expected]  # names, help, types, order
    for (name, _, _, samples), (_, _, _, expected_samples) in zip(mine, expected, strict=True):
        assert [sample[:2] for sample in samples] == [sample[:2] for sample in expected_samples], name
        for (sample_name, labels, value), (_, _, expected_value) in zip(samples, expected_samples, strict=True):
            if sample_name.endswith("_created"):
                continue  # a wall-clock time: the two were created apart
            if name == "taskflux_request_duration_seconds" and sample_name.endswith("_sum"):
                # the sum of the outcomes' sums: the same values added in another order
                assert value == pytest.approx(expected_value, rel=1e-12), labels
            else:
                assert value == expected_value, (sample_name, labels)
    assert any(sample[0].endswith("_created") for family in mine for sample in family[3]) == created

