"""The queue operations every client interface offers, with one set of guarantees.

The binary protocol, REST and gRPC all go through here, so they carry the same semantics: a write is
answered only once it is committed (fsynced on a majority); a dequeued record is handed out as a
``Delivery``, reserved on the leader until it ends: acked (removed for good once the removal commits), or
failed (nacked, abandoned by its consumer, its lease expired: a logged failed delivery, which may delay the
record or move it to a dead-letter queue), or put back uncounted (this node stopped leading, or the record
was never shown). Reads are linearizable (ReadIndex). Adapters talk to nothing else: the service also
counts the interface's record metrics.

Every method may raise one of ``SERVICE_ERRORS``; ``ending_of`` sorts them into the three ways a request
can end without an answer, which every interface reports the same way in its own terms:

* ``NOT_LEADER`` (NotLeader): certainly not executed; retry on the leader;
* ``STOPPING`` (NodeStopped before anything was proposed): certainly not executed; retry on another node;
* ``OUTCOME_UNKNOWN`` (CommitTimeout, StoppedAfterProposing: the entry was proposed, peers may hold it and
  a next leader may commit it): the write may or may not take effect, so a blind retry may apply it twice.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from gevent import GreenletExit
from gevent.event import AsyncResult

from taskflux.domain.commands import (
    MAX_BATCH_IDS,
    POLICY_DELAY,
    AddRecord,
    AddRecords,
    CreateQueue,
    DeleteQueue,
    MoveRecords,
    NewRecord,
    RemoveRecord,
    RemoveRecords,
    ReturnRecords,
    invalid_record,
)
from taskflux.domain.errors import ErrorCode
from taskflux.domain.names import is_valid_queue_name
from taskflux.domain.policies import MAX_DELAY_MS
from taskflux.domain.queue import Queue
from taskflux.domain.records import Record
from taskflux.domain.results import (
    Failure,
    RecordAdded,
    RecordRemoved,
    RecordsAdded,
    RecordsMoved,
    RecordsRemoved,
    RecordsReturned,
    Result,
    ReturnOutcome,
)
from taskflux.server import metrics as outcomes
from taskflux.server.metrics import InterfaceMetrics
from taskflux.server.node import Node, NodeStopped, NotLeader, OutcomeUnknown, Reply

logger = logging.getLogger("taskflux.service")

SERVICE_ERRORS = (NotLeader, NodeStopped, OutcomeUnknown)
OUTCOME_UNKNOWN_MESSAGE = "the write may or may not take effect: check before retrying (a blind retry may repeat it)"
STOPPING_MESSAGE = "the node is stopping; nothing was done: retry on another node"


class Ending(enum.Enum):
    """How a request ended when the service raised instead of answering."""

    NOT_LEADER = "not_leader"
    STOPPING = "stopping"
    OUTCOME_UNKNOWN = "outcome_unknown"


def ending_of(error: NotLeader | NodeStopped | OutcomeUnknown) -> Ending:
    """The ending a service error stands for (StoppedAfterProposing is a NodeStopped whose write may
    still commit: its outcome is unknown)."""
    if isinstance(error, OutcomeUnknown):
        return Ending.OUTCOME_UNKNOWN
    if isinstance(error, NodeStopped):
        return Ending.STOPPING
    return Ending.NOT_LEADER


def outcome_unknown_message(error: OutcomeUnknown) -> str:
    """What every interface tells a client whose write has an unknown outcome."""
    return f"outcome unknown ({error}): {OUTCOME_UNKNOWN_MESSAGE}"


def metrics_outcome(error: NotLeader | NodeStopped | OutcomeUnknown) -> str:
    """The request-metrics outcome of a service error."""
    if isinstance(error, OutcomeUnknown):  # first: StoppedAfterProposing is a NodeStopped too
        return outcomes.TIMEOUT
    return outcomes.NOT_LEADER if isinstance(error, NotLeader) else outcomes.STOPPED


INVALID_NAME = Failure(ErrorCode.INVALID_QUEUE_NAME)
NO_SUCH_QUEUE = Failure(ErrorCode.QUEUE_DOES_NOT_EXIST)
RELEASED = "released"  # a failed delivery that could not be logged: the record is back, its count unchanged
MAX_PEEK = 1000


class RecordSpec(Protocol):
    """What ``QueueService.add_records`` reads of a record to enqueue (a ``RecordIn``, or the binary protocol's
    ``EnqueueItem`` as it was decoded); an empty key is no key."""

    @property
    def priority(self) -> int: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def delay_ms(self) -> int: ...
    @property
    def not_before_ms(self) -> int: ...


@dataclass(frozen=True, slots=True)
class RecordIn:
    """A record to enqueue through ``QueueService.add_records``: an idempotency key, and a delay or a time
    (ms since the epoch) before which it is not handed out, are optional."""

    priority: int
    payload: bytes
    key: bytes | None = None
    delay_ms: int = 0
    not_before_ms: int = 0


class QueueService:
    """Queue operations over a node (the leader serves them; other nodes raise NotLeader), counting the record
    metrics of one interface (``counters``)."""

    def __init__(self, node: Node, counters: InterfaceMetrics | None = None) -> None:
        self.node = node
        self.counters = counters

    def for_interface(self, counters: InterfaceMetrics | None) -> QueueService:
        """The same operations, counted for another interface."""
        return QueueService(self.node, counters)

    def now(self) -> int:
        """Leader time for a new entry: the wall clock, never behind the state machine's clock."""
        return self.node.leader_time()

    # --- writes ---

    def enqueue(self, name: str, priority: int, payload: bytes) -> Result:
        """Add a record; the result once committed (or the policy violation / failure that refused it)."""
        result = AsyncResult()
        self.start_enqueue(name, priority, payload, result)
        return result.get()

    def start_enqueue(self, name: str, priority: int, payload: bytes, reply: Reply) -> None:
        """``enqueue`` without waiting: its result (a refusal included) goes to ``reply``, once — from the node
        loop as a rule, so that a session can have its answer written without being woken. Raises NotLeader
        (nothing was done) like ``enqueue``."""
        if not is_valid_queue_name(name):
            reply.set(INVALID_NAME)
            return
        add = AddRecord(name, priority, payload)
        self.node.ensure_serving()
        refusal = self.node.manager.check(add)
        if refusal is not None:
            reply.set(refusal)
        else:
            self.node.propose(add, reply if self.counters is None else _Counted(reply, self.counters))

    def add_records(self, name: str, records: Sequence[RecordSpec]) -> Result:
        """Enqueue records at once, all or nothing (one log entry): RecordsAdded once committed, or the failure
        or policy violation that refused them all. A record whose key the queue remembers adds nothing and
        gets the first enqueue's id; when every record's key is known nothing is proposed."""
        result = AsyncResult()
        self.start_add_records(name, records, result)
        return result.get()

    def start_add_records(self, name: str, records: Sequence[RecordSpec], reply: Reply) -> None:
        """``add_records`` without waiting: its result (a refusal included) goes to ``reply``, once — from the node
        loop when something is proposed. Raises NotLeader (nothing was done)."""
        if not is_valid_queue_name(name):
            reply.set(INVALID_NAME)
            return
        self.node.ensure_serving()
        now = self.now()
        new_records = []
        for record in records:
            not_before = _not_before(record, now)
            if isinstance(not_before, Failure):
                reply.set(not_before)
                return
            new_records.append(NewRecord(record.priority, record.payload, record.key or None, not_before))
        command = AddRecords(name, now, tuple(new_records))
        answer: Result | None = command.validate() or self.node.manager.check(command)
        if answer is None:
            answer = self._known(command)  # a retry of an enqueue that committed: nothing to propose
        if answer is not None:
            reply.set(answer)
        else:
            self.node.propose(command, reply if self.counters is None else _Counted(reply, self.counters))

    def _known(self, command: AddRecords) -> RecordsAdded | None:
        """The answer when every record's key is remembered (a retry of an enqueue that committed)."""
        queue = self.node.manager.get(command.name)
        if queue is None:
            return None
        clock = self.node.manager.clock
        ids = []
        for record in command.records:
            known = None if record.key is None else queue.known_key(record.key, clock)
            if known is None:
                return None
            ids.append(known)
        return RecordsAdded(tuple(ids), (False,) * len(ids))

    def create_queue(self, command: CreateQueue) -> Result:
        invalid = command.validate()
        if invalid is not None:
            return invalid
        return self._write(command)

    def delete_queue(self, name: str) -> Result:
        if not is_valid_queue_name(name):
            return INVALID_NAME
        return self._write(DeleteQueue(name))

    def _write(self, command: CreateQueue | DeleteQueue) -> Result:
        self.node.ensure_serving()
        refusal = self.node.manager.check(command)
        return refusal if refusal is not None else self.node.submit(command)

    def redrive(self, name: str, limit: int) -> Result:
        """Move up to ``limit`` of the next records of dead-letter queue ``name`` back to their origin queues (one
        log entry): RecordsMoved once committed (records without a usable origin stay)."""
        if not 1 <= limit <= MAX_BATCH_IDS:
            return invalid_record(f"move 1-{MAX_BATCH_IDS} records at once, not {limit}")
        queue = self.get_queue(name)
        if isinstance(queue, Failure):
            return queue
        records = [record for record in queue.first(limit) if record.origin is not None]
        if not records:
            return RecordsMoved(0)
        return self.node.submit(MoveRecords(name, queue.incarnation, self.now(), tuple(r.id for r in records)))

    # --- reads ---

    def get_queue(self, name: str) -> Queue | Failure:
        """The queue, read linearizably (do not keep it across a blocking call: it may be deleted)."""
        if not is_valid_queue_name(name):
            return INVALID_NAME
        self.node.read_barrier()
        queue = self.node.manager.get(name)
        return NO_SUCH_QUEUE if queue is None else queue

    def list_queues(self) -> list[Queue]:
        self.node.read_barrier()
        return list(self.node.manager.queues())

    def peek(self, name: str, limit: int) -> list[Record] | Failure:
        """Up to ``limit`` (1-MAX_PEEK) ready records in the order dequeues would get them, left in place."""
        if not 1 <= limit <= MAX_PEEK:
            return invalid_record(f"peek 1-{MAX_PEEK} records, not {limit}")
        queue = self.get_queue(name)
        return queue if isinstance(queue, Failure) else queue.first(limit)

    # --- deliveries ---

    def reserve(self, name: str, wait: float | None) -> Delivery | Failure | None:
        """Hand out the most urgent ready record of ``name``, waiting up to ``wait`` seconds (None: without
        limit) for one. None when none came in time."""
        taken = self.reserve_many(name, 1, wait)
        if isinstance(taken, Failure):
            return taken
        return taken[0] if taken else None

    def reserve_many(self, name: str, limit: int, wait: float | None) -> list[Delivery] | Failure:
        """Hand out up to ``limit`` ready records of ``name`` in dequeue order, waiting up to ``wait`` seconds
        (None: without limit) for the first; an empty list when none came in time."""
        if not is_valid_queue_name(name):
            return INVALID_NAME
        deadline = None if wait is None else time.monotonic() + wait
        while True:
            self.node.ensure_serving()
            self.node.ensure_lease()  # a deposed leader must not hand out records (see docs/operations.md)
            queue = self.node.manager.get(name)
            if queue is None:
                return NO_SUCH_QUEUE
            taken: list[Delivery] = []
            while len(taken) < limit:
                record = queue.reserve()
                if record is None:
                    break
                taken.append(Delivery(self, queue, record))
            if taken:
                if self.counters is not None:
                    self.counters.dequeued(len(taken))
                return taken
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return []
            self.node.wait_for_record(name, remaining)

    def ack_all(self, deliveries: Sequence[Delivery]) -> Result:
        """Ack several deliveries of one queue in one log entry (RecordsRemoved once committed). If the removal
        cannot be known to have committed, every record is put back first and the exception re-raised."""
        result = AsyncResult()
        self.start_ack_all(deliveries, result)
        try:
            outcome = result.get()
        except BaseException:
            for delivery in deliveries:
                delivery._release()  # once only: the removal's failure may have put them back already
            raise
        return RecordsRemoved(int(outcome.found)) if isinstance(outcome, RecordRemoved) else outcome

    def start_ack_all(self, deliveries: Sequence[Delivery], reply: Reply) -> None:
        """``ack_all`` without waiting: the outcome goes to ``reply`` (RecordRemoved for one delivery, RecordsRemoved
        for several); the records are put back first when the removal cannot be known to have committed."""
        _check_batch(deliveries)
        queue = deliveries[0].queue
        for delivery in deliveries:
            delivery.claim()
        command: RemoveRecord | RemoveRecords
        if len(deliveries) == 1:  # the original's entry, for the original's flows
            command = RemoveRecord(queue.name, queue.incarnation, deliveries[0].record.id)
        else:
            command = RemoveRecords(queue.name, queue.incarnation, tuple(d.record.id for d in deliveries))
        try:
            self.node.propose(command, _Removal(self, tuple(deliveries), reply))
        except BaseException:
            for delivery in deliveries:
                delivery._release()
            raise

    def ack_all_before_showing(self, deliveries: Sequence[Delivery]) -> Result | None:
        """``Delivery.ack_before_showing`` for several deliveries of one queue, in one log entry."""
        return _before_showing(lambda: self.ack_all(deliveries), deliveries)

    def fail_all(self, deliveries: Sequence[Delivery], delay_ms: int = POLICY_DELAY) -> tuple[str, ...]:
        """Failed deliveries of one queue, logged in one entry: each record's count goes up and it goes back
        (after ``delay_ms``, or its queue's retry delay) or to the dead-letter queue. What became of each
        record (a ``ReturnOutcome``, or RELEASED: the failure could not be logged, the record is back as it
        was). Waits for the commit; never raises for the node's sake."""
        result = AsyncResult()
        self.start_fail_all(deliveries, delay_ms, result)
        return result.get().outcomes

    def start_fail_all(self, deliveries: Sequence[Delivery], delay_ms: int, reply: Reply | None) -> None:
        """``fail_all`` without waiting: a RecordsReturned goes to ``reply`` (None: nowhere), never an exception:
        MISSING for each record when the queue is gone, RELEASED when the failures could not be logged (the
        records are then back uncounted)."""
        if not (delay_ms == POLICY_DELAY or 0 <= delay_ms <= MAX_DELAY_MS):
            raise ValueError(f"a retry delay is 0-{MAX_DELAY_MS} ms, not {delay_ms}")
        _check_batch(deliveries)
        queue = deliveries[0].queue
        for delivery in deliveries:
            delivery.claim()
        returns = tuple((delivery.record.id, delay_ms) for delivery in deliveries)
        returned = _Returned(self, tuple(deliveries), reply)
        try:
            self.node.propose(ReturnRecords(queue.name, queue.incarnation, self.now(), returns), returned)
        except (NotLeader, NodeStopped):
            returned.set_exception(None)

    def _put_back(self, queue: Queue, record: Record) -> None:
        """Return a reserved record as it was (no failed delivery counted) and wake a waiting consumer."""
        if queue.release(record.id):
            self.node.record_available(queue.name)


