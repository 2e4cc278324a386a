"""gRPC request metrics (the interceptor): unary calls, every stream step, error statuses; calls unharmed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from taskflux.server.metrics import NodeMetrics
from tests.grpc.conftest import CALL_TIMEOUT, Harness, data, dequeue, dequeue_ack, enqueue_ack, pb

pytestmark = pytest.mark.timeout(60)


def requests(metrics: NodeMetrics, command: str, outcome: str) -> float:
    text = metrics.render()[0].decode()
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "taskflux_requests_total" and sample.labels == {
                   "interface": "grpc", "command": command, "outcome": outcome})


@pytest.fixture
def observed(tmp_path: Path) -> Iterator[tuple[Harness, NodeMetrics]]:
    metrics = NodeMetrics(process_metrics=False)
    harness = Harness(tmp_path, metrics=metrics).start()
    yield harness, metrics
    harness.stop()


def test_unary_calls_are_counted_by_outcome(observed: tuple[Harness, NodeMetrics]) -> None:
    harness, metrics = observed
    assert harness.count("") == 0
    harness.stub.GetCount(pb.GetCountRequest(queue="missing"), timeout=CALL_TIMEOUT)
    harness.stub.GetCount(pb.GetCountRequest(queue="bad name"), timeout=CALL_TIMEOUT)
    assert requests(metrics, "GetCount", "ok") == 1
    assert requests(metrics, "GetCount", "error") == 2


def test_every_stream_step_is_counted(observed: tuple[Harness, NodeMetrics]) -> None:
    harness, metrics = observed
    answers = list(harness.stub.Enqueue(iter([data("", 1, b"x"), enqueue_ack(True), data("", 2, b"y"),
                                              enqueue_ack(True)]), timeout=CALL_TIMEOUT))
    assert [a.WhichOneof("result") for a in answers] == ["data"] * 4
    assert requests(metrics, "Enqueue.data", "ok") == 2
    assert requests(metrics, "Enqueue.ack", "ok") == 2
    answers = list(harness.stub.Dequeue(iter([dequeue(""), dequeue_ack(True)]), timeout=CALL_TIMEOUT))
    assert answers[0].success.record.payload == b"x"
    assert requests(metrics, "Dequeue.request", "ok") == 1
    assert requests(metrics, "Dequeue.ack", "ok") == 1


def test_a_call_ended_with_an_error_status_is_counted_once(observed: tuple[Harness, NodeMetrics]) -> None:
    harness, metrics = observed
    with pytest.raises(grpc.RpcError) as ended:
        list(harness.stub.Enqueue(iter([enqueue_ack(True)]), timeout=CALL_TIMEOUT))  # ack before any data
    assert ended.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert requests(metrics, "Enqueue.ack", "error") == 1
    assert harness.count("") == 0  # and the service still answers


def test_open_streams_count_as_connected_clients(observed: tuple[Harness, NodeMetrics]) -> None:
    from tests.grpc.conftest import wait_until

    harness, metrics = observed

    def connected() -> float:
        text = metrics.render()[0].decode()
        return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
                   if sample.name == "taskflux_clients_connected" and sample.labels == {"interface": "grpc"})

    waiting = harness.stub.Dequeue(iter([dequeue("", timeout_ms=5000)]), timeout=CALL_TIMEOUT)
    wait_until(lambda: connected() == 1, what="the waiting stream to count")
    waiting.cancel()
    wait_until(lambda: connected() == 0, what="the cancelled stream to stop counting")


def records(metrics: NodeMetrics, kind: str) -> float:
    text = metrics.render()[0].decode()
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == f"taskflux_records_{kind}_total" and sample.labels == {"interface": "grpc"})


def test_grpc_deliveries_count_in_the_record_metrics(observed: tuple[Harness, NodeMetrics]) -> None:
    harness, metrics = observed
    harness.create("tiny", max_queue_size=2)
    answers = list(harness.stub.Enqueue(iter([
        data("tiny", 1, b"x"), enqueue_ack(True), data("tiny", 2, b"y"), enqueue_ack(True),
        data("tiny", 3, b"dropped"), enqueue_ack(False), data("tiny", 4, b"full"), enqueue_ack(True),
    ]), timeout=CALL_TIMEOUT))
    assert answers[-1].data.HasField("policy_violation")
    assert records(metrics, "enqueued") == 2  # not the one dropped by the client, not the refused one
    stream = harness.dequeue_stream()
    assert stream.exchange(dequeue("tiny")).success.record.payload == b"x"
    assert stream.exchange(dequeue_ack(True)).WhichOneof("result") == "success"
    assert stream.exchange(dequeue("tiny")).success.record.payload == b"y"
    assert stream.exchange(dequeue_ack(False)).WhichOneof("result") == "success"
    assert stream.exchange(dequeue("tiny")).success.record.payload == b"y"
    assert stream.exchange(dequeue_ack(True)).WhichOneof("result") == "success"
    assert not stream.exchange(dequeue("tiny")).success.HasField("record")
    stream.done_writing()
    assert stream.status()[0] is grpc.StatusCode.OK
    assert (records(metrics, "dequeued"), records(metrics, "acked"), records(metrics, "nacked")) == (3, 2, 1)
