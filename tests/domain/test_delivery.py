"""The work-queue rules of the state machine: idempotency keys, delayed records, failed deliveries, dead
letters, batches, and their survival through a snapshot."""

from __future__ import annotations

import io

import pytest

from taskflux.domain.commands import (
    POLICY_DELAY,
    AddRecord,
    AddRecords,
    CreateQueue,
    DeleteQueue,
    MoveRecords,
    NewRecord,
    RemoveRecords,
    ReturnRecords,
    Tick,
)
from taskflux.domain.errors import ErrorCode, PolicyCode
from taskflux.domain.manager import QueueManager
from taskflux.domain.policies import Backoff, DeliveryPolicies
from taskflux.domain.queue import Queue
from taskflux.domain.records import Origin
from taskflux.domain.results import (
    Failure,
    PolicyViolation,
    RecordsAdded,
    RecordsMoved,
    RecordsRemoved,
    RecordsReturned,
    ReturnOutcome,
)
from taskflux.domain.snapshot_codec import decode_snapshot, encode_snapshot, state_digest


def queue_of(manager: QueueManager, name: str) -> Queue:
    queue = manager.get(name)
    assert queue is not None
    return queue


def add(manager: QueueManager, name: str, now: int, *records: NewRecord) -> RecordsAdded:
    result = manager.apply(AddRecords(name, now, records))
    assert isinstance(result, RecordsAdded), result
    return result


def ready_ids(queue: Queue) -> list[int]:
    return [record.id for record in queue.first(1000)]


def restored(manager: QueueManager) -> QueueManager:
    copy = decode_snapshot(io.BytesIO(b"".join(encode_snapshot(manager, chunk_bytes=16))))
    assert state_digest(copy) == state_digest(manager)
    return copy


# --- idempotency keys ---

def test_a_second_enqueue_with_the_same_key_returns_the_first_id_and_adds_nothing() -> None:
    manager = QueueManager()
    first = add(manager, "", 1000, NewRecord(5, b"a", b"key-1"))
    again = add(manager, "", 2000, NewRecord(9, b"other", b"key-1"))
    assert first == RecordsAdded((1,), (True,))
    assert again == RecordsAdded((1,), (False,))
    assert queue_of(manager, "").stored == 1


def test_keys_are_forgotten_after_the_window_and_beyond_the_count() -> None:
    manager = QueueManager()
    manager.apply(CreateQueue("q", delivery=DeliveryPolicies(dedup_window_ms=1000, dedup_max_keys=2)))
    add(manager, "q", 0, NewRecord(0, b"", b"a"))
    add(manager, "q", 500, NewRecord(0, b"", b"b"), NewRecord(0, b"", b"c"))  # "a" falls out by count
    assert add(manager, "q", 600, NewRecord(0, b"", b"a")).added == (True,)
    assert add(manager, "q", 700, NewRecord(0, b"", b"c")).added == (False,)
    # 1000 ms after "c" was remembered (at 500) it is forgotten:
    assert add(manager, "q", 1500, NewRecord(0, b"", b"c")).added == (True,)


def test_a_zero_window_turns_idempotency_off_but_a_batch_still_adds_a_key_once() -> None:
    manager = QueueManager()
    manager.apply(CreateQueue("q", delivery=DeliveryPolicies(dedup_window_ms=0)))
    result = add(manager, "q", 1, NewRecord(0, b"1", b"k"), NewRecord(0, b"2", b"k"))
    assert result == RecordsAdded((1, 1), (True, False))
    assert add(manager, "q", 2, NewRecord(0, b"3", b"k")).record_ids == (2,)


def test_the_key_table_is_in_the_snapshot() -> None:
    manager = QueueManager()
    add(manager, "", 10, NewRecord(0, b"x", b"kept"))
    copy = restored(manager)
    assert add(copy, "", 20, NewRecord(0, b"y", b"kept")) == RecordsAdded((1,), (False,))


# --- batches ---