class Delivery:
    """A record handed to a consumer, reserved on this leader until the delivery ends — once: ``ack`` (removed
    for good), ``fail`` (a failed delivery, logged and counted), ``put_back`` (back as it was: never shown, or
    the end could not be logged). Ending it twice does nothing the second time."""

    __slots__ = ("ended", "queue", "record", "released", "service")

    def __init__(self, service: QueueService, queue: Queue, record: Record) -> None:
        self.service = service
        self.queue = queue
        self.record = record
        self.ended = False
        self.released = False

    def claim(self) -> None:
        """Mark the delivery as ending (by the caller); a second end raises."""
        if self.ended:
            raise RuntimeError(f"the delivery of record {self.record.id} of {self.queue.name!r} already ended")
        self.ended = True

    def ack(self) -> Result:
        """Remove the record for good; the result once committed. If the removal cannot be known to have
        committed (any exception, the caller's greenlet killed included), the record is put back first and
        the exception re-raised."""
        result = AsyncResult()
        self.start_ack(result)
        try:
            return result.get()
        except BaseException:
            self._release()  # once only: the removal's failure may have put it back already
            raise

    def start_ack(self, reply: Reply) -> None:
        """``ack`` without waiting: the outcome goes to ``reply``; the record is put back first when the
        removal cannot be known to have committed."""
        self.service.start_ack_all((self,), reply)

    def ack_before_showing(self) -> Result | None:
        """An immediate dequeue's removal, for a record about to be shown to a client that has no way to
        ack it. The removal's result once committed; None when its outcome is unknown (not committed in
        time, the node stopped after proposing it, the request's greenlet killed, anything unexpected):
        the record is then back in the queue but must be shown anyway, since the removal may still
        commit — at worst it is delivered twice, never silently gone. Raises NotLeader or NodeStopped only
        when the removal certainly did not happen (the record stays in the queue for the next consumer)."""
        return _before_showing(self.ack, (self,))

    def fail(self, delay_ms: int = POLICY_DELAY) -> str:
        """A nack: the delivery failed; the record goes back after ``delay_ms`` (default: its queue's retry
        policy) or to the dead-letter queue. What became of it (``ReturnOutcome`` or RELEASED), once logged."""
        return self.service.fail_all((self,), delay_ms)[0]

    def abandon(self) -> None:
        """The consumer is gone (disconnected, its stream ended, its lease expired) while it held the record: a
        failed delivery, logged in the background."""
        if not self.ended:
            self.service.start_fail_all((self,), POLICY_DELAY, None)

    def put_back(self) -> None:
        """Back in the queue as it was, its count unchanged: the record was never shown, or its delivery's end
        could not be logged."""
        if not self.ended:
            self.ended = True
            self._release()

    def _release(self) -> None:
        """Put the record back, at most once: after that it may be another consumer's reservation."""
        if not self.released:
            self.released = True
            self.service._put_back(self.queue, self.record)


