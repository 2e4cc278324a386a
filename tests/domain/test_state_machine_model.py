"""The queue manager against a plain reference model, driven by hypothesis' stateful testing.

The model keeps each queue as a list sorted by (priority, arrival) and restates the spec's rules
independently; every rule application compares results, and the invariants compare the whole state.
A snapshot round trip (as after a restart) is one of the rules.
"""

from __future__ import annotations

import io
import itertools
from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from taskflux.domain.commands import AddRecord, CreateQueue, DeleteQueue, RemoveRecord
from taskflux.domain.errors import INT64_MAX, INT64_MIN, ErrorCode, PolicyCode
from taskflux.domain.manager import QueueManager
from taskflux.domain.records import Record
from taskflux.domain.results import OK, Failure, PolicyViolation, RecordAdded, RecordRemoved, Result
from taskflux.domain.snapshot_codec import decode_snapshot, encode_snapshot, state_digest

NAMES = st.sampled_from(["", "a", "b", "q:1", "bad name"])
PRIORITIES = st.one_of(st.integers(-3, 3), st.sampled_from([INT64_MIN, INT64_MAX]))
arrivals = itertools.count()


@dataclass
class ModelQueue:
    implementation: int
    max_size: int
    max_payload: int
    priority_range: tuple[int, int] | None
    incarnation: int
    last_id: int = 0
    items: list[tuple[int, int, Record]] = field(default_factory=list)
    reserved: list[Record] = field(default_factory=list)

    def push(self, record: Record) -> None:
        self.items.append((record.priority, next(arrivals), record))
        self.items.sort(key=lambda item: item[:2])

    def available(self) -> list[Record]:
        return [record for _, _, record in self.items]


class QueueManagerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.manager = QueueManager()
        self.model: dict[str, ModelQueue] = {"": ModelQueue(1, -1, -1, None, 0)}
        self.next_incarnation = 1

    def expect(self, command: object, result: Result, expected: Result) -> None:
        assert result == expected, f"{command}: got {result}, model says {expected}"

    @rule(
        name=NAMES,
        implementation=st.sampled_from([1, 2, 0, 3]),
        max_size=st.sampled_from([-1, 0, 2, 5, -2]),
        max_payload=st.sampled_from([-1, 0, 3, -7]),
        priority_range=st.one_of(st.none(), st.tuples(PRIORITIES, PRIORITIES)),
    )
    def create(self, name: str, implementation: int, max_size: int, max_payload: int,
               priority_range: tuple[int, int] | None) -> None:
        command = CreateQueue(name, implementation, max_size, max_payload, priority_range)
        if implementation not in (1, 2):
            expected: Result = Failure(ErrorCode.UNKNOWN_PRIORITY_QUEUE_CODE)
        elif implementation == 2 and priority_range is None:
            expected = Failure(ErrorCode.PRIORITY_RANGE_NOT_SPECIFIED)
        elif priority_range is not None and priority_range[0] > priority_range[1]:
            expected = Failure(ErrorCode.INVALID_PRIORITY_RANGE)
        elif max_payload < -1:
            expected = Failure(ErrorCode.INVALID_MAX_PAYLOAD_SIZE)
        elif max_size < -1:
            expected = Failure(ErrorCode.INVALID_MAX_QUEUE_SIZE)
        elif name == "bad name":
            expected = Failure(ErrorCode.INVALID_QUEUE_NAME)
        elif name in self.model:
            expected = Failure(ErrorCode.QUEUE_ALREADY_EXISTS)
        else:
            expected = OK
            self.model[name] = ModelQueue(implementation, max_size, max_payload, priority_range, self.next_incarnation)
            self.next_incarnation += 1
        result = self.manager.apply(command)
        self.expect(command, _code_only(result), expected)

    @rule(name=NAMES)
    def delete(self, name: str) -> None:
        if name in ("", "bad name"):
            expected: Result = Failure(ErrorCode.INVALID_QUEUE_NAME)
        elif name not in self.model:
            expected = Failure(ErrorCode.QUEUE_DOES_NOT_EXIST)
        else:
            expected = OK
            del self.model[name]
        self.expect(name, _code_only(self.manager.apply(DeleteQueue(name))), expected)

    @rule(name=NAMES, priority=PRIORITIES, size=st.integers(0, 5))
    def add(self, name: str, priority: int, size: int) -> None:
        payload = bytes(range(size))
        queue = self.model.get(name)
        if queue is None:
            expected: Result = Failure(ErrorCode.QUEUE_DOES_NOT_EXIST)
        elif queue.max_size != -1 and len(queue.items) + len(queue.reserved) >= queue.max_size:
            expected = PolicyViolation(PolicyCode.MAX_QUEUE_SIZE, (queue.max_size,))
        elif queue.priority_range is not None and not queue.priority_range[0] <= priority <= queue.priority_range[1]:
            expected = PolicyViolation(PolicyCode.PRIORITY_RANGE, queue.priority_range)
        elif queue.max_payload != -1 and size > queue.max_payload:
            expected = PolicyViolation(PolicyCode.MAX_PAYLOAD_SIZE, (queue.max_payload,))
        else:
            queue.last_id += 1
            queue.push(Record(queue.last_id, priority, payload))
            expected = RecordAdded(queue.last_id)
        self.expect(name, _code_only(self.manager.apply(AddRecord(name, priority, payload))), expected)

    @rule(name=NAMES)
    def reserve(self, name: str) -> None:
        queue = self.model.get(name)
        if queue is None:
            assert self.manager.get(name) is None
            return
        expected = queue.items.pop(0)[2] if queue.items else None
        if expected is not None:
            queue.reserved.append(expected)
        assert self.manager.get(name).reserve() == expected  # type: ignore[union-attr]

    @rule(name=NAMES, pick=st.integers(0, 10))
    def release(self, name: str, pick: int) -> None:
        queue = self.model.get(name)
        if queue is None or not queue.reserved:
            return
        record = queue.reserved.pop(pick % len(queue.reserved))
        queue.push(record)
        assert self.manager.get(name).release(record.id)  # type: ignore[union-attr]

    @rule(name=NAMES, pick=st.integers(0, 20), stale=st.booleans())
    def remove(self, name: str, pick: int, stale: bool) -> None:
        queue = self.model.get(name)
        incarnation = (queue.incarnation if queue else 0) + (7 if stale else 0)
        record_id = pick % 8
        command = RemoveRecord(name, incarnation, record_id)
        if queue is None or stale:
            expected: Result = Failure(ErrorCode.QUEUE_DOES_NOT_EXIST)
        else:
            before = len(queue.items) + len(queue.reserved)
            queue.items = [item for item in queue.items if item[2].id != record_id]
            queue.reserved = [record for record in queue.reserved if record.id != record_id]
            expected = RecordRemoved(before != len(queue.items) + len(queue.reserved))
        self.expect(command, _code_only(self.manager.apply(command)), expected)

    @rule()
    def restart_from_snapshot(self) -> None:
        """A snapshot keeps reserved records; after a reload they are available at the back of their
        priority, in the order they were handed out."""
        digest = state_digest(self.manager)
        self.manager = decode_snapshot(io.BytesIO(b"".join(encode_snapshot(self.manager, chunk_bytes=64))))
        assert state_digest(self.manager) == digest
        for queue in self.model.values():
            for record in queue.reserved:
                queue.push(record)
            queue.reserved.clear()

    @precondition(lambda self: len(self.model) > 0)
    @invariant()
    def same_state(self) -> None:
        assert sorted(self.model) == [queue.name for queue in self.manager.queues()]
        for name, model in self.model.items():
            queue = self.manager.get(name)
            assert queue is not None
            assert (queue.count, queue.stored, queue.last_id, queue.incarnation) == (
                len(model.items), len(model.items) + len(model.reserved), model.last_id, model.incarnation)
            assert [queue.peek()] == [model.items[0][2] if model.items else None]
            # records() may interleave priorities, but each priority's records come in dequeue order, the
            # reserved ones after the available ones: reloading them rebuilds the same queue.
            by_priority = sorted(queue.records(), key=lambda record: record.priority)  # stable
            assert by_priority == sorted([*model.available(), *model.reserved], key=lambda record: record.priority)


def _code_only(result: Result) -> Result:
    """Failures compare by code: messages are for people."""
    return Failure(result.code) if isinstance(result, Failure) else result


TestQueueManagerAgainstModel = QueueManagerMachine.TestCase
TestQueueManagerAgainstModel.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