def test_a_batch_is_all_or_nothing_under_the_size_limit() -> None:
    manager = QueueManager()
    manager.apply(CreateQueue("q", max_queue_size=3))
    add(manager, "q", 1, NewRecord(0, b"a"))
    refused = manager.apply(AddRecords("q", 2, (NewRecord(0, b"b"), NewRecord(0, b"c"), NewRecord(0, b"d"))))
    assert refused == PolicyViolation(PolicyCode.MAX_QUEUE_SIZE, (3,))
    assert queue_of(manager, "q").stored == 1
    # duplicates add nothing, so they do not count against the size
    add(manager, "q", 3, NewRecord(0, b"k", b"k1"))
    assert add(manager, "q", 4, NewRecord(0, b"k", b"k1"), NewRecord(0, b"e")).added == (False, True)


def test_batch_validation() -> None:
    """Values are validated where a batch is made (the service); applying checks the queue and its policies."""
    assert isinstance(AddRecords("", 1, ()).validate(), Failure)
    too_long = AddRecords("", 1, (NewRecord(0, b"", b"k" * 129),)).validate()
    assert isinstance(too_long, Failure) and too_long.code is ErrorCode.INVALID_RECORD
    late = AddRecords("", 1, (NewRecord(0, b"", None, -1),)).validate()
    assert isinstance(late, Failure) and late.code is ErrorCode.INVALID_RECORD
    manager = QueueManager()
    missing = manager.apply(AddRecords("nope", 1, (NewRecord(0, b""),)))
    assert isinstance(missing, Failure) and missing.code is ErrorCode.QUEUE_DOES_NOT_EXIST


def test_remove_records_counts_what_was_there() -> None:
    manager = QueueManager()
    add(manager, "", 1, NewRecord(0, b"a"), NewRecord(0, b"b"))
    assert manager.apply(RemoveRecords("", 0, (1, 2, 7))) == RecordsRemoved(2)
    assert queue_of(manager, "").stored == 0


# --- delays ---

def test_a_delayed_record_is_invisible_until_an_entry_brings_the_clock_to_its_time() -> None:
    manager = QueueManager()
    add(manager, "", 1000, NewRecord(5, b"later", None, 3000), NewRecord(7, b"now"))
    queue = queue_of(manager, "")
    assert (queue.count, queue.delayed_count, queue.stored) == (1, 1, 2)
    assert manager.next_due() == 3000
    manager.apply(Tick(2999))
    assert queue.count == 1
    manager.woken.clear()
    manager.apply(Tick(3000))
    assert ready_ids(queue) == [1, 2]  # priority order once due
    assert manager.woken == [""]
    assert manager.next_due() is None


def test_the_clock_never_goes_back() -> None:
    manager = QueueManager()
    manager.apply(Tick(5000))
    manager.apply(Tick(4000))
    assert manager.clock == 5000
    add(manager, "", 4500, NewRecord(0, b"", None, 4900))  # already due by the state's clock
    assert queue_of(manager, "").count == 1


def test_due_records_become_ready_earliest_first() -> None:
    manager = QueueManager()
    add(manager, "", 0, NewRecord(1, b"c", None, 30), NewRecord(1, b"a", None, 10), NewRecord(1, b"b", None, 20))
    manager.apply(Tick(100))
    assert [record.payload for record in queue_of(manager, "").first(3)] == [b"a", b"b", b"c"]


def test_delayed_records_survive_a_snapshot_and_stay_delayed() -> None:
    manager = QueueManager()
    add(manager, "", 100, NewRecord(0, b"x", None, 500))
    copy = restored(manager)
    assert queue_of(copy, "").delayed_count == 1 and copy.clock == 100
    copy.apply(Tick(500))
    assert queue_of(copy, "").count == 1


# --- failed deliveries and dead letters ---