class _Counted:
    """A reply that counts the enqueued records when their enqueue commits."""

    __slots__ = ("counters", "reply")

    def __init__(self, reply: Reply, counters: InterfaceMetrics) -> None:
        self.reply = reply
        self.counters = counters

    def set(self, result: Result) -> None:
        if isinstance(result, RecordAdded):
            self.counters.enqueued()
        elif isinstance(result, RecordsAdded):
            self.counters.enqueued(sum(result.added))
        self.reply.set(result)

    def set_exception(self, error: BaseException) -> None:
        self.reply.set_exception(error)


class _Removal:
    """The outcome of acks on their way to the requester's reply: the records are put back first when the removal
    failed; a queue deleted meanwhile counts as removed (the records are gone either way)."""

    __slots__ = ("deliveries", "reply", "service")

    def __init__(self, service: QueueService, deliveries: tuple[Delivery, ...], reply: Reply) -> None:
        self.service = service
        self.deliveries = deliveries
        self.reply = reply

    def set(self, result: Result) -> None:
        count = len(self.deliveries)
        if isinstance(result, Failure) and result.code is ErrorCode.QUEUE_DOES_NOT_EXIST:
            result = RecordRemoved(True) if count == 1 else RecordsRemoved(count)
        counters = self.service.counters
        if counters is not None and isinstance(result, RecordRemoved | RecordsRemoved):
            counters.acked(count)
        self.reply.set(result)

    def set_exception(self, error: BaseException) -> None:
        for delivery in self.deliveries:
            delivery._release()
        self.reply.set_exception(error)


