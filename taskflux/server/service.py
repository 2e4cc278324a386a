"""The queue operations every client interface offers, with one set of guarantees.

The binary protocol, REST and gRPC all go through here, so they carry the same semantics: a write is
answered only once it is committed (fsynced on a majority); a dequeued record is reserved on the leader
and removed for good only when its removal commits, and put back (Nack) when the delivery fails. Reads
are linearizable (ReadIndex). Every method may raise NotLeader (certainly not executed), CommitTimeout
(outcome unknown) or NodeStopped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from taskflux.domain.commands import AddRecord, CreateQueue, DeleteQueue, RemoveRecord
from taskflux.domain.errors import ErrorCode
from taskflux.domain.names import is_valid_queue_name
from taskflux.domain.queue import Queue
from taskflux.domain.records import Record
from taskflux.domain.results import Failure, RecordRemoved, Result
from taskflux.server.node import CommitTimeout, Node, NodeStopped, NotLeader

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
        if not is_valid_queue_name(name):
            return INVALID_NAME
        add = AddRecord(name, priority, payload)
        self.node.ensure_serving()
        refusal = self.node.manager.check(add)
        return refusal if refusal is not None else self.node.submit(add)

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
        have committed, the record is put back first and the error re-raised."""
        queue, record = reserved.queue, reserved.record
        try:
            result = self.node.submit(RemoveRecord(queue.name, queue.incarnation, record.id))
        except (NotLeader, NodeStopped, CommitTimeout):
            self.release(reserved)
            raise
        if isinstance(result, Failure) and result.code is ErrorCode.QUEUE_DOES_NOT_EXIST:
            return RecordRemoved(True)  # the queue was deleted meanwhile: the record is gone either way
        return result

    def release(self, reserved: Reserved) -> None:
        """Nack: put a reserved record back (same id and priority) and wake a waiting consumer."""
        if reserved.queue.release(reserved.record.id):
            self.node.record_available(reserved.queue.name)
