"""The blocking TaskFlux client: leader discovery, NotLeader following, reconnection, deadlines, safe retries."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NoReturn, TypeVar

from taskflux.client.connection import (
    ConnectFailed,
    Connection,
    ReceiveFailed,
    SendFailed,
    remaining,
)
from taskflux.client.errors import (
    POLICY_CLASSES,
    GenericPolicyViolation,
    InvalidQueueName,
    NotLeaderError,
    OutcomeUnknown,
    PolicyViolation,
    QueueAlreadyExists,
    QueueDoesNotExist,
    ServerError,
    TaskFluxConnectionError,
    TaskFluxError,
    TaskFluxProtocolError,
    TaskFluxTimeoutError,
    server_error,
)
from taskflux.domain.errors import INT32_MAX, INT64_MAX, INT64_MIN, Implementation
from taskflux.domain.policies import DEFAULT_DELIVERY, MAX_DELAY_MS, Backoff
from taskflux.domain.records import Record
from taskflux.values import parse_endpoint
from taskflux.wire.client_protocol import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    Ack,
    AddedResponse,
    ClusterMetadataRequest,
    ClusterMetadataResponse,
    CommandErrorResponse,
    CommandRequest,
    CommandResponse,
    CountCommand,
    CountResponse,
    CreateQueueCommand,
    CreateQueueWithPoliciesCommand,
    DeleteQueueCommand,
    DequeueCommand,
    DequeueManyCommand,
    DequeueResponse,
    EnqueueCommand,
    EnqueueItem,
    EnqueueManyCommand,
    ErrorResponse,
    ListQueuesCommand,
    ListQueuesResponse,
    Nack,
    NackAfter,
    NotLeader,
    Ok,
    Packet,
    PeekCommand,
    PolicyViolationResponse,
    RecordsResponse,
    encode,
    parse_queue_metadata,
)
from taskflux.wire.primitives import MAX_QUEUE_NAME_BYTES

T = TypeVar("T")

_ACK = encode(Ack())
_NACK = encode(Nack())
_METADATA_REQUEST = encode(ClusterMetadataRequest())
_MAX_TIMEOUT_MS = 2**32 - 2  # the largest wait the server honours as a wait (docs/client-protocol.md §10.4)
MAX_BATCH = 1000  # records in one enqueue_many, dequeue_many or peek


@dataclass(frozen=True, slots=True)
class QueueSummary:
    """One queue as ListQueues reports it: name, stored count and limits (None = no limit)."""

    name: str
    count: int
    max_queue_size: int | None
    max_payload_size: int | None
    priority_range: tuple[int, int] | None
    metadata: dict[str, str]
    delayed: int | None = None  # None: the server speaks protocol 1.0 and does not say
    reserved: int | None = None


@dataclass(frozen=True, slots=True)
class NewRecord:
    """A record for :meth:`TaskFluxClient.enqueue_many`: ``key`` (default: a fresh random one) makes its enqueue
    idempotent; ``delay`` (seconds) or ``not_before`` (a Unix time) keeps it from consumers until then."""

    priority: int
    payload: bytes
    key: bytes | str | None = None
    delay: float = 0.0
    not_before: float | None = None


@dataclass(frozen=True, slots=True)
class PeekedRecord:
    """A record seen by :meth:`TaskFluxClient.peek`, left in its queue."""

    id: int
    priority: int
    payload: bytes
    failed_deliveries: int
    origin: tuple[str, int] | None = None  # a dead letter: the queue and id it had before


@dataclass(frozen=True, slots=True)
class ClusterMetadata:
    """Client endpoints of every node (index = node id), the leader's id (None if unknown), the answering node."""

    endpoints: tuple[str, ...]
    leader_id: int | None
    responding_id: int


class _NotLeader(Exception):
    """The node answered NotLeader: the command was not executed, follow the leader and retry."""

    def __init__(self, leader_id: int | None) -> None:
        super().__init__(leader_id)
        self.leader_id = leader_id


class _Retry(Exception):
    """The attempt failed in a way that is safe to retry (the command cannot have taken effect, or is a read)."""