class _Returned:
    """The outcome of failed deliveries on their way to a reply: counted as nacked when logged; put back as
    they were when the entry could not be logged (a leader change, the node stopping), answered as an empty
    RecordsReturned."""

    __slots__ = ("deliveries", "reply", "service")

    def __init__(self, service: QueueService, deliveries: tuple[Delivery, ...], reply: Reply | None) -> None:
        self.service = service
        self.deliveries = deliveries
        self.reply = reply

    def set(self, result: Result) -> None:
        if not isinstance(result, RecordsReturned):  # the queue is gone, and its records with it
            result = RecordsReturned((ReturnOutcome.MISSING,) * len(self.deliveries))
        elif self.service.counters is not None:
            self.service.counters.nacked(len(self.deliveries))
        if self.reply is not None:
            self.reply.set(result)

    def set_exception(self, error: BaseException | None) -> None:
        for delivery in self.deliveries:
            delivery._release()
        if self.reply is not None:
            self.reply.set(RecordsReturned((RELEASED,) * len(self.deliveries)))


def _check_batch(deliveries: Sequence[Delivery]) -> None:
    if not 1 <= len(deliveries) <= MAX_BATCH_IDS or len({id(d.queue) for d in deliveries}) != 1:
        raise ValueError(f"end 1-{MAX_BATCH_IDS} deliveries of one queue at once")