def test_a_return_counts_a_failed_delivery_and_applies_the_delay() -> None:
    manager = QueueManager()
    manager.apply(CreateQueue("q", delivery=DeliveryPolicies(retry_delay_ms=100)))
    add(manager, "q", 0, NewRecord(0, b"job"))
    queue = queue_of(manager, "q")
    assert queue.reserve() is not None
    result = manager.apply(ReturnRecords("q", queue.incarnation, 1000, ((1, POLICY_DELAY),)))
    assert result == RecordsReturned((ReturnOutcome.DELAYED,))
    assert queue.count == 0 and queue.delayed_count == 1 and manager.next_due() == 1100
    manager.apply(Tick(1100))
    record = queue.reserve()
    assert record is not None and record.failed_deliveries == 1 and record.id == 1
    # an explicit delay wins over the policy; 0 is at once
    assert manager.apply(ReturnRecords("q", queue.incarnation, 1200, ((1, 0),))) == RecordsReturned(("ready",))
    assert queue.count == 1


def test_exponential_backoff_doubles_up_to_the_cap() -> None:
    policy = DeliveryPolicies(retry_delay_ms=100, retry_backoff=Backoff.EXPONENTIAL, retry_max_delay_ms=350)
    assert [policy.retry_delay(n) for n in (1, 2, 3, 4, 100)] == [100, 200, 350, 350, 350]
    assert DeliveryPolicies(retry_delay_ms=100).retry_delay(5) == 100


def test_a_record_that_reaches_max_deliveries_moves_to_the_dead_letter_queue_keeping_what_it_was() -> None:
    manager = QueueManager()
    manager.apply(CreateQueue("dead"))
    manager.apply(CreateQueue("jobs", delivery=DeliveryPolicies(max_deliveries=2, dead_letter_queue="dead")))
    add(manager, "jobs", 0, NewRecord(-4, b"poison"))
    jobs = queue_of(manager, "jobs")
    manager.apply(ReturnRecords("jobs", jobs.incarnation, 1, ((1, POLICY_DELAY),)))
    assert jobs.count == 1
    result = manager.apply(ReturnRecords("jobs", jobs.incarnation, 2, ((1, POLICY_DELAY),)))
    assert result == RecordsReturned((ReturnOutcome.DEAD_LETTERED,))
    assert jobs.stored == 0
    [dead] = queue_of(manager, "dead").first(5)
    assert (dead.payload, dead.priority, dead.failed_deliveries, dead.origin) == (b"poison", -4, 2, Origin("jobs", 1))
    assert restored(manager).get("dead").first(1) == [dead]  # type: ignore[union-attr]


def test_without_its_dead_letter_queue_a_record_stays_and_keeps_counting() -> None:
    manager = QueueManager()
    manager.apply(CreateQueue("dead", 2, priority_range=(0, 10)))
    manager.apply(CreateQueue("jobs", delivery=DeliveryPolicies(max_deliveries=1, dead_letter_queue="dead")))
    add(manager, "jobs", 0, NewRecord(-4, b"outside the range"))
    jobs = queue_of(manager, "jobs")
    assert manager.apply(ReturnRecords("jobs", jobs.incarnation, 1, ((1, 0),))).outcomes == ("ready",)  # type: ignore[union-attr]
    manager.apply(DeleteQueue("dead"))
    assert manager.apply(ReturnRecords("jobs", jobs.incarnation, 2, ((1, 0),))).outcomes == ("ready",)  # type: ignore[union-attr]
    assert jobs.first(1)[0].failed_deliveries == 2


def test_a_return_of_a_record_already_gone_does_nothing() -> None:
    manager = QueueManager()
    add(manager, "", 0, NewRecord(0, b"x"))
    manager.apply(RemoveRecords("", 0, (1,)))
    assert manager.apply(ReturnRecords("", 0, 1, ((1, 0),))) == RecordsReturned((ReturnOutcome.MISSING,))


