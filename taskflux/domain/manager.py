"""The queue manager: TaskFlux's replicated state machine.

``apply`` is deterministic: the same commands in the same order give the same state and the same results
on every node. It re-checks every rule, so two requests that raced on the leader (two enqueues for the
last free slot, two creations of one name) get the same outcome everywhere. ``check`` runs the same rules
without changing anything, for the leader to refuse a request before proposing it.
"""

from __future__ import annotations

from collections.abc import Iterator

from taskflux.domain.commands import AddRecord, Command, CreateQueue, DeleteQueue, RemoveRecord, invalid_name
from taskflux.domain.errors import ErrorCode, Implementation
from taskflux.domain.names import DEFAULT_QUEUE, is_valid_queue_name
from taskflux.domain.policies import QueuePolicies
from taskflux.domain.queue import Queue
from taskflux.domain.results import OK, Failure, PolicyViolation, RecordAdded, RecordRemoved, Result

DEFAULT_INCARNATION = 0


class QueueManager:
    """Every queue of a node, by name. A new manager holds the empty default queue ``""``."""

    __slots__ = ("_queues", "next_incarnation")

    def __init__(self, with_default_queue: bool = True) -> None:
        self._queues: dict[str, Queue] = {}
        self.next_incarnation = DEFAULT_INCARNATION + 1
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

    # --- the state machine ---

    def check(self, command: Command) -> Failure | PolicyViolation | None:
        """Why ``apply(command)`` would be refused now, or None when it would take effect."""
        if isinstance(command, AddRecord):
            queue = self._queues.get(command.name)
            if queue is None:
                return _missing(command.name)
            return queue.policies.check_enqueue(queue.stored, command.priority, len(command.payload))
        if isinstance(command, RemoveRecord):
            queue = self._queues.get(command.name)
            if queue is None or queue.incarnation != command.incarnation:
                return _missing(command.name)
            return None
        if isinstance(command, CreateQueue):
            failure = command.validate()
            if failure is None and command.name in self._queues:
                failure = Failure(ErrorCode.QUEUE_ALREADY_EXISTS, f"queue {command.name!r} already exists")
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
        refusal = self.check(command)
        if refusal is not None:
            return refusal
        if isinstance(command, AddRecord):
            record = self._queues[command.name].add(command.priority, command.payload)
            return RecordAdded(record.id)
        if isinstance(command, RemoveRecord):
            return RecordRemoved(self._queues[command.name].remove(command.record_id))
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


def _missing(name: str) -> Failure:
    return Failure(ErrorCode.QUEUE_DOES_NOT_EXIST, f"queue {name!r} does not exist")