def _before_showing(ack: Callable[[], Result], deliveries: Sequence[Delivery]) -> Result | None:
    """The result of ``ack`` for records about to be shown; None when its outcome is unknown (see
    ``Delivery.ack_before_showing``)."""
    try:
        return ack()
    except OutcomeUnknown:
        return None
    except (NotLeader, NodeStopped):
        raise
    except GreenletExit:
        return None  # the server is stopping: the answer may still be written before it closes
    except Exception:
        logger.exception("the removal of %d record(s) of queue %r failed: shown anyway",
                         len(deliveries), deliveries[0].queue.name)
        return None


def _not_before(record: RecordSpec, now: int) -> int | Failure:
    """The leader time before which ``record`` is not handed out (0: none), or why its delay is invalid."""
    if not 0 <= record.delay_ms <= MAX_DELAY_MS:
        return invalid_record(f"a delay is 0-{MAX_DELAY_MS} ms, not {record.delay_ms}")
    if record.not_before_ms < 0 or record.not_before_ms > now + MAX_DELAY_MS:
        return invalid_record(f"not_before must be within {MAX_DELAY_MS // 86_400_000} days from now")
    if record.delay_ms == 0 and record.not_before_ms <= now:
        return 0
    return max(record.not_before_ms, now + record.delay_ms)
