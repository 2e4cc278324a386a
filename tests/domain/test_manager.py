"""The queue manager's rules: docs/client-protocol.md §7 and §9, docs/state-machine.md."""

from __future__ import annotations

import pytest

from taskflux.domain.commands import AddRecord, CreateQueue, DeleteQueue, RemoveRecord
from taskflux.domain.errors import INT32_MAX, INT64_MAX, INT64_MIN, ErrorCode, Implementation, PolicyCode
from taskflux.domain.manager import QueueManager
from taskflux.domain.results import OK, Failure, PolicyViolation, RecordAdded, RecordRemoved

H4, QA = Implementation.H4, Implementation.QA


def code_of(result: object) -> ErrorCode:
    assert isinstance(result, Failure), result
    return result.code


def test_default_queue_exists_from_the_start_and_cannot_be_deleted() -> None:
    manager = QueueManager()
    default = manager.get("")
    assert default is not None and default.implementation is H4 and default.count == 0
    assert code_of(manager.apply(DeleteQueue(""))) is ErrorCode.INVALID_QUEUE_NAME
    assert code_of(manager.apply(CreateQueue(""))) is ErrorCode.QUEUE_ALREADY_EXISTS
    assert manager.apply(AddRecord("", -1, b"")) == RecordAdded(1)


@pytest.mark.parametrize(
    ("command", "code"),
    [
        # implementation code first, even when everything else is wrong too
        (CreateQueue("bad name", 0, -2, -5, (5, 1)), ErrorCode.UNKNOWN_PRIORITY_QUEUE_CODE),
        (CreateQueue("q", 3), ErrorCode.UNKNOWN_PRIORITY_QUEUE_CODE),
        (CreateQueue("bad name", QA, -2, -5, None), ErrorCode.PRIORITY_RANGE_NOT_SPECIFIED),
        (CreateQueue("bad name", H4, -2, -5, (5, 1)), ErrorCode.INVALID_PRIORITY_RANGE),
        # the spec's example: a heap queue with maxQueueSize -2 and maxPayloadSize -5 answers code 6
        (CreateQueue("q", H4, -2, -5), ErrorCode.INVALID_MAX_PAYLOAD_SIZE),
        (CreateQueue("bad name", H4, -2, -1), ErrorCode.INVALID_MAX_QUEUE_SIZE),
        (CreateQueue("q", H4, INT32_MAX + 1), ErrorCode.INVALID_MAX_QUEUE_SIZE),
        (CreateQueue("bad name", H4), ErrorCode.INVALID_QUEUE_NAME),
        (CreateQueue("x" * 256, H4), ErrorCode.INVALID_QUEUE_NAME),
        (CreateQueue("", H4), ErrorCode.QUEUE_ALREADY_EXISTS),
        (CreateQueue("q", H4, 0, 0, (INT64_MIN, INT64_MAX + 1)), ErrorCode.INVALID_PRIORITY_RANGE),
    ],
)
def test_create_queue_validation_order(command: CreateQueue, code: ErrorCode) -> None:
    manager = QueueManager()
    assert manager.check(command) == manager.apply(command)
    assert code_of(manager.apply(command)) is code
    assert len(manager) == 1


def test_create_queue_accepts_the_limits_of_every_policy() -> None:
    manager = QueueManager()
    assert manager.apply(CreateQueue("a", QA, 0, INT32_MAX, (INT64_MIN, INT64_MAX))) is OK
    assert manager.apply(CreateQueue("b", QA, INT32_MAX, 0, (7, 7))) is OK
    assert code_of(manager.apply(CreateQueue("b", H4))) is ErrorCode.QUEUE_ALREADY_EXISTS
    assert [queue.name for queue in manager.queues()] == ["", "a", "b"]


def test_enqueue_checks_existence_then_size_then_range_then_payload() -> None:
    manager = QueueManager()
    manager.apply(CreateQueue("q", QA, 1, 2, (0, 10)))
    assert code_of(manager.apply(AddRecord("missing", 99, b"too long"))) is ErrorCode.QUEUE_DOES_NOT_EXIST
    assert manager.apply(AddRecord("q", 99, b"too long")) == PolicyViolation(PolicyCode.PRIORITY_RANGE, (0, 10))
    assert manager.apply(AddRecord("q", 5, b"too long")) == PolicyViolation(PolicyCode.MAX_PAYLOAD_SIZE, (2,))
    assert manager.apply(AddRecord("q", 10, b"ok")) == RecordAdded(1)
    # full now: the size policy is reported first, whatever else is wrong
    assert manager.apply(AddRecord("q", 99, b"too long")) == PolicyViolation(PolicyCode.MAX_QUEUE_SIZE, (1,))
    assert manager.get("q").last_id == 1  # type: ignore[union-attr]  # a refused enqueue consumes no id


def test_max_queue_size_zero_refuses_everything_and_empty_payloads_always_fit() -> None:
    manager = QueueManager()
    manager.apply(CreateQueue("closed", H4, 0))
    manager.apply(CreateQueue("tiny", H4, -1, 0))
    assert manager.apply(AddRecord("closed", 0, b"")) == PolicyViolation(PolicyCode.MAX_QUEUE_SIZE, (0,))
    assert manager.apply(AddRecord("tiny", 0, b"")) == RecordAdded(1)