class _Held:
    """Records handed out on one connection, reserved for this client until :meth:`ack` (removed for good) or
    :meth:`nack` (a failed delivery: they come back after their queue's retry delay, or go to its dead-letter
    queue); the connection is theirs until then. Records never settled are returned by the server when that
    connection closes (a failed delivery too)."""

    __slots__ = ("_client", "_connection", "_settled")

    def __init__(self, client: TaskFluxClient, connection: Connection) -> None:
        self._client = client
        self._connection: Connection | None = connection
        self._settled = False

    @property
    def settled(self) -> bool:
        """True once acked or nacked (successfully or not)."""
        return self._settled

    def _describe(self) -> str:
        raise NotImplementedError

    def _take_connection(self, what: str) -> Connection:
        if self._settled or self._connection is None:
            raise TaskFluxError(f"{self._describe()} was already acked or nacked; cannot {what}")
        self._settled = True
        connection, self._connection = self._connection, None
        return connection

    def ack(self, timeout: float | None = None) -> None:
        """Remove for good (committed on a majority before this returns).

        Raises :class:`TaskFluxConnectionError` if the Ack could not be sent and :class:`NotLeaderError` if the
        node lost its leadership (in both cases nothing was removed and will be delivered again), and
        :class:`OutcomeUnknown` if the Ack was sent but its answer was lost."""
        connection = self._take_connection("ack")
        deadline = time.monotonic() + (self._client.timeout if timeout is None else timeout)
        try:
            connection.send(_ACK, deadline)
        except SendFailed as exc:
            raise TaskFluxConnectionError(f"ack of {self._describe()} not sent ({exc}); it will be delivered "
                                          "again") from exc
        try:
            answer = connection.receive(deadline)
        except (ReceiveFailed, TaskFluxProtocolError) as exc:
            connection.close()
            raise OutcomeUnknown(f"ack of {self._describe()} sent but its answer was lost ({exc}): it may be "
                                 "delivered again") from exc
        if isinstance(answer, Ok):
            self._client._give_back(connection)
            return
        connection.close()
        if isinstance(answer, NotLeader):
            raise NotLeaderError(answer.leader_id)
        raise OutcomeUnknown(f"unexpected answer to the ack of {self._describe()}: {answer}")

    def nack(self, timeout: float | None = None, delay: float | None = None) -> None:
        """Give back: a failed delivery (the record comes back after ``delay`` seconds, by default its queue's
        retry delay, behind records of equal priority, or moves to its dead-letter queue). If the Nack cannot be
        completed the connection is closed, which makes the server return the records too, so this never raises
        for connection failures. A ``delay`` needs protocol 1.1 (at most 30 days)."""
        if delay is not None and not 0 <= delay <= MAX_DELAY_MS / 1000:
            raise ValueError(f"delay must be 0-{MAX_DELAY_MS // 1000} s, not {delay}")
        if delay is not None and self._connection is not None:
            self._client._require_extension(self._connection, "nack with a delay")
        connection = self._take_connection("nack")
        deadline = time.monotonic() + (self._client.timeout if timeout is None else timeout)
        try:
            connection.send(_NACK if delay is None else encode(NackAfter(round(delay * 1000))), deadline)
            answer = connection.receive(deadline)
        except (SendFailed, ReceiveFailed, TaskFluxProtocolError):
            connection.close()
            return
        if isinstance(answer, Ok):
            self._client._give_back(connection)
        else:
            connection.close()


class DequeuedRecord(_Held):
    """A record handed out by :meth:`TaskFluxClient.dequeue`: ack or nack it (see :class:`_Held`).
    ``failed_deliveries`` counts its earlier deliveries that ended without an ack (0 on a 1.0 server); ``origin``
    is the queue and id a dead letter had before."""

    __slots__ = ("failed_deliveries", "id", "origin", "payload", "priority", "queue")

    def __init__(self, client: TaskFluxClient, connection: Connection, queue: str, record_id: int, priority: int,
                 payload: bytes, failed_deliveries: int = 0, origin: tuple[str, int] | None = None) -> None:
        super().__init__(client, connection)
        self.queue = queue
        self.id = record_id
        self.priority = priority
        self.payload = payload
        self.failed_deliveries = failed_deliveries
        self.origin = origin

    def __repr__(self) -> str:
        return f"DequeuedRecord(queue={self.queue!r}, id={self.id}, priority={self.priority}, payload={self.payload!r})"

    def _describe(self) -> str:
        return f"record {self.id} of queue {self.queue!r}"


class DequeuedBatch(_Held):
    """Records handed out together by :meth:`TaskFluxClient.dequeue_many`: acked or nacked together."""

    __slots__ = ("queue", "records")

    def __init__(self, client: TaskFluxClient, connection: Connection, queue: str, records: Sequence[Record]) -> None:
        super().__init__(client, connection)
        self.queue = queue
        self.records: tuple[PeekedRecord, ...] = tuple(_peeked(record) for record in records)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[PeekedRecord]:
        return iter(self.records)

    def _describe(self) -> str:
        return f"{len(self.records)} records of queue {self.queue!r}"


