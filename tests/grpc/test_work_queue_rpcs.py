"""The work-queue RPCs: EnqueueMany (keys, delays, all or nothing), LeaseDequeue and the lease RPCs (ack, nack,
release, extend, expiry), Peek, delivery policies on CreateQueue and in ListQueues."""

from __future__ import annotations

import time

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskflux.server.grpc_api import taskflux_pb2 as pb
from tests.grpc.conftest import CALL_TIMEOUT, MAX_PAYLOAD_BYTES, Harness, wait_until

pytestmark = pytest.mark.timeout(60)


def enqueue_many(harness: Harness, queue: str, *records: pb.NewRecord) -> pb.EnqueueManyResponse:
    return harness.stub.EnqueueMany(pb.EnqueueManyRequest(queue=queue, records=records), timeout=CALL_TIMEOUT)


def lease(harness: Harness, queue: str, **fields: int) -> list[pb.Record]:
    answer = harness.stub.LeaseDequeue(pb.LeaseDequeueRequest(queue=queue, **fields), timeout=CALL_TIMEOUT)
    assert answer.WhichOneof("result") == "data", answer
    return list(answer.data.records)


def test_enqueue_many_answers_ids_and_duplicates(harness: Harness) -> None:
    answer = enqueue_many(harness, "", pb.NewRecord(priority=2, payload=b"a", key=b"k"),
                          pb.NewRecord(priority=1, payload=b"b"), pb.NewRecord(priority=1, payload=b"c", key=b"k"))
    assert [(r.id, r.duplicate) for r in answer.data.records] == [(1, False), (2, False), (1, True)]
    again = enqueue_many(harness, "", pb.NewRecord(priority=2, payload=b"a", key=b"k"))
    assert [(r.id, r.duplicate) for r in again.data.records] == [(1, True)]
    assert harness.count() == 2


