"""The blocking TaskFlux client: leader discovery, NotLeader following, reconnection, deadlines, safe retries."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Sequence
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
from taskflux.values import parse_endpoint
from taskflux.wire.client_protocol import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    Ack,
    ClusterMetadataRequest,
    ClusterMetadataResponse,
    CommandErrorResponse,
    CommandRequest,
    CommandResponse,
    CountCommand,
    CountResponse,
    CreateQueueCommand,
    DeleteQueueCommand,
    DequeueCommand,
    DequeueResponse,
    EnqueueCommand,
    ErrorResponse,
    ListQueuesCommand,
    ListQueuesResponse,
    Nack,
    NotLeader,
    Ok,
    Packet,
    PolicyViolationResponse,
    encode,
    parse_queue_metadata,
)
from taskflux.wire.primitives import MAX_QUEUE_NAME_BYTES

T = TypeVar("T")

_ACK = encode(Ack())
_NACK = encode(Nack())
_METADATA_REQUEST = encode(ClusterMetadataRequest())
_MAX_TIMEOUT_MS = 2**32 - 2  # the largest wait the server honours as a wait (docs/client-protocol.md §10.4)


@dataclass(frozen=True, slots=True)
class QueueSummary:
    """One queue as ListQueues reports it: name, stored count and limits (None = no limit)."""

    name: str
    count: int
    max_queue_size: int | None
    max_payload_size: int | None
    priority_range: tuple[int, int] | None
    metadata: dict[str, str]


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


class DequeuedRecord:
    """A record handed out by :meth:`TaskFluxClient.dequeue`. It stays reserved for this client until
    :meth:`ack` (removed for good) or :meth:`nack` (put back); it holds its own connection until then. A record
    never settled is put back by the server when that connection closes."""

    __slots__ = ("_client", "_connection", "_settled", "id", "payload", "priority", "queue")

    def __init__(self, client: TaskFluxClient, connection: Connection, queue: str, record_id: int, priority: int,
                 payload: bytes) -> None:
        self._client = client
        self._connection: Connection | None = connection
        self._settled = False
        self.queue = queue
        self.id = record_id
        self.priority = priority
        self.payload = payload

    def __repr__(self) -> str:
        return f"DequeuedRecord(queue={self.queue!r}, id={self.id}, priority={self.priority}, payload={self.payload!r})"

    @property
    def settled(self) -> bool:
        """True once acked or nacked (successfully or not)."""
        return self._settled

    def _take_connection(self, what: str) -> Connection:
        if self._settled or self._connection is None:
            raise TaskFluxError(f"record {self.id} of queue {self.queue!r} was already acked or nacked; cannot {what}")
        self._settled = True
        connection, self._connection = self._connection, None
        return connection

    def ack(self, timeout: float | None = None) -> None:
        """Remove the record for good (committed on a majority before this returns).

        Raises :class:`TaskFluxConnectionError` if the Ack could not be sent and :class:`NotLeaderError` if the
        node lost its leadership (in both cases the record was not removed and will be delivered again), and
        :class:`OutcomeUnknown` if the Ack was sent but its answer was lost."""
        connection = self._take_connection("ack")
        deadline = time.monotonic() + (self._client.timeout if timeout is None else timeout)
        try:
            connection.send(_ACK, deadline)
        except SendFailed as exc:
            raise TaskFluxConnectionError(f"ack of record {self.id} not sent ({exc}); it will be delivered again") \
                from exc
        try:
            answer = connection.receive(deadline)
        except (ReceiveFailed, TaskFluxProtocolError) as exc:
            connection.close()
            raise OutcomeUnknown(f"ack of record {self.id} sent but its answer was lost ({exc}): the record may "
                                 "be delivered again") from exc
        if isinstance(answer, Ok):
            self._client._give_back(connection)
            return
        connection.close()
        if isinstance(answer, NotLeader):
            raise NotLeaderError(answer.leader_id)
        raise OutcomeUnknown(f"unexpected answer to the ack of record {self.id}: {answer}")

    def nack(self, timeout: float | None = None) -> None:
        """Put the record back into its queue (same id and priority, behind records of equal priority). If the
        Nack cannot be completed the connection is closed, which makes the server put the record back too, so
        this never raises for connection failures."""
        connection = self._take_connection("nack")
        deadline = time.monotonic() + (self._client.timeout if timeout is None else timeout)
        try:
            connection.send(_NACK, deadline)
            answer = connection.receive(deadline)
        except (SendFailed, ReceiveFailed, TaskFluxProtocolError):
            connection.close()
            return
        if isinstance(answer, Ok):
            self._client._give_back(connection)
        else:
            connection.close()


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

    def enqueue(self, queue: str, priority: int, payload: bytes) -> None:
        """Add ``payload`` to ``queue`` with ``priority`` (Int64; smaller is more urgent). Returns once the record
        is durable on a majority. Raises :class:`QueueDoesNotExist`, a :class:`PolicyViolation`, or
        :class:`OutcomeUnknown` when the Ack was sent but the final answer was lost (never retried blindly)."""
        _check_int(priority, INT64_MIN, INT64_MAX, "priority")
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
        if len(payload) > self._max_payload_bytes:
            # The server would close the connection on it (its global payload limit), which looks like a failure.
            raise ValueError(f"payload of {len(payload)} bytes exceeds max_payload_bytes={self._max_payload_bytes}")
        request = encode(CommandRequest(EnqueueCommand(_wire_name(queue), priority, bytes(payload))))

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

    def dequeue(self, queue: str = "", wait: float = 0.0) -> DequeuedRecord | None:
        """Take the most urgent record of ``queue``, waiting up to ``wait`` seconds for one; None if none came.
        The record must be :meth:`~DequeuedRecord.ack`-ed or :meth:`~DequeuedRecord.nack`-ed (see
        :meth:`consume`). Safe to retry: a record whose delivery failed is put back by the server."""
        if wait < 0:
            raise ValueError(f"wait must not be negative, got {wait}")
        timeout_ms = min(round(wait * 1000), _MAX_TIMEOUT_MS)
        name = _wire_name(queue)
        request = encode(CommandRequest(DequeueCommand(name, timeout_ms)))

        def attempt(connection: Connection, deadline: float) -> DequeuedRecord | None:
            answer = self._request(connection, request, deadline, idempotent=True)
            if isinstance(answer, CommandResponse):
                response = answer.response
                if isinstance(response, DequeueResponse):
                    if response.record is None:
                        return None
                    record = response.record
                    self._connection = None  # the record owns the connection until it is settled
                    return DequeuedRecord(self, connection, queue, record.id, record.priority, record.payload)
                _raise_command_error(answer)
            raise self._unexpected(connection, answer, "dequeue")

        return self._run(attempt, self._deadline(extra=timeout_ms / 1000))

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
    ) -> None:
        """Create queue ``name`` with its structure ("h4" heap or "qa" queue array, which needs a priority range)
        and optional limits. Raises :class:`QueueAlreadyExists`, a validation error, or :class:`OutcomeUnknown`
        if the answer was lost after the request was sent."""
        code = _implementation(implementation)
        for value, what in ((max_queue_size, "max_queue_size"), (max_payload_size, "max_payload_size")):
            if value is not None:
                _check_int(value, -(2**31), INT32_MAX, what)
        if priority_range is not None:
            low, high = priority_range
            _check_int(low, INT64_MIN, INT64_MAX, "priority range minimum")
            _check_int(high, INT64_MIN, INT64_MAX, "priority range maximum")
            priority_range = (low, high)
        command = CreateQueueCommand(_wire_name(name), code, max_queue_size, max_payload_size, priority_range)
        self._run_ok(encode(CommandRequest(command)), "create the queue", QueueAlreadyExists)

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

    def _run_ok(self, request: bytes, what: str, done_already: type[ServerError]) -> None:
        """A non-idempotent command whose success answer is Ok (CreateQueue, DeleteQueue). ``done_already`` is
        the error a retry gets if an earlier attempt did take effect: after a NotLeader it is ambiguous."""
        refused_by_non_leader = False

        def attempt(connection: Connection, deadline: float) -> None:
            nonlocal refused_by_non_leader
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
                connection = Connection.open(endpoint, deadline, self._max_payload_bytes)
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
                return Connection.open(endpoint, deadline, self._max_payload_bytes)
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
    return QueueSummary(name, count, limits.max_queue_size, limits.max_payload_size, limits.priority_range, metadata)