class TaskFluxClient:
    """A blocking client of a TaskFlux cluster over the binary protocol. Not safe to share between threads or
    greenlets: use one client each.

    ``endpoints`` are ``host:port`` of nodes' client ports (any subset of the cluster). Every call has a deadline
    of ``timeout`` seconds for the whole operation, retries included (plus ``wait`` for a dequeue). The client
    finds the leader through ClusterMetadata, follows NotLeader, reconnects with a short back-off, and retries a
    command only when it cannot have taken effect; otherwise it raises :class:`OutcomeUnknown`.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        timeout: float = 5.0,
        *,
        backoff_initial: float = 0.02,
        backoff_max: float = 0.5,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        if not endpoints:
            raise ValueError("at least one endpoint (host:port) is needed")
        for endpoint in endpoints:
            try:
                parse_endpoint(endpoint)
            except ValueError as error:
                raise ValueError(f"bad endpoint: {error}") from None
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.endpoints: tuple[str, ...] = tuple(endpoints)
        self.timeout = timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._max_payload_bytes = max_payload_bytes
        self._connection: Connection | None = None
        self._cluster_endpoints: tuple[str, ...] = ()
        self._leader_id: int | None = None
        self._random = random.Random()
        self._closed = False
        self._original_endpoints: set[str] = set()  # nodes that speak protocol 1.0 only

    # --- lifecycle -----------------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Drop the current connection; the next call reconnects. Use it after interrupting a call from outside
        (the client already does this for interruptions it sees)."""
        self._drop()

    def close(self) -> None:
        """Close the connection. Records still awaiting ack keep their own connections."""
        self._closed = True
        self._drop()

    def __enter__(self) -> TaskFluxClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- operations ----------------------------------------------------------------------------------------------

    def enqueue(self, queue: str, priority: int, payload: bytes, *, key: bytes | str | None = None,
                delay: float = 0.0, not_before: float | None = None) -> int | None:
        """Add ``payload`` to ``queue`` with ``priority`` (Int64; smaller is more urgent) and return its id once the
        record is durable on a majority. Raises :class:`QueueDoesNotExist` or a :class:`PolicyViolation`.

        Exactly once: the enqueue carries an idempotency key (``key``, or a fresh random one), and an attempt whose
        outcome is unknown (the answer lost, a leader change, a commit timeout) is retried with the same key until
        the client's timeout: the queue remembers the key (its ``dedup_window``) and answers a retry with the first
        enqueue's id instead of adding the record again. If the time runs out while the outcome is unknown,
        :class:`OutcomeUnknown` carries the key: enqueue again with it to settle the matter. ``delay`` (seconds) or
        ``not_before`` (a Unix time) keeps the record from consumers until then.

        On a server that speaks only protocol 1.0 the original two-phase enqueue is used: no id (None), no key,
        no delay, and a lost answer raises :class:`OutcomeUnknown`."""
        item = NewRecord(priority, payload, key, delay, not_before)
        if not self._extended():
            if key is not None or delay or not_before is not None:
                raise TaskFluxError("keys and delays need a server that speaks protocol 1.1")
            self._enqueue_original(queue, priority, self._payload(payload))
            return None
        return self.enqueue_many(queue, [item])[0]

    def enqueue_many(self, queue: str, records: Iterable[NewRecord | tuple[int, bytes]]) -> list[int]:
        """Add up to 1000 records at once, all or nothing (one log entry), exactly once like :meth:`enqueue`; their
        ids in order (a record whose key the queue already knew gets the first enqueue's id). Needs a server that
        speaks protocol 1.1. Their payloads together count against the server's payload limit."""
        items = [_item(record if isinstance(record, NewRecord) else NewRecord(*record), self._max_payload_bytes)
                 for record in records]
        if not 1 <= len(items) <= MAX_BATCH:
            raise ValueError(f"enqueue 1-{MAX_BATCH} records at once, not {len(items)}")
        size = sum(len(item.payload) for item in items)
        if size > self._max_payload_bytes:  # the server would close the connection on the whole packet
            raise ValueError(f"the batch's payloads ({size} bytes) exceed max_payload_bytes={self._max_payload_bytes}")
        request = encode(CommandRequest(EnqueueManyCommand(_wire_name(queue), tuple(items))))
        sent = False

        def attempt(connection: Connection, deadline: float) -> list[int]:
            nonlocal sent
            self._require_extension(connection, "enqueue_many")
            sent = True
            answer = self._request(connection, request, deadline, idempotent=True)  # the keys make retries safe
            if isinstance(answer, ErrorResponse):
                raise server_error(answer.code, answer.message)
            if isinstance(answer, CommandResponse):
                if isinstance(answer.response, AddedResponse) and len(answer.response.records) == len(items):
                    return [record_id for record_id, _ in answer.response.records]
                _raise_command_error(answer)
            raise self._unexpected(connection, answer, "enqueue")

        try:
            return self._run(attempt, self._deadline())
        except (TaskFluxTimeoutError, TaskFluxConnectionError) as exc:
            if not sent:
                raise
            keys = [item.key for item in items]
            raise OutcomeUnknown(f"enqueue: no answer within {self.timeout} s ({exc}); enqueue again with the same "
                                 f"key(s) to settle it: {keys[:3]!r}{' ...' if len(keys) > 3 else ''}",
                                 keys=keys) from exc

    def _enqueue_original(self, queue: str, priority: int, payload: bytes) -> None:
        """The original's two-phase enqueue (protocol 1.0): a lost final answer is OutcomeUnknown."""
        request = encode(CommandRequest(EnqueueCommand(_wire_name(queue), priority, payload)))

        def attempt(connection: Connection, deadline: float) -> None:
            first = self._request(connection, request, deadline, idempotent=True)
            if isinstance(first, ErrorResponse):
                raise server_error(first.code, first.message)
            if isinstance(first, CommandResponse):
                _raise_command_error(first)
            if not isinstance(first, Ok):
                raise self._unexpected(connection, first, "enqueue")
            try:
                connection.send(_ACK, deadline)
            except SendFailed as exc:  # the Ack never left: nothing can have been inserted
                raise _Retry(str(exc)) from exc
            final = self._answer(connection, deadline, idempotent=False, what="enqueue")
            if isinstance(final, Ok):
                return
            if isinstance(final, ErrorResponse):
                raise server_error(final.code, final.message)
            if isinstance(final, CommandResponse):
                _raise_command_error(final)
            raise self._unexpected(connection, final, "enqueue", outcome_unknown=True)

        self._run(attempt, self._deadline())

    def _payload(self, payload: bytes) -> bytes:
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
        if len(payload) > self._max_payload_bytes:
            # The server would close the connection on it (its global payload limit), which looks like a failure.
            raise ValueError(f"payload of {len(payload)} bytes exceeds max_payload_bytes={self._max_payload_bytes}")
        return bytes(payload)

    def dequeue(self, queue: str = "", wait: float = 0.0) -> DequeuedRecord | None:
        """Take the most urgent record of ``queue``, waiting up to ``wait`` seconds for one; None if none came.
        The record must be :meth:`~DequeuedRecord.ack`-ed or :meth:`~DequeuedRecord.nack`-ed (see
        :meth:`consume`). Safe to retry: a record whose delivery failed is put back by the server."""
        timeout_ms = _timeout_ms(wait)
        name = _wire_name(queue)
        original = encode(CommandRequest(DequeueCommand(name, timeout_ms)))
        extended = encode(CommandRequest(DequeueManyCommand(name, timeout_ms, 1)))

        def attempt(connection: Connection, deadline: float) -> DequeuedRecord | None:
            answer = self._request(connection, extended if connection.extended else original, deadline,
                                   idempotent=True)
            if isinstance(answer, CommandResponse):
                response = answer.response
                if isinstance(response, DequeueResponse | RecordsResponse):
                    records = (response.record,) if isinstance(response, DequeueResponse) else response.records
                    if not records or records[0] is None:
                        return None
                    record = records[0]
                    self._connection = None  # the record owns the connection until it is settled
                    origin = None if record.origin is None else (record.origin.queue, record.origin.record_id)
                    return DequeuedRecord(self, connection, queue, record.id, record.priority, record.payload,
                                          record.failed_deliveries, origin)
                _raise_command_error(answer)
            raise self._unexpected(connection, answer, "dequeue")

        return self._run(attempt, self._deadline(extra=timeout_ms / 1000))

    def dequeue_many(self, queue: str = "", max_records: int = 100, wait: float = 0.0) -> DequeuedBatch | None:
        """Take up to ``max_records`` (1-1000) records of ``queue`` in dequeue order, waiting up to ``wait`` seconds
        for the first; None if none came. Ack or nack them together. Needs protocol 1.1."""
        _check_int(max_records, 1, MAX_BATCH, "max_records")
        timeout_ms = _timeout_ms(wait)
        request = encode(CommandRequest(DequeueManyCommand(_wire_name(queue), timeout_ms, max_records)))

        def attempt(connection: Connection, deadline: float) -> DequeuedBatch | None:
            self._require_extension(connection, "dequeue_many")
            answer = self._request(connection, request, deadline, idempotent=True)
            if isinstance(answer, CommandResponse):
                if isinstance(answer.response, RecordsResponse):
                    if not answer.response.records:
                        return None
                    self._connection = None  # the batch owns the connection until it is settled
                    return DequeuedBatch(self, connection, queue, answer.response.records)
                _raise_command_error(answer)
            raise self._unexpected(connection, answer, "dequeue")

        return self._run(attempt, self._deadline(extra=timeout_ms / 1000))

    def peek(self, queue: str = "", limit: int = 10) -> list[PeekedRecord]:
        """The next ``limit`` (1-1000) ready records of ``queue`` in dequeue order, left in place. Needs 1.1."""
        _check_int(limit, 1, MAX_BATCH, "limit")
        request = encode(CommandRequest(PeekCommand(_wire_name(queue), limit)))

        def attempt(connection: Connection, deadline: float) -> list[PeekedRecord]:
            self._require_extension(connection, "peek")
            answer = self._request(connection, request, deadline, idempotent=True)
            if isinstance(answer, CommandResponse):
                if isinstance(answer.response, RecordsResponse):
                    return [_peeked(record) for record in answer.response.records]
                _raise_command_error(answer)
            raise self._unexpected(connection, answer, "peek")

        return self._run(attempt, self._deadline())

    @contextmanager
    def consume(self, queue: str = "", wait: float = 0.0) -> Iterator[DequeuedRecord | None]:
        """Dequeue one record for the ``with`` block: acked when the block ends normally, nacked when it raises.
        Yields None when no record came within ``wait``."""
        record = self.dequeue(queue, wait)
        if record is None:
            yield None
            return
        try:
            yield record
        except BaseException:
            if not record.settled:
                record.nack()
            raise
        if not record.settled:
            record.ack()

    def count(self, queue: str = "") -> int:
        """Number of records stored in ``queue`` (records handed out but not yet acked are not counted)."""
        request = encode(CommandRequest(CountCommand(_wire_name(queue))))

        def attempt(connection: Connection, deadline: float) -> int:
            answer = self._request(connection, request, deadline, idempotent=True)
            if isinstance(answer, CommandResponse):
                if isinstance(answer.response, CountResponse):
                    return answer.response.count
                _raise_command_error(answer)
            raise self._unexpected(connection, answer, "count")

        return self._run(attempt, self._deadline())

    def create_queue(
        self,
        name: str,
        implementation: str | Implementation = Implementation.H4,
        max_queue_size: int | None = None,
        max_payload_size: int | None = None,
        priority_range: tuple[int, int] | None = None,
        *,
        max_deliveries: int | None = None,
        dead_letter_queue: str | None = None,
        retry_delay: float = DEFAULT_DELIVERY.retry_delay_ms / 1000,
        retry_backoff: str = "fixed",
        retry_max_delay: float = DEFAULT_DELIVERY.retry_max_delay_ms / 1000,
        dedup_window: float = DEFAULT_DELIVERY.dedup_window_ms / 1000,
        dedup_max_keys: int = DEFAULT_DELIVERY.dedup_max_keys,
    ) -> None:
        """Create queue ``name`` with its structure ("h4" heap or "qa" queue array, which needs a priority range),
        optional limits, and delivery policies: a record whose failed deliveries reach ``max_deliveries`` moves to
        ``dead_letter_queue`` (an existing queue; both or neither); a nacked record waits ``retry_delay`` seconds
        ("exponential" backoff doubles it per failure, up to ``retry_max_delay``); idempotency keys are remembered
        for ``dedup_window`` seconds, at most ``dedup_max_keys`` of them. Delivery policies need protocol 1.1.
        Raises :class:`QueueAlreadyExists`, a validation error, or :class:`OutcomeUnknown` if the answer was lost
        after the request was sent."""
        code = _implementation(implementation)
        for value, what in ((max_queue_size, "max_queue_size"), (max_payload_size, "max_payload_size")):
            if value is not None:
                _check_int(value, -(2**31), INT32_MAX, what)
        if priority_range is not None:
            low, high = priority_range
            _check_int(low, INT64_MIN, INT64_MAX, "priority range minimum")
            _check_int(high, INT64_MIN, INT64_MAX, "priority range maximum")
            priority_range = (low, high)
        if retry_backoff not in ("fixed", "exponential"):
            raise ValueError(f"retry_backoff is 'fixed' or 'exponential', not {retry_backoff!r}")
        policies = CreateQueueWithPoliciesCommand(
            _wire_name(name), code, max_queue_size, max_payload_size, priority_range, max_deliveries,
            None if dead_letter_queue is None else _wire_name(dead_letter_queue), _ms(retry_delay),
            Backoff[retry_backoff.upper()], _ms(retry_max_delay), _ms(dedup_window), dedup_max_keys)
        with_policies = (policies.max_deliveries, policies.dead_letter_queue, policies.retry_delay_ms,
                         policies.retry_backoff, policies.retry_max_delay_ms, policies.dedup_window_ms,
                         policies.dedup_max_keys) != (None, None, DEFAULT_DELIVERY.retry_delay_ms, Backoff.FIXED,
                                                      DEFAULT_DELIVERY.retry_max_delay_ms,
                                                      DEFAULT_DELIVERY.dedup_window_ms, DEFAULT_DELIVERY.dedup_max_keys)
        command = (policies if with_policies else
                   CreateQueueCommand(_wire_name(name), code, max_queue_size, max_payload_size, priority_range))
        self._run_ok(encode(CommandRequest(command)), "create the queue", QueueAlreadyExists,
                     needs_extension=with_policies)

    def delete_queue(self, name: str) -> None:
        """Delete queue ``name`` and all its records. Raises :class:`QueueDoesNotExist` or :class:`OutcomeUnknown`
        if the answer was lost after the request was sent."""
        self._run_ok(encode(CommandRequest(DeleteQueueCommand(_wire_name(name)))), "delete the queue",
                     QueueDoesNotExist)

    def list_queues(self) -> list[QueueSummary]:
        """Every queue with its count and limits."""
        request = encode(CommandRequest(ListQueuesCommand()))

        def attempt(connection: Connection, deadline: float) -> list[QueueSummary]:
            answer = self._request(connection, request, deadline, idempotent=True)
            if isinstance(answer, CommandResponse):
                if isinstance(answer.response, ListQueuesResponse):
                    return [_summary(info.name, info.count, dict(info.metadata)) for info in answer.response.queues]
                _raise_command_error(answer)
            raise self._unexpected(connection, answer, "list queues")

        return self._run(attempt, self._deadline())

    def cluster_metadata(self) -> ClusterMetadata:
        """The cluster's client endpoints and leader as the current node reports them (any node answers)."""
        deadline = self._deadline()
        last: Exception | None = None
        attempt = 0
        while True:
            self._check_deadline(deadline, last)
            connection = self._connection
            if connection is None:
                try:
                    connection = self._connect_any(deadline)
                except ConnectFailed as exc:
                    last = exc
                    self._backoff(attempt, deadline)
                    attempt += 1
                    continue
            try:
                metadata = self._fetch_metadata(connection, deadline)
            except (SendFailed, ReceiveFailed) as exc:
                connection.close()
                self._drop()
                last = exc
                self._backoff(attempt, deadline)
                attempt += 1
                continue
            self._connection = connection
            return ClusterMetadata(metadata.endpoints, metadata.leader_id, metadata.responding_id)

    # --- protocol versions ---------------------------------------------------------------------------------------

    def _extended(self) -> bool:
        """Whether the leader speaks protocol 1.1 (connects to find out)."""
        return self._run(lambda connection, _deadline: connection.extended, self._deadline())

    @staticmethod
    def _require_extension(connection: Connection, what: str) -> None:
        if not connection.extended:
            raise TaskFluxError(f"{what} needs a server that speaks protocol 1.1 ({connection.endpoint} speaks 1.0)")

    # --- the retry loop ------------------------------------------------------------------------------------------

    def _deadline(self, extra: float = 0.0) -> float:
        if self._closed:
            raise TaskFluxError("the client is closed")
        return time.monotonic() + self.timeout + extra

    def _run(self, attempt: Callable[[Connection, float], T], deadline: float) -> T:
        """Run ``attempt`` on a leader connection until it succeeds, raises a final error, or the deadline passes.
        ``attempt`` raises _NotLeader or _Retry for the failures that are safe to retry."""
        last: Exception | None = None
        failures = 0
        while True:
            self._check_deadline(deadline, last)
            try:
                connection = self._leader(deadline)
            except (ConnectFailed, _NotLeader, _Retry) as exc:
                last = exc
            else:
                try:
                    return attempt(connection, deadline)
                except _NotLeader as exc:
                    last = exc
                    self._drop()
                    self._leader_id = exc.leader_id
                    moved = exc.leader_id is not None and self._endpoint_of(exc.leader_id) != connection.endpoint
                    if moved and failures < 2:
                        failures += 1
                        continue  # a known leader elsewhere: go there at once (but never ping-pong unthrottled)
                except _Retry as exc:
                    last = exc
                    self._drop()
                except (ServerError, PolicyViolation):
                    raise  # a final answer: the exchange is complete and the connection stays usable
                except BaseException:
                    # Garbage, an unknown outcome, or an interruption (KeyboardInterrupt, a gevent.Timeout): the
                    # connection may hold half an exchange, so it must never be reused.
                    self._drop()
                    raise
            self._backoff(failures, deadline)
            failures += 1

    def _check_deadline(self, deadline: float, last: Exception | None) -> None:
        if time.monotonic() < deadline:
            return
        self._drop()
        reason = f": {last}" if last is not None else ""
        if isinstance(last, ConnectFailed):
            raise TaskFluxConnectionError(f"no leader reachable within {self.timeout} s{reason}") from last
        if isinstance(last, _NotLeader):
            leader = "no leader known" if last.leader_id is None else f"leader {last.leader_id} not reachable"
            raise TaskFluxTimeoutError(f"operation timed out: {leader}")
        raise TaskFluxTimeoutError(f"operation timed out{reason}") from last

    def _backoff(self, failures: int, deadline: float) -> None:
        delay = min(self._backoff_max, self._backoff_initial * 2**failures)
        time.sleep(min(delay * self._random.uniform(0.5, 1.0), remaining(deadline)))

    def _request(self, connection: Connection, request: bytes, deadline: float, *, idempotent: bool) -> Packet:
        """Send ``request`` and read the answer; NotLeader becomes _NotLeader, a failure before the request was
        fully sent becomes _Retry, a lost answer _Retry when ``idempotent`` and OutcomeUnknown otherwise."""
        try:
            connection.send(request, deadline)
        except SendFailed as exc:
            raise _Retry(str(exc)) from exc
        return self._answer(connection, deadline, idempotent=idempotent, what="request")

    def _answer(self, connection: Connection, deadline: float, *, idempotent: bool, what: str) -> Packet:
        try:
            answer = connection.receive(deadline)
        except ReceiveFailed as exc:
            if idempotent:
                raise _Retry(str(exc)) from exc
            raise OutcomeUnknown(f"{what}: sent, but the answer was lost ({exc}); it may or may not have taken "
                                 "effect") from exc
        except TaskFluxProtocolError as exc:
            if idempotent:
                raise
            raise OutcomeUnknown(f"{what}: sent, but the answer was invalid ({exc})") from exc
        if isinstance(answer, NotLeader):
            raise _NotLeader(answer.leader_id)
        return answer

    def _run_ok(self, request: bytes, what: str, done_already: type[ServerError], needs_extension: bool = False
                ) -> None:
        """A non-idempotent command whose success answer is Ok (CreateQueue, DeleteQueue). ``done_already`` is
        the error a retry gets if an earlier attempt did take effect: after a NotLeader it is ambiguous."""
        refused_by_non_leader = False

        def attempt(connection: Connection, deadline: float) -> None:
            nonlocal refused_by_non_leader
            if needs_extension:
                self._require_extension(connection, what)
            if not connection.is_alive():
                raise _Retry(f"{connection.endpoint} closed the idle connection")
            try:
                answer = self._request(connection, request, deadline, idempotent=False)
            except _NotLeader:
                refused_by_non_leader = True
                raise
            if isinstance(answer, Ok):
                return
            error: TaskFluxError
            if isinstance(answer, ErrorResponse):
                error = server_error(answer.code, answer.message)
            elif isinstance(answer, CommandResponse):
                try:
                    _raise_command_error(answer)
                except TaskFluxError as exc:
                    error = exc
            else:
                raise self._unexpected(connection, answer, what, outcome_unknown=True)
            if refused_by_non_leader and isinstance(error, done_already):
                # A node that loses leadership after proposing also answers NotLeader, so the earlier attempt
                # may be the one that took effect.
                raise OutcomeUnknown(f"{what}: {error} after an earlier attempt was answered NotLeader; the "
                                     "earlier attempt may have taken effect") from error
            raise error

        self._run(attempt, self._deadline())

    def _unexpected(self, connection: Connection, answer: Packet, what: str, outcome_unknown: bool = False
                    ) -> TaskFluxError:
        connection.close()
        self._drop()
        message = f"unexpected answer to {what} from {connection.endpoint}: {answer}"
        return OutcomeUnknown(message) if outcome_unknown else TaskFluxProtocolError(message)

    # --- leader discovery ----------------------------------------------------------------------------------------

    def _leader(self, deadline: float) -> Connection:
        """A connection to the node believed to be the leader: the current one, or a new one found through
        ClusterMetadata (asking the last known leader first, then every configured endpoint in order)."""
        if self._connection is not None and not self._connection.closed:
            return self._connection
        self._connection = None
        last: Exception | None = None
        tried: set[str] = set()
        hops = 0
        candidates = self._candidates()
        while candidates:
            endpoint = candidates.pop(0)
            if endpoint in tried:
                continue
            tried.add(endpoint)
            if remaining(deadline) <= 0:
                break
            try:
                connection = self._open(endpoint, deadline)
            except ConnectFailed as exc:
                last = _more_telling(last, exc, deadline)
                continue
            try:
                metadata = self._fetch_metadata(connection, deadline)
            except (SendFailed, ReceiveFailed) as exc:
                connection.close()
                last = _more_telling(last, ConnectFailed(str(exc)), deadline)
                continue
            if metadata.leader_id is None:
                connection.close()
                last = _NotLeader(None)
                continue
            if metadata.leader_id == metadata.responding_id:
                self._connection = connection
                return connection
            connection.close()
            last = _NotLeader(metadata.leader_id)
            hops += 1
            if hops <= len(self.endpoints) + 1:
                candidates = [e for e in self._candidates() if e not in tried] + candidates
        if last is None:
            last = ConnectFailed("no time left to connect")
        raise last

    def _open(self, endpoint: str, deadline: float) -> Connection:
        """A new connection to ``endpoint``; an endpoint that refused protocol 1.1 is not asked again."""
        connection = Connection.open(endpoint, deadline, self._max_payload_bytes,
                                     try_extension=endpoint not in self._original_endpoints)
        if not connection.extended:
            self._original_endpoints.add(endpoint)
        return connection

    def _fetch_metadata(self, connection: Connection, deadline: float) -> ClusterMetadataResponse:
        connection.send(_METADATA_REQUEST, deadline)
        answer = connection.receive(deadline)
        if not isinstance(answer, ClusterMetadataResponse):
            connection.close()
            raise TaskFluxProtocolError(f"{connection.endpoint} answered cluster metadata with {answer}")
        if answer.endpoints:
            self._cluster_endpoints = answer.endpoints
        self._leader_id = answer.leader_id
        return answer

    def _connect_any(self, deadline: float) -> Connection:
        last: ConnectFailed | None = None
        for endpoint in self._candidates():
            try:
                return self._open(endpoint, deadline)
            except ConnectFailed as exc:
                last = exc
        assert last is not None
        raise last

    def _endpoint_of(self, node_id: int) -> str | None:
        if 0 <= node_id < len(self._cluster_endpoints):
            return self._cluster_endpoints[node_id]
        if 0 <= node_id < len(self.endpoints):
            return self.endpoints[node_id]
        return None

    def _candidates(self) -> list[str]:
        """Endpoints to try, best first: the leader as the cluster reports it, the leader's configured endpoint,
        every member the cluster last reported (so that a client follows the membership: it finds nodes added
        since it started, and a removed node is no longer reported), then every configured endpoint."""
        out: list[str] = []
        if self._leader_id is not None:
            if 0 <= self._leader_id < len(self._cluster_endpoints):
                out.append(self._cluster_endpoints[self._leader_id])
            if 0 <= self._leader_id < len(self.endpoints):
                out.append(self.endpoints[self._leader_id])
        out.extend(endpoint for endpoint in self._cluster_endpoints if endpoint)
        out.extend(self.endpoints)
        valid: list[str] = []
        for endpoint in dict.fromkeys(out):
            try:
                parse_endpoint(endpoint)
            except ValueError:
                continue  # a node reported an endpoint we cannot use: rely on the configured ones
            valid.append(endpoint)
        return valid

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def _give_back(self, connection: Connection) -> None:
        """A settled record returns its connection: keep it if the client has none, close it otherwise."""
        if self._connection is None and not self._closed and not connection.closed:
            self._connection = connection
        else:
            connection.close()