def test_a_batch_over_a_limit_adds_nothing(harness: Harness) -> None:
    harness.create("small", max_queue_size=1)
    answer = enqueue_many(harness, "small", pb.NewRecord(payload=b"a"), pb.NewRecord(payload=b"b"))
    assert answer.WhichOneof("result") == "policy_violation"
    assert harness.count("small") == 0
    missing = enqueue_many(harness, "missing", pb.NewRecord(payload=b"a"))
    assert missing.error.code == pb.QueueDoesNotExist
    empty = harness.stub.EnqueueMany(pb.EnqueueManyRequest(queue=""), timeout=CALL_TIMEOUT)
    assert empty.error.code == pb.InvalidRecord
    with pytest.raises(grpc.RpcError) as too_big:
        enqueue_many(harness, "", *[pb.NewRecord(payload=b"x" * (MAX_PAYLOAD_BYTES // 2 + 1))] * 2)
    assert too_big.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_delayed_records_are_leased_once_due_and_peek_shows_ready_ones(harness: Harness) -> None:
    enqueue_many(harness, "", pb.NewRecord(priority=1, payload=b"later", delay_ms=300),
                 pb.NewRecord(priority=5, payload=b"now"))
    assert [r.payload for r in harness.stub.Peek(pb.PeekRequest(queue=""), timeout=CALL_TIMEOUT).data.records] == [
        b"now"]
    [info] = harness.stub.ListQueues(pb.ListQueuesRequest(), timeout=CALL_TIMEOUT).data.queues
    assert (info.count, info.delayed, info.reserved) == (1, 1, 0)
    [now] = lease(harness, "")
    started = time.monotonic()
    [later] = lease(harness, "", wait_ms=10_000)
    assert later.payload == b"later" and time.monotonic() - started > 0.1
    for record in (now, later):
        assert harness.stub.AckLease(pb.LeaseRequest(lease=record.lease), timeout=CALL_TIMEOUT).HasField("data")
    assert harness.count() == 0


def test_nack_release_extend_and_expiry(harness: Harness) -> None:
    harness.stub.CreateQueue(pb.CreateQueueRequest(queue="jobs", delivery=pb.DeliveryPolicies(
        max_deliveries=3, dead_letter_queue="")), timeout=CALL_TIMEOUT)
    enqueue_many(harness, "jobs", pb.NewRecord(priority=1, payload=b"job"))
    [record] = lease(harness, "jobs", lease_ms=60_000)
    nacked = harness.stub.NackLease(pb.NackLeaseRequest(lease=record.lease, delay_ms=0), timeout=CALL_TIMEOUT)
    assert nacked.data.outcome == "ready"
    [record] = lease(harness, "jobs", lease_ms=60_000)
    assert record.failed_deliveries == 1
    harness.stub.ReleaseLease(pb.LeaseRequest(lease=record.lease), timeout=CALL_TIMEOUT)
    [record] = lease(harness, "jobs", lease_ms=200)
    assert record.failed_deliveries == 1  # a release is not a failed delivery
    extended = harness.stub.ExtendLease(pb.ExtendLeaseRequest(lease=record.lease, lease_ms=60_000),
                                        timeout=CALL_TIMEOUT)
    assert extended.data.lease_ms_left > 50_000
    time.sleep(0.4)  # past the first deadline
    harness.stub.NackLease(pb.NackLeaseRequest(lease=record.lease), timeout=CALL_TIMEOUT)  # 2 failures
    [record] = lease(harness, "jobs", lease_ms=50)  # expires: the third failed delivery dead-letters it
    wait_until(lambda: harness.count("") == 1, what="the expired lease's record in the dead-letter queue")
    [dead] = harness.stub.Peek(pb.PeekRequest(queue=""), timeout=CALL_TIMEOUT).data.records
    assert (dead.payload, dead.failed_deliveries, dead.origin_queue, dead.origin_id) == (b"job", 3, "jobs", 1)
    with pytest.raises(grpc.RpcError) as gone:
        harness.stub.AckLease(pb.LeaseRequest(lease=record.lease), timeout=CALL_TIMEOUT)
    assert gone.value.code() is grpc.StatusCode.NOT_FOUND


def test_invalid_requests_are_errors(harness: Harness) -> None:
    assert harness.stub.LeaseDequeue(pb.LeaseDequeueRequest(queue="", max=1001),
                                     timeout=CALL_TIMEOUT).error.code == pb.InvalidRecord
    bad_policy = harness.stub.CreateQueue(pb.CreateQueueRequest(queue="q", delivery=pb.DeliveryPolicies(
        max_deliveries=2)), timeout=CALL_TIMEOUT)
    assert bad_policy.error.code == pb.InvalidQueuePolicy
    assert harness.stub.Peek(pb.PeekRequest(queue="missing"), timeout=CALL_TIMEOUT).error.code == pb.QueueDoesNotExist


def test_the_record_counters_count_grpc(tmp_path: object) -> None:
    from taskflux.server.metrics import NodeMetrics

    metrics = NodeMetrics(process_metrics=False)
    harness = Harness(tmp_path, metrics=metrics).start()  # type: ignore[arg-type]
    try:
        enqueue_many(harness, "", pb.NewRecord(payload=b"a"), pb.NewRecord(payload=b"b"))
        records = lease(harness, "", max=2)
        harness.stub.AckLease(pb.LeaseRequest(lease=records[0].lease), timeout=CALL_TIMEOUT)
        harness.stub.NackLease(pb.NackLeaseRequest(lease=records[1].lease), timeout=CALL_TIMEOUT)
        grpc_counters = metrics.interface("grpc")
        assert (grpc_counters.enqueued_count, grpc_counters.dequeued_count, grpc_counters.acked_count,
                grpc_counters.nacked_count) == (2, 2, 1, 1)
    finally:
        harness.stop()


INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)
FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(records=st.lists(st.builds(pb.NewRecord, priority=INT64, payload=st.binary(max_size=64),
                                  key=st.binary(max_size=200), delay_ms=INT64, not_before_ms=INT64), max_size=4),
       queue=st.sampled_from(["", "jobs", "a b", "x" * 300]))
def test_random_batches_get_an_answer(harness: Harness, records: list[pb.NewRecord], queue: str) -> None:
    answer = harness.stub.EnqueueMany(pb.EnqueueManyRequest(queue=queue, records=records), timeout=CALL_TIMEOUT)
    assert answer.WhichOneof("result") in ("data", "error", "policy_violation")
    assert harness.count() >= 0  # still serving


@FUZZ
@given(delivery=st.builds(pb.DeliveryPolicies, max_deliveries=INT32, dead_letter_queue=st.sampled_from(["", "x", "q"]),
                          retry_delay_ms=INT64, retry_backoff=st.sampled_from([0, 1]), retry_max_delay_ms=INT64,
                          dedup_window_ms=INT64, dedup_max_keys=INT64),
       lease=st.builds(pb.LeaseDequeueRequest, queue=st.sampled_from(["", "q"]), max=INT32,
                       wait_ms=st.integers(-5, 5), lease_ms=INT64))
def test_random_policies_and_leases_get_an_answer(harness: Harness, delivery: pb.DeliveryPolicies,
                                                  lease: pb.LeaseDequeueRequest) -> None:
    created = harness.stub.CreateQueue(pb.CreateQueueRequest(queue="q", delivery=delivery), timeout=CALL_TIMEOUT)
    assert created.WhichOneof("result") in ("data", "error")
    leased = harness.stub.LeaseDequeue(lease, timeout=CALL_TIMEOUT)
    assert leased.WhichOneof("result") in ("data", "error")
    for record in leased.data.records:
        harness.stub.ReleaseLease(pb.LeaseRequest(lease=record.lease), timeout=CALL_TIMEOUT)
