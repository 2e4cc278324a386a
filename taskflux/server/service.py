"""The queue operations every client interface offers, with one set of guarantees.

The binary protocol, REST and gRPC all go through here, so they carry the same semantics: a write is
answered only once it is committed (fsynced on a majority); a dequeued record is reserved on the leader
and removed for good only when its removal commits, and put back (Nack) when the delivery fails. Reads
are linearizable (ReadIndex).

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
from dataclasses import dataclass

from gevent import GreenletExit
from gevent.event import AsyncResult

from taskflux.domain.commands import AddRecord, CreateQueue, DeleteQueue, RemoveRecord
from taskflux.domain.errors import ErrorCode
from taskflux.domain.names import is_valid_queue_name
from taskflux.domain.queue import Queue
from taskflux.domain.records import Record
from taskflux.domain.results import Failure, RecordRemoved, Result
from taskflux.server import metrics as outcomes
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


@dataclass(frozen=True, slots=True)
class Reserved:
    """A record handed out and reserved on this leader until it is removed or released."""

    queue: Queue
    record: Record


class QueueService:
    """Queue operations over a node (the leader serves them; other nodes raise NotLeader)."""

    def __init__(self, node: Node) -> None:
        self.node = node

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
            self.node.propose(add, reply)

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

    def reserve(self, name: str, wait: float | None) -> Reserved | Failure | None:
        """Reserve the most urgent record of ``name``, waiting up to ``wait`` seconds (None: without
        limit) for one. None when none came in time."""
        if not is_valid_queue_name(name):
            return INVALID_NAME
        deadline = None if wait is None else time.monotonic() + wait
        while True:
            self.node.ensure_serving()
            self.node.ensure_lease()  # a deposed leader must not hand out records (see docs/operations.md)
            queue = self.node.manager.get(name)
            if queue is None:
                return NO_SUCH_QUEUE
            record = queue.reserve()
            if record is not None:
                return Reserved(queue, record)
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            self.node.wait_for_record(name, remaining)

    def remove(self, reserved: Reserved) -> Result:
        """Ack: remove a reserved record for good, once committed. If the removal cannot be known to
        have committed (any exception, the caller's greenlet killed included), the record is put back
        first and the exception re-raised."""
        result = AsyncResult()
        self.start_remove(reserved, result)
        try:
            return result.get()
        except BaseException:
            self.release(reserved)  # a second release (the removal failed) does nothing
            raise

    def start_remove(self, reserved: Reserved, reply: Reply) -> None:
        """``remove`` without waiting: the outcome goes to ``reply``; the record is put back first when the
        removal cannot be known to have committed."""
        queue, record = reserved.queue, reserved.record
        try:
            self.node.propose(RemoveRecord(queue.name, queue.incarnation, record.id), _Removal(self, reserved, reply))
        except BaseException:
            self.release(reserved)
            raise

    def remove_before_showing(self, reserved: Reserved) -> Result | None:
        """An immediate dequeue's removal, for a record about to be shown to a client that has no way to
        ack it. The removal's result once committed; None when its outcome is unknown (not committed in
        time, the node stopped after proposing it, the request's greenlet killed, anything unexpected):
        the record is then back in the queue but must be shown anyway, since the removal may still
        commit — at worst it is delivered twice, never silently gone. Raises NotLeader or NodeStopped only
        when the removal certainly did not happen (the record stays in the queue for the next consumer)."""
        try:
            return self.remove(reserved)
        except OutcomeUnknown:
            return None
        except (NotLeader, NodeStopped):
            raise
        except GreenletExit:
            return None  # the server is stopping: the answer may still be written before it closes
        except Exception:
            logger.exception("the removal of record %d of queue %r failed: the record is shown anyway",
                             reserved.record.id, reserved.queue.name)
            return None

    def release(self, reserved: Reserved) -> None:
        """Nack: put a reserved record back (same id and priority) and wake a waiting consumer."""
        if reserved.queue.release(reserved.record.id):
            self.node.record_available(reserved.queue.name)


class _Removal:
    """The outcome of a removal on its way to the requester's reply: the record is put back first when the
    removal failed; a queue deleted meanwhile counts as removed (the record is gone either way)."""

    __slots__ = ("reply", "reserved", "service")

    def __init__(self, service: QueueService, reserved: Reserved, reply: Reply) -> None:
        self.service = service
        self.reserved = reserved
        self.reply = reply

    def set(self, result: Result) -> None:
        if isinstance(result, Failure) and result.code is ErrorCode.QUEUE_DOES_NOT_EXIST:
            result = RecordRemoved(True)
        self.reply.set(result)

    def set_exception(self, error: BaseException) -> None:
        self.service.release(self.reserved)
        self.reply.set_exception(error)
