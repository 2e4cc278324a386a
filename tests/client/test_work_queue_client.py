"""The Python client's work-queue features against a real node in this process (protocol 1.1): ids and
idempotency keys, retries with the same key, delays, batches, peek, failed deliveries and dead letters; and an
original (1.0) connection that never sees the extension."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator

import pytest

from taskflux.client import (
    InvalidQueuePolicy,
    MaxQueueSizeExceeded,
    NewRecord,
    TaskFluxClient,
    TaskFluxError,
)
from taskflux.client.__main__ import main as console_main
from taskflux.domain.results import RecordsAdded
from taskflux.server import tcp
from taskflux.server.main import Server
from taskflux.server.node import CommitTimeout
from taskflux.wire import client_protocol as wire
from tests.rest.conftest import server  # noqa: F401  # the fixture: a whole node in this process
from tests.support.raw_client import RawConnection

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def client(server: Server) -> Iterator[TaskFluxClient]:  # noqa: F811
    with TaskFluxClient([server.clients.address], timeout=10.0) as connected:
        yield connected


def test_enqueue_returns_the_id_and_a_known_key_adds_nothing(client: TaskFluxClient) -> None:
    first = client.enqueue("", 5, b"a", key="order-1")
    assert isinstance(first, int)
    assert client.enqueue("", 5, b"a", key="order-1") == first
    assert client.enqueue("", 5, b"a") != first  # a fresh key each time
    assert client.count() == 2


def test_an_enqueue_whose_answer_is_lost_is_retried_with_its_key_and_added_once(
    client: TaskFluxClient, server: Server, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    answered = tcp.Session.answered
    lost: list[int] = []

    def lose_the_first_answer(session: tcp.Session, answer: object, result: object) -> None:
        if isinstance(result, RecordsAdded) and not lost:
            lost.append(result.record_ids[0])
            # committed, but the client never hears it: the connection closes as on a commit timeout
            session.refused(answer, CommitTimeout("the answer is lost on purpose"))  # type: ignore[arg-type]
            return
        answered(session, answer, result)  # type: ignore[arg-type]

    monkeypatch.setattr(tcp.Session, "answered", lose_the_first_answer)
    record_id = client.enqueue("", 1, b"exactly once")
    assert lost == [record_id]  # the retry got the first enqueue's id
    assert client.count() == 1


def test_a_batch_is_all_or_nothing_and_peek_takes_nothing(client: TaskFluxClient) -> None:
    client.create_queue("small", max_queue_size=3)
    ids = client.enqueue_many("small", [(3, b"c"), (1, b"a"), NewRecord(2, b"b", key="b")])
    assert ids == [1, 2, 3]
    with pytest.raises(MaxQueueSizeExceeded):
        client.enqueue_many("small", [(0, b"x")])
    assert [(r.priority, r.payload) for r in client.peek("small", 2)] == [(1, b"a"), (2, b"b")]
    assert client.count("small") == 3
    batch = client.dequeue_many("small", 10)
    assert batch is not None and [r.payload for r in batch] == [b"a", b"b", b"c"]
    batch.ack()
    assert client.count("small") == 0 and client.dequeue_many("small") is None


def test_a_delayed_record_is_handed_out_once_due(client: TaskFluxClient) -> None:
    client.enqueue("", 1, b"later", delay=0.4)
    assert client.peek("") == [] and client.count() == 0
    [summary] = client.list_queues()
    assert (summary.delayed, summary.reserved) == (1, 0)
    started = time.monotonic()
    record = client.dequeue("", wait=10)
    assert record is not None and record.payload == b"later"
    assert 0.2 < time.monotonic() - started < 5
    record.ack()


def test_nacks_count_and_a_poison_record_is_dead_lettered(client: TaskFluxClient) -> None:
    client.create_queue("dead")
    client.create_queue("jobs", max_deliveries=2, dead_letter_queue="dead")
    client.enqueue("jobs", 7, b"poison")
    first = client.dequeue("jobs")
    assert first is not None and first.failed_deliveries == 0
    first.nack()
    second = client.dequeue("jobs")
    assert second is not None and second.failed_deliveries == 1
    second.nack()
    assert client.count("jobs") == 0
    [dead] = client.peek("dead")
    assert (dead.payload, dead.priority, dead.failed_deliveries, dead.origin) == (b"poison", 7, 2, ("jobs", 1))
    summaries = {summary.name: summary for summary in client.list_queues()}
    assert summaries["jobs"].metadata["dead-letter-queue"] == "dead"


def test_a_retry_delay_holds_a_nacked_record_back(client: TaskFluxClient) -> None:
    client.create_queue("slow", retry_delay=60)
    client.enqueue("slow", 1, b"x")
    record = client.dequeue("slow")
    assert record is not None
    record.nack()
    assert client.dequeue("slow") is None
    assert client.list_queues()[-1].delayed == 1


def test_a_nack_may_give_its_own_delay(client: TaskFluxClient) -> None:
    client.enqueue("", 1, b"x")
    record = client.dequeue("")
    assert record is not None
    record.nack(delay=60)
    [summary] = client.list_queues()
    assert (summary.count, summary.delayed) == (0, 1)
    client.enqueue("", 2, b"y")
    record = client.dequeue("")
    assert record is not None and record.payload == b"y"
    with pytest.raises(ValueError):
        record.nack(delay=-1)
    record.nack(delay=0)  # at once
    assert client.count() == 1


def test_invalid_policies_and_values_are_refused(client: TaskFluxClient) -> None:
    with pytest.raises(InvalidQueuePolicy):
        client.create_queue("q", max_deliveries=3, dead_letter_queue="missing")
    with pytest.raises(ValueError):
        client.enqueue("", 1, b"x", key="k" * 129)
    with pytest.raises(ValueError):
        client.enqueue_many("", [])
    with pytest.raises(ValueError):
        client.create_queue("q", retry_backoff="linear")


def test_a_1_0_connection_never_sees_the_extension(server: Server) -> None:  # noqa: F811
    raw = RawConnection(server.clients.address)  # announces 1.0.0
    raw.send_packet(wire.CommandRequest(wire.ListQueuesCommand()))
    answer = raw.read()
    assert isinstance(answer, wire.CommandResponse) and isinstance(answer.response, wire.ListQueuesResponse)
    assert answer.response.queues[0].metadata == {}  # no delayed/reserved/policy keys for an original client
    raw.send_packet(wire.CommandRequest(wire.PeekCommand("", 1)))
    assert raw.is_closed_by_server()  # an unknown command marker to a 1.0 client
    raw = RawConnection(server.clients.address)
    raw.send_packet(wire.NackAfter(5))
    assert raw.is_closed_by_server()  # an unknown packet to a 1.0 client


def test_the_client_falls_back_to_1_0_and_refuses_what_needs_1_1(server: Server, monkeypatch: pytest.MonkeyPatch  # noqa: F811
                                                                 ) -> None:
    monkeypatch.setattr(wire, "SERVER_VERSION", (1, 0))  # an original server's rule
    with TaskFluxClient([server.clients.address], timeout=5.0) as client:
        assert client.enqueue("", 1, b"x") is None  # the original two-phase enqueue reports no id
        with pytest.raises(TaskFluxError, match=r"protocol 1\.1"):
            client.enqueue("", 1, b"x", key="k")
        with pytest.raises(TaskFluxError, match=r"protocol 1\.1"):
            client.peek("")
        record = client.dequeue("")
        assert record is not None and record.payload == b"x"
        record.ack()


def test_the_console_schedules_peeks_and_creates_with_delivery_options(server: Server) -> None:  # noqa: F811
    out = io.StringIO()
    script = "\n".join(["create dead", "create jobs MAXDELIVERIES 2 DEADLETTER dead RETRYDELAY 0",
                        "schedule jobs 60 3 later", "enqueue jobs 1 now", "peek jobs", "list"]) + "\n"
    assert console_main(["-e", server.clients.address, "-t", "5"], stdin=io.StringIO(script), stdout=out) == 0
    lines = out.getvalue().splitlines()
    assert lines[:5] == ["ok", "ok", "ok (id 1, due in 60 s)", "ok", "key 1 (id 2, 0 failed deliveries): now"]
    assert "jobs              1  delayed=1 reserved=0 max-deliveries=2 dead-letter-queue=dead" in lines, lines