@pytest.mark.parametrize(("delivery", "reason"), [
    (DeliveryPolicies(max_deliveries=3), "go together"),
    (DeliveryPolicies(max_deliveries=0, dead_letter_queue="d"), "max_deliveries"),
    (DeliveryPolicies(max_deliveries=1, dead_letter_queue="q"), "its own"),
    (DeliveryPolicies(max_deliveries=1, dead_letter_queue="missing"), "does not exist"),
    (DeliveryPolicies(retry_delay_ms=-1), "retry_delay_ms"),
    (DeliveryPolicies(retry_delay_ms=10, retry_backoff=Backoff.EXPONENTIAL, retry_max_delay_ms=5), "below"),
    (DeliveryPolicies(dedup_window_ms=-5), "dedup_window_ms"),
])
def test_invalid_delivery_policies_are_refused(delivery: DeliveryPolicies, reason: str) -> None:
    manager = QueueManager()
    manager.apply(CreateQueue("d"))
    result = manager.apply(CreateQueue("q", delivery=delivery))
    assert isinstance(result, Failure) and result.code is ErrorCode.INVALID_QUEUE_POLICY and reason in result.message


def test_the_original_commands_still_behave_as_before() -> None:
    manager = QueueManager()
    manager.apply(AddRecord("", 1, b"x"))
    assert manager.woken == [""]
    record = queue_of(manager, "").peek()
    assert record is not None and (record.failed_deliveries, record.not_before, record.origin) == (0, 0, None)


def test_after_a_snapshot_every_delayed_record_still_falls_due_in_its_turn() -> None:
    manager = QueueManager()
    manager.apply(CreateQueue("other"))
    add(manager, "", 0, NewRecord(0, b"a", None, 100), NewRecord(0, b"b", None, 200), NewRecord(0, b"c", None, 300))
    add(manager, "other", 0, NewRecord(0, b"x", None, 150))
    copy = restored(manager)
    for machine in (manager, copy):
        machine.apply(Tick(160))
        assert queue_of(machine, "").count == 1 and queue_of(machine, "other").count == 1
        assert machine.next_due() == 200
        machine.apply(Tick(250))
        assert queue_of(machine, "").count == 2
        machine.apply(Tick(300))
        assert queue_of(machine, "").count == 3 and machine.next_due() is None
    assert state_digest(copy) == state_digest(manager)


def test_many_queues_with_delayed_records_cost_an_entry_nothing_until_due() -> None:
    manager = QueueManager()
    for number in range(200):
        manager.apply(CreateQueue(f"q{number}"))
        add(manager, f"q{number}", 0, NewRecord(0, b"later", None, 10_000 + number))
    add(manager, "", 5_000, NewRecord(0, b"now"))  # moves the clock: no queue is due yet
    assert sum(queue.count for queue in manager.queues()) == 1
    manager.apply(Tick(10_099))
    assert sum(queue.count for queue in manager.queues()) == 101


def test_dead_letters_move_back_to_where_they_came_from() -> None:
    manager = QueueManager()
    manager.apply(CreateQueue("dead"))
    manager.apply(CreateQueue("jobs", delivery=DeliveryPolicies(max_deliveries=1, dead_letter_queue="dead")))
    add(manager, "jobs", 0, NewRecord(3, b"one"), NewRecord(4, b"two"))
    jobs, dead = queue_of(manager, "jobs"), queue_of(manager, "dead")
    manager.apply(ReturnRecords("jobs", jobs.incarnation, 1, ((1, 0), (2, 0))))
    add(manager, "dead", 2, NewRecord(0, b"no origin"))
    assert dead.count == 3 and jobs.count == 0
    moved = manager.apply(MoveRecords("dead", dead.incarnation, 3, (1, 2, 3, 99)))
    assert moved == RecordsMoved(2)
    assert [(r.payload, r.priority, r.failed_deliveries, r.origin) for r in jobs.first(5)] == [
        (b"one", 3, 0, None), (b"two", 4, 0, None)]
    assert [r.payload for r in dead.first(5)] == [b"no origin"]
    manager.apply(DeleteQueue("jobs"))
    assert isinstance(manager.apply(MoveRecords("dead", dead.incarnation + 1, 4, (3,))), Failure)
