"""The queue manager: TaskFlux's replicated state machine.

``apply`` is deterministic: the same commands in the same order give the same state and the same results
on every node. It re-checks every rule, so two requests that raced on the leader (two enqueues for the
last free slot, two creations of one name) get the same outcome everywhere. ``check`` runs the same rules
without changing anything, for the leader to refuse a request before proposing it.

Time: the state machine has a clock, the latest leader time any applied entry carried (AddRecords,
ReturnRecords, Tick); it never goes back. Delayed records become ready when the clock reaches their due
time, while an entry is applied, so every node makes them ready at the same point of the log. The leader
proposes a Tick when a delayed record falls due and no other entry carries the time.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from taskflux.domain.commands import (
    POLICY_DELAY,
    AddRecord,
    AddRecords,
    Command,
    CreateQueue,
    DeleteQueue,
    MoveRecords,
    RemoveRecord,
    RemoveRecords,
    ReturnRecords,
    Tick,
    invalid_name,
)
from taskflux.domain.errors import ErrorCode, Implementation
from taskflux.domain.names import DEFAULT_QUEUE, is_valid_queue_name
from taskflux.domain.policies import QueuePolicies, invalid_policy
from taskflux.domain.queue import Queue
from taskflux.domain.records import Origin, Record
from taskflux.domain.results import (
    OK,
    Failure,
    PolicyViolation,
    RecordAdded,
    RecordRemoved,
    RecordsAdded,
    RecordsMoved,
    RecordsRemoved,
    RecordsReturned,
    Result,
    ReturnOutcome,
)

DEFAULT_INCARNATION = 0


class QueueManager:
    """Every queue of a node, by name. A new manager holds the empty default queue ``""``.

    ``woken`` lists, one name per record, the queues where records became ready by the last applies (added,
    due, returned, dead-lettered): the node drains it to wake as many waiting consumers; ``delayed_added`` says
    that a record was delayed (the node clears it)."""

    __slots__ = ("_due", "_queues", "clock", "dead_lettered", "delayed_added", "next_incarnation", "woken")

    def __init__(self, with_default_queue: bool = True) -> None:
        self._queues: dict[str, Queue] = {}
        # (due time, queue name) of delayed records, earliest first: applying an entry looks only at the queues
        # with records due, however many queues hold delayed ones. Every queue's earliest due time is in it (with
        # maybe more of its times); entries left behind (a queue deleted) are skipped when they surface.
        self._due: list[tuple[int, str]] = []
        self.next_incarnation = DEFAULT_INCARNATION + 1
        self.clock = 0
        self.woken: list[str] = []
        self.delayed_added = False  # set when a record was delayed: the leader's ticker looks at the due times again
        self.dead_lettered: dict[str, int] = {}  # records dead-lettered by this process, by source queue (a metric)
        if with_default_queue:
            self.add_queue(Queue(DEFAULT_QUEUE, Implementation.H4, QueuePolicies(), DEFAULT_INCARNATION))

    # --- reads ---

    def get(self, name: str) -> Queue | None:
        return self._queues.get(name)

    def __len__(self) -> int:
        return len(self._queues)

    def queues(self) -> Iterator[Queue]:
        """Every queue, in name order (byte order: names are ASCII)."""
        for name in sorted(self._queues):
            yield self._queues[name]

    def next_due(self) -> int | None:
        """The earliest due time of a delayed record, in any queue; None when no record is delayed."""
        due = self._due
        while due:
            when, name = due[0]
            queue = self._queues.get(name)
            actual = None if queue is None else queue.next_due()
            if actual == when:
                return when
            if actual is None:
                heapq.heappop(due)
            else:  # its earliest record left (acked, removed): its next one is due later
                heapq.heapreplace(due, (actual, name))
        return None

    def dead_letter_sources(self, name: str) -> list[str]:
        """The queues whose dead letters go to ``name``, in name order."""
        return [queue.name for queue in self.queues() if queue.policies.delivery.dead_letter_queue == name]

    # --- the state machine ---

    def check(self, command: Command) -> Failure | PolicyViolation | None:
        """Why ``apply(command)`` would be refused now, or None when it would take effect."""
        if isinstance(command, AddRecord):
            queue = self._queues.get(command.name)
            if queue is None:
                return _missing(command.name)
            return queue.policies.check_enqueue(queue.stored, command.priority, len(command.payload))
        if isinstance(command, (RemoveRecord, RemoveRecords, MoveRecords)):
            return self._instance(command.name, command.incarnation)
        if isinstance(command, AddRecords):
            # Its values were validated where it was made (AddRecords.validate); a log entry holds only such.
            return self._check_batch(command)
        if isinstance(command, ReturnRecords):
            return command.validate() or self._instance(command.name, command.incarnation)
        if isinstance(command, Tick):
            return None
        if isinstance(command, CreateQueue):
            failure = command.validate()
            if failure is None and command.name in self._queues:
                failure = Failure(ErrorCode.QUEUE_ALREADY_EXISTS, f"queue {command.name!r} already exists")
            dead_letters = command.delivery.dead_letter_queue
            if failure is None and dead_letters is not None and dead_letters not in self._queues:
                failure = invalid_policy(f"the dead-letter queue {dead_letters!r} does not exist")
            return failure
        if isinstance(command, DeleteQueue):
            if command.name == DEFAULT_QUEUE:
                return Failure(ErrorCode.INVALID_QUEUE_NAME, "the default queue cannot be deleted")
            if not is_valid_queue_name(command.name):
                return invalid_name(command.name)
            if command.name not in self._queues:
                return _missing(command.name)
            return None
        raise TypeError(f"not a command: {command!r}")

    def apply(self, command: Command) -> Result:
        """Apply one committed command and return its result."""
        if isinstance(command, (AddRecords, ReturnRecords, MoveRecords, Tick)):
            self._advance(command.now)
        refusal = self.check(command)
        if refusal is not None:
            return refusal
        if isinstance(command, AddRecord):
            record = self._queues[command.name].add(command.priority, command.payload)
            self.woken.append(command.name)
            return RecordAdded(record.id)
        if isinstance(command, RemoveRecord):
            return RecordRemoved(self._queues[command.name].remove(command.record_id))
        if isinstance(command, AddRecords):
            return self._add_records(command)
        if isinstance(command, ReturnRecords):
            return self._return_records(command)
        if isinstance(command, RemoveRecords):
            queue = self._queues[command.name]
            return RecordsRemoved(sum(queue.remove(record_id) for record_id in command.record_ids))
        if isinstance(command, MoveRecords):
            return self._move_records(command)
        if isinstance(command, Tick):
            for queue in self._queues.values():
                if queue.keys:
                    queue.forget_keys(self.clock)
            return OK
        if isinstance(command, CreateQueue):
            implementation = Implementation(command.implementation)
            self.add_queue(Queue(command.name, implementation, command.policies(), self.next_incarnation))
            return OK
        del self._queues[command.name]
        return OK

    def add_queue(self, queue: Queue) -> None:
        """Install a queue built elsewhere (the default queue, or one read from a snapshot)."""
        if queue.name in self._queues:
            raise ValueError(f"queue {queue.name!r} already exists")
        self._queues[queue.name] = queue
        self.next_incarnation = max(self.next_incarnation, queue.incarnation + 1)
        due = queue.next_due()
        if due is not None:
            heapq.heappush(self._due, (due, queue.name))

    # --- the parts of apply ---

    def _instance(self, name: str, incarnation: int) -> Failure | None:
        queue = self._queues.get(name)
        if queue is None or queue.incarnation != incarnation:
            return _missing(name)
        return None

    def _check_batch(self, command: AddRecords) -> Failure | PolicyViolation | None:
        """All or nothing: every record that adds something must pass the policies, counted one after the
        other against the queue's size (a record whose key is known adds nothing and is not checked)."""
        queue = self._queues.get(command.name)
        if queue is None:
            return _missing(command.name)
        if len(command.records) == 1:  # the common case, without the bookkeeping of a batch
            record = command.records[0]
            if record.key is not None and queue.known_key(record.key, self.clock) is not None:
                return None
            return queue.policies.check_enqueue(queue.stored, record.priority, len(record.payload))
        fresh, seen = 0, set()
        for record in command.records:
            if record.key is not None:
                if record.key in seen or queue.known_key(record.key, self.clock) is not None:
                    continue
                seen.add(record.key)
            violation = queue.policies.check_enqueue(queue.stored + fresh, record.priority, len(record.payload))
            if violation is not None:
                return violation
            fresh += 1
        return None

    def _add_records(self, command: AddRecords) -> RecordsAdded:
        queue, clock = self._queues[command.name], self.clock
        ids: list[int] = []
        added: list[bool] = []
        in_batch: dict[bytes, int] = {}
        for new in command.records:
            key = new.key
            if key is not None:
                known = in_batch.get(key)
                if known is None:
                    known = queue.known_key(key, clock)
                if known is not None:
                    ids.append(known)
                    added.append(False)
                    continue
            record, ready = queue.add_record(Record(0, new.priority, new.payload, 0, new.not_before), clock)
            self._placed(queue, record, ready)
            if key is not None:
                in_batch[key] = record.id
                queue.remember_key(key, record.id, clock)
            ids.append(record.id)
            added.append(True)
        return RecordsAdded(tuple(ids), tuple(added))

    def _return_records(self, command: ReturnRecords) -> RecordsReturned:
        queue, clock = self._queues[command.name], self.clock
        delivery = queue.policies.delivery
        outcomes: list[str] = []
        for record_id, delay in command.returns:
            record = queue.take(record_id)
            if record is None:
                outcomes.append(ReturnOutcome.MISSING)
                continue
            failures = record.failed_deliveries + 1
            if delivery.max_deliveries is not None and failures >= delivery.max_deliveries:
                dead_letters = self._queues.get(delivery.dead_letter_queue or "")
                if dead_letters is not None and dead_letters.policies.accepts_priority(record.priority):
                    origin = record.origin or Origin(queue.name, record.id)
                    letter, ready = dead_letters.add_record(
                        Record(0, record.priority, record.payload, failures, 0, origin), clock)
                    self._placed(dead_letters, letter, ready)
                    self.dead_lettered[queue.name] = self.dead_lettered.get(queue.name, 0) + 1
                    outcomes.append(ReturnOutcome.DEAD_LETTERED)
                    continue
            if delay == POLICY_DELAY:
                delay = delivery.retry_delay(failures)
            returned = Record(record.id, record.priority, record.payload, failures,
                              clock + delay if delay else 0, record.origin)
            ready = queue.place(returned, clock)
            self._placed(queue, returned, ready)
            outcomes.append(ReturnOutcome.READY if ready else ReturnOutcome.DELAYED)
        return RecordsReturned(tuple(outcomes))

    def _move_records(self, command: MoveRecords) -> RecordsMoved:
        source, clock, moved = self._queues[command.name], self.clock, 0
        for record_id in command.record_ids:
            record = source.take(record_id)
            if record is None:
                continue
            target = self._queues.get(record.origin.queue) if record.origin is not None else None
            if target is None or target is source or not target.policies.accepts_priority(record.priority):
                self._placed(source, record, source.place(record, clock))  # stays where it is
                continue
            added, ready = target.add_record(Record(0, record.priority, record.payload), clock)
            self._placed(target, added, ready)
            moved += 1
        return RecordsMoved(moved)

    def _placed(self, queue: Queue, record: Record, ready: bool) -> None:
        if ready:
            self.woken.append(queue.name)
        else:
            heapq.heappush(self._due, (record.not_before, queue.name))
            self.delayed_added = True

    def _advance(self, now: int) -> None:
        """Move the clock to ``now`` (never back) and make the records due by then ready."""
        if now <= self.clock:
            return
        self.clock = now
        due = self._due
        while due and due[0][0] <= now:
            _, name = heapq.heappop(due)
            queue = self._queues.get(name)
            if queue is None:
                continue
            promoted = queue.promote(now)
            if promoted:
                self.woken.extend([name] * promoted)
                later = queue.next_due()
                if later is not None:  # keeps every queue's earliest due time in the heap (one snapshot
                    heapq.heappush(due, (later, name))  # restore puts only that one there)


def _missing(name: str) -> Failure:
    return Failure(ErrorCode.QUEUE_DOES_NOT_EXIST, f"queue {name!r} does not exist")