def test_record_ids_per_queue_never_reused_and_restart_for_a_new_queue() -> None:
    manager = QueueManager()
    manager.apply(CreateQueue("q"))
    queue = manager.get("q")
    assert queue is not None
    ids = [manager.apply(AddRecord("q", 0, b"")) for _ in range(3)]
    assert ids == [RecordAdded(1), RecordAdded(2), RecordAdded(3)]
    assert manager.apply(RemoveRecord("q", queue.incarnation, 3)) == RecordRemoved(True)
    assert manager.apply(AddRecord("q", 0, b"")) == RecordAdded(4)
    assert manager.apply(DeleteQueue("q")) is OK
    assert manager.apply(CreateQueue("q")) is OK
    assert manager.apply(AddRecord("q", 0, b"")) == RecordAdded(1)


def test_an_ack_for_a_deleted_queue_never_removes_a_record_of_its_successor() -> None:
    manager = QueueManager()
    manager.apply(CreateQueue("q"))
    old = manager.get("q")
    assert old is not None
    manager.apply(AddRecord("q", 0, b"old"))
    assert old.reserve() is not None
    manager.apply(DeleteQueue("q"))
    manager.apply(CreateQueue("q"))
    manager.apply(AddRecord("q", 0, b"new"))
    stale_ack = RemoveRecord("q", old.incarnation, 1)
    assert code_of(manager.apply(stale_ack)) is ErrorCode.QUEUE_DOES_NOT_EXIST
    assert manager.get("q").count == 1  # type: ignore[union-attr]


def test_delete_queue_errors() -> None:
    manager = QueueManager()
    assert code_of(manager.apply(DeleteQueue("nope"))) is ErrorCode.QUEUE_DOES_NOT_EXIST
    assert code_of(manager.apply(DeleteQueue("bad name"))) is ErrorCode.INVALID_QUEUE_NAME


def test_reservations_hide_records_until_released_or_removed() -> None:
    manager = QueueManager()
    queue = manager.get("")
    assert queue is not None
    for priority, payload in [(5, b"a"), (1, b"b"), (5, b"c"), (1, b"d")]:
        manager.apply(AddRecord("", priority, payload))
    first = queue.reserve()
    second = queue.reserve()
    assert (first.payload, second.payload) == (b"b", b"d")  # type: ignore[union-attr]
    assert queue.count == 2 and queue.stored == 4  # reserved records are not counted (§4.7)
    assert queue.peek().payload == b"a"  # type: ignore[union-attr]  # and invisible to other dequeues
    assert queue.release(first.id)  # type: ignore[union-attr]
    assert not queue.release(first.id)  # type: ignore[union-attr]  # already back
    assert queue.count == 3
    # an applied RemoveRecord of a reserved record removes it for good
    assert manager.apply(RemoveRecord("", queue.incarnation, second.id)) == RecordRemoved(True)  # type: ignore[union-attr]
    assert queue.stored == 3 and not queue.release(second.id)  # type: ignore[union-attr]
    # the released record kept its id and sits at the back of priority 1's FIFO (alone there now)
    assert [queue.reserve().id for _ in range(3)] == [first.id, 1, 3]  # type: ignore[union-attr]
    assert queue.reserve() is None


def test_a_released_record_goes_behind_records_of_equal_priority() -> None:
    manager = QueueManager()
    queue = manager.get("")
    assert queue is not None
    for payload in (b"a", b"b", b"c"):
        manager.apply(AddRecord("", 7, payload))
    taken = queue.reserve()
    assert taken is not None and taken.payload == b"a"
    queue.release(taken.id)
    assert [queue.reserve().payload for _ in range(3)] == [b"b", b"c", b"a"]  # type: ignore[union-attr]


def test_max_queue_size_counts_reserved_records_so_every_node_decides_alike() -> None:
    """Reservations are leader-local, so the size policy at apply time uses the replicated size."""
    leader, follower = QueueManager(), QueueManager()
    for manager in (leader, follower):
        manager.apply(CreateQueue("q", H4, 1))
        manager.apply(AddRecord("q", 0, b"x"))
    assert leader.get("q").reserve() is not None  # type: ignore[union-attr]
    refused = PolicyViolation(PolicyCode.MAX_QUEUE_SIZE, (1,))
    assert leader.apply(AddRecord("q", 0, b"y")) == follower.apply(AddRecord("q", 0, b"y")) == refused


def test_remove_record_is_total() -> None:
    manager = QueueManager()
    assert manager.apply(RemoveRecord("", 0, 42)) == RecordRemoved(False)
    assert code_of(manager.apply(RemoveRecord("missing", 0, 1))) is ErrorCode.QUEUE_DOES_NOT_EXIST


def test_check_changes_nothing() -> None:
    manager = QueueManager()
    assert manager.check(AddRecord("", 0, b"")) is None
    assert manager.check(CreateQueue("q")) is None
    assert manager.get("").count == 0 and manager.get("q") is None  # type: ignore[union-attr]