# --- helpers -----------------------------------------------------------------------------------------------------

def _wire_name(queue: str) -> str:
    if not isinstance(queue, str):
        raise TypeError(f"queue name must be str, not {type(queue).__name__}")
    try:
        raw = queue.encode("latin-1")
    except UnicodeEncodeError:
        raise InvalidQueueName(f"{queue!r}: only printable ASCII characters are allowed") from None
    if len(raw) > MAX_QUEUE_NAME_BYTES:
        raise InvalidQueueName(f"{len(raw)} characters, at most {MAX_QUEUE_NAME_BYTES} are allowed")
    return queue


def _check_int(value: int, low: int, high: int, what: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{what} {value} is outside [{low}, {high}]")


def _implementation(implementation: str | Implementation) -> int:
    if isinstance(implementation, Implementation):
        return int(implementation)
    if isinstance(implementation, str):
        try:
            return int(Implementation[implementation.upper()])
        except KeyError:
            pass
    raise ValueError(f"unknown queue implementation {implementation!r}: use 'h4' or 'qa'")


def _more_telling(last: Exception | None, failure: ConnectFailed, deadline: float) -> Exception:
    """What to report: a failure that only says the time ran out (the deadline struck mid-exchange) does not hide
    what was learned before it (no leader known, say)."""
    if last is not None and remaining(deadline) <= 0:
        return last
    return failure


def _raise_command_error(answer: CommandResponse) -> NoReturn:
    response = answer.response
    if isinstance(response, CommandErrorResponse):
        raise server_error(response.code, response.message)
    if isinstance(response, PolicyViolationResponse):
        cls: type[PolicyViolation] = POLICY_CLASSES.get(response.policy, GenericPolicyViolation)
        raise cls(response.limits, response.message)
    raise TaskFluxProtocolError(f"unexpected response {response}")


def _summary(name: str, count: int, metadata: dict[str, str]) -> QueueSummary:
    try:
        limits = parse_queue_metadata(metadata)
    except ValueError as exc:
        raise TaskFluxProtocolError(f"queue {name!r}: {exc}") from exc
    delayed, reserved = metadata.get("delayed"), metadata.get("reserved")
    return QueueSummary(name, count, limits.max_queue_size, limits.max_payload_size, limits.priority_range, metadata,
                        None if delayed is None else _int_metadata(name, delayed),
                        None if reserved is None else _int_metadata(name, reserved))


def _int_metadata(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise TaskFluxProtocolError(f"queue {name!r}: malformed count {value!r}") from None


def _peeked(record: Record) -> PeekedRecord:
    origin = None if record.origin is None else (record.origin.queue, record.origin.record_id)
    return PeekedRecord(record.id, record.priority, record.payload, record.failed_deliveries, origin)


def _timeout_ms(wait: float) -> int:
    if wait < 0:
        raise ValueError(f"wait must not be negative, got {wait}")
    return min(round(wait * 1000), _MAX_TIMEOUT_MS)


def _ms(seconds: float) -> int:
    if seconds < 0:
        raise ValueError(f"a duration must not be negative, got {seconds}")
    return round(seconds * 1000)


def _item(record: NewRecord, max_payload_bytes: int) -> EnqueueItem:
    """The wire item of a record: its key (a fresh random one when none is given) and its due time."""
    _check_int(record.priority, INT64_MIN, INT64_MAX, "priority")
    if not isinstance(record.payload, bytes | bytearray | memoryview):
        raise TypeError(f"payload must be bytes, not {type(record.payload).__name__}")
    if len(record.payload) > max_payload_bytes:
        raise ValueError(f"payload of {len(record.payload)} bytes exceeds max_payload_bytes={max_payload_bytes}")
    key = record.key if record.key is not None else uuid.uuid4().hex
    raw_key = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    if not 1 <= len(raw_key) <= 128:
        raise ValueError(f"an idempotency key has 1-128 bytes, not {len(raw_key)}")
    not_before = 0 if record.not_before is None else round(record.not_before * 1000)
    return EnqueueItem(record.priority, bytes(record.payload), raw_key, _ms(record.delay), not_before)
