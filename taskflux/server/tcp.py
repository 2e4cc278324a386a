"""The binary client protocol server: one greenlet per connection, plain blocking code.

A session does the handshake, then reads one packet at a time and runs its whole flow (docs/client-protocol.md
§10) before reading the next. Writes are answered only once committed; a dequeued record is reserved on the leader
and removed for good only when its Ack commits; a Nack, a disconnect, an idle timeout or any error puts
it back. Bad input closes that one connection with one log line; nobody else notices.

No connection can crowd out the others: a packet is bounded by its type's size limit (the decoder's), a
session yields to the other greenlets after a bounded amount of input, a connection must complete its
handshake within ``tcp_adapter_handshake_timeout``, and at ``tcp_adapter_max_connections`` a new connection
takes the place of the oldest one still in its handshake (or is closed if there is none). Those deadlines and
that limit are kept by the port's ``ConnectionTable`` (taskflux/server/connections.py) with its own eviction
policy, ``IN_HANDSHAKE_ONLY``; one sweeper enforces them, so no socket operation carries a timer.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gevent
from gevent.event import Event
from gevent.pool import Pool
from gevent.server import StreamServer

from taskflux.config import format_endpoint
from taskflux.domain.commands import POLICY_DELAY, CreateQueue
from taskflux.domain.errors import ErrorCode
from taskflux.domain.names import is_valid_queue_name
from taskflux.domain.policies import MAX_DELAY_MS, Backoff, DeliveryPolicies, invalid_policy
from taskflux.domain.results import Failure, PolicyViolation, RecordsAdded, Result
from taskflux.server import metrics as outcomes
from taskflux.server.connections import Connection, ConnectionTable, EvictionPolicy, oldest_unused, shut_down
from taskflux.server.metrics import InterfaceMetrics, NodeMetrics
from taskflux.server.node import Node, NodeStopped, NotLeader
from taskflux.server.peers import PeerNetwork
from taskflux.server.service import SERVICE_ERRORS, Delivery, Ending, QueueService, ending_of, metrics_outcome
from taskflux.wire import client_protocol as wire
from taskflux.wire.primitives import ProtocolError

logger = logging.getLogger("taskflux.tcp")

RECV_BYTES = 64 * 1024
# A socket with data ready never blocks, so a client that keeps sending would keep the hub (every other
# connection, the node loop) waiting. A session therefore counts its work since it last yielded — bytes
# received, plus bytes of packets decoded, plus PACKET_WORK per packet — and past FAIR_SHARE_WORK waits for the
# hub's next turn: sleep(FAIR_SHARE_PAUSE) resumes only after the hub has polled every socket, where sleep(0)
# could resume it before. Decoding the costliest packets (4 KiB of tiny items) takes about 0.5 us a byte, so a
# turn stays in the low milliseconds whatever the client sends.
FAIR_SHARE_WORK = 4 * 1024
FAIR_SHARE_PAUSE = 1e-6
PACKET_WORK = 128
# Packets a client has no reason to send (server packets) are parsed and ignored, but a connection gets through
# at most this much of them per second (packet bytes + PACKET_WORK each), with bursts up to IGNORED_BURST: a
# stream of them costs the node a bounded share of a core instead of whatever the client can send.
IGNORED_WORK_PER_SECOND = 256 * 1024
IGNORED_BURST = 64 * 1024
UNSUPPORTED_VERSION = "client version not supported: this server speaks 1.1"

OK = wire.encode(wire.Ok())
AUTHORIZED = wire.encode(wire.AuthorizationResponse(True))
BOOTSTRAPPED = wire.encode(wire.BootstrapResponse(True))
NO_RECORD = wire.encode(wire.CommandResponse(wire.DequeueResponse(None)))

PENDING = "pending"  # a command's outcome is not known yet: its _Answer records it when it is written

INTERFACE = "tcp"
COMMAND_NAMES: dict[type, str] = {
    wire.EnqueueCommand: "enqueue",
    wire.DequeueCommand: "dequeue",
    wire.CountCommand: "count",
    wire.CreateQueueCommand: "create_queue",
    wire.DeleteQueueCommand: "delete_queue",
    wire.ListQueuesCommand: "list_queues",
    wire.EnqueueManyCommand: "enqueue_many",
    wire.DequeueManyCommand: "dequeue_many",
    wire.PeekCommand: "peek",
    wire.CreateQueueWithPoliciesCommand: "create_queue",
}


def send_at_once(sock: socket.socket, data: bytes) -> int:
    """One non-blocking send: the bytes the socket took (0 when its buffer is full); OSError if it broke."""
    try:
        return sock.send(data, 0, 0.0)  # type: ignore[call-arg]  # gevent: timeout 0 raises, never waits
    except BlockingIOError:
        return 0


class ClientGone(Exception):
    """The client closed the connection, went idle too long, or broke the protocol."""


class _Answer:
    """The final answer of a session's write, written into its connection by whoever learns the outcome — the
    node loop, as a rule (``Node.propose``'s reply): the session is not woken just to write it. It reads on
    meanwhile, and handles no further packet until the answer is written."""

    __slots__ = ("command", "ok_outcome", "session", "started")

    def __init__(self, session: Session, command: str, started: float, ok_outcome: str) -> None:
        self.session = session
        self.command = command
        self.started = started
        self.ok_outcome = ok_outcome  # the request metrics' outcome when the answer is Ok

    def set(self, result: Result) -> None:
        self.session.answered(self, result)

    def set_exception(self, error: BaseException) -> None:
        self.session.refused(self, error)


IN_HANDSHAKE_ONLY = EvictionPolicy(oldest_unused, "had not completed its handshake",
                                   "all have completed their handshake")
"""At the limit a newcomer takes the place of the oldest connection still in its handshake, never of a client
that completed it (it may be idle between requests for a good reason: a worker waiting for work)."""


@dataclass(frozen=True)
class ClientPortSettings:
    """What the binary client port reads of the node's configuration (the ``tcp_adapter_*`` options and
    ``max_payload_size``); the defaults are the options' defaults."""

    listen_host: str
    listen_port: int
    backlog: int = 128
    max_connections: int = 1024
    idle_timeout: float = 60.0
    handshake_timeout: float = 5.0
    max_payload_size: int = 16 * 1024 * 1024


class ClientServer:
    """Accepts binary-protocol clients on ``settings.listen_host:listen_port``."""

    def __init__(self, node: Node, peers: PeerNetwork, settings: ClientPortSettings,
                 metrics: NodeMetrics | None = None) -> None:
        self.node = node
        self.peers = peers
        self.settings = settings
        self.table = ConnectionTable(
            settings.max_connections, "client port", logger,
            sweep_interval=min(1.0, settings.idle_timeout / 4, settings.handshake_timeout / 4),
            policy=IN_HANDSHAKE_ONLY, limit_name="tcp_adapter_max_connections",
        )
        self._metrics = None if metrics is None else metrics.interface(INTERFACE)
        if metrics is not None:
            metrics.watch_clients(INTERFACE, self.table.__len__)
        # Unbounded: the table enforces the limit (a bounded pool would leave new connections in the backlog,
        # behind connections that may never send a byte). The pool lets stop() wait for, then end, the sessions.
        self._pool = Pool()
        self._server = StreamServer(
            (settings.listen_host, settings.listen_port),
            self._serve,
            spawn=self._pool,
            backlog=settings.backlog,
        )

    @property
    def address(self) -> str:
        return format_endpoint(self.settings.listen_host, self._server.server_port)

    @property
    def sessions(self) -> int:
        """Connected clients."""
        return len(self.table)

    def start(self) -> None:
        self._server.start()
        self.table.start()

    def stop_accepting(self) -> None:
        self._server.close()

    def stop(self, timeout: float) -> None:
        """Let in-flight flows finish for up to ``timeout`` seconds, then close every connection."""
        self._server.stop(timeout=timeout)
        self.table.stop()

    def _serve(self, sock: socket.socket, address: tuple[str, int]) -> None:
        where = format_endpoint(address[0], address[1])
        place = self.table.admit(where, functools.partial(shut_down, sock))
        if place is None:
            with contextlib.suppress(OSError):
                sock.close()
            return
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            session = Session(sock, self.node, self.peers, self.settings, place, self._metrics)
            session.handshake()
            session.serve()
        except ClientGone as gone:
            if str(gone):
                logger.info("client %s disconnected: %s", where, gone)
        except (NodeStopped, OSError):
            pass
        finally:
            self.table.remove(place)
            with contextlib.suppress(OSError):
                sock.close()


class Session:
    """One client connection's conversation, in its ``place`` in the client port's connection table: waiting
    for the client during every read and write (for the handshake, ``handshake_timeout`` from connecting; after
    it, ``idle_timeout`` per read or write), being served in between."""

    def __init__(
        self, sock: socket.socket, node: Node, peers: PeerNetwork, settings: ClientPortSettings, place: Connection,
        metrics: InterfaceMetrics | None = None,
    ) -> None:
        self.sock = sock
        self.node = node
        self.metrics = metrics
        self.service = QueueService(node, metrics)
        self.peers = peers
        self.place = place
        self.connected_at = place.admitted_at
        self._idle_timeout = settings.idle_timeout
        # What the client owes while the session waits for it: the handshake, within its deadline from connecting.
        self._wait_seconds = settings.handshake_timeout
        self._wait_reason = "handshake"
        self._wait_since: float | None = self.connected_at
        self.decoder = wire.PacketDecoder(wire.Direction.CLIENT_TO_SERVER, max_payload_bytes=settings.max_payload_size)
        self._work = 0  # work done since the session last yielded to the other greenlets (FAIR_SHARE_WORK)
        self._consumed = 0  # the decoder's consumed_bytes when last counted
        self._last_packet_work = 0
        self._ignored_allowance = float(IGNORED_BURST)  # a token bucket of IGNORED_WORK_PER_SECOND
        self._ignored_at = self.connected_at
        self._started = 0.0  # when the command being handled started (for the request metrics)
        self._command_name = ""  # and its name
        self._answer: _Answer | None = None  # a write's answer still to be written by the node loop
        self._answer_written: Event | None = None  # set once it is, when the session waits for that
        self._writing: gevent.Greenlet | None = None  # the end of an answer the socket did not take at once
        self._reading = False  # blocked in its socket read
        self.handlers: dict[type, Callable[[Any], str]] = {
            wire.EnqueueCommand: self.enqueue,
            wire.DequeueCommand: self.dequeue,
            wire.CountCommand: self.count,
            wire.CreateQueueCommand: self.create_queue,
            wire.DeleteQueueCommand: self.delete_queue,
            wire.ListQueuesCommand: self.list_queues,
            wire.EnqueueManyCommand: self.enqueue_many,
            wire.DequeueManyCommand: self.dequeue_many,
            wire.PeekCommand: self.peek,
            wire.CreateQueueWithPoliciesCommand: self.create_queue_with_policies,
        }
        self.extended = False  # the client announced 1.1: it may use the extension (docs/client-protocol.md §13)

    # --- I/O --------------------------------------------------------------------------------------

    def read(self) -> wire.Packet:
        """The next packet; ClientGone on EOF, idle timeout or a protocol error."""
        decoder = self.decoder
        while True:
            try:
                packet = decoder.next_packet()
            except ProtocolError as error:
                raise ClientGone(f"protocol error: {error}") from None
            if packet is not None:
                consumed = decoder.consumed_bytes
                self._last_packet_work = consumed - self._consumed + PACKET_WORK
                self._consumed = consumed
                self.spend(self._last_packet_work)
                return packet
            place = self.place
            if self._answer is None and self._writing is None:
                place.wait_for_client(self._wait_seconds, self._wait_reason, self._wait_since)
            # else: the server still owes its answer; the client's deadline starts once it is written (_owed)
            self._reading = True
            try:
                data = self.sock.recv(RECV_BYTES)
            except OSError as error:
                raise self.gone(str(error)) from None
            finally:
                self._reading = False
                place.serving()
            if not data:
                raise self.gone("")
            decoder.feed(data)
            self.spend(len(data))

    def spend(self, work: int) -> None:
        """Count ``work``; past the fair share, let the hub serve every other connection before going on."""
        self._work += work
        if self._work >= FAIR_SHARE_WORK:
            self._work = 0
            gevent.sleep(FAIR_SHARE_PAUSE)

    def write(self, data: bytes) -> None:
        """Write ``data`` whole. One non-blocking send first: an answer fits the socket buffer as a rule, and
        gevent's ``sendall`` costs a ``getsockopt`` and a timer per call; what does not fit waits for the client
        (its idle timeout applies meanwhile)."""
        sock = self.sock
        try:
            sent = send_at_once(sock, data)
        except OSError as error:
            raise self.gone(str(error)) from None
        if sent == len(data):
            return
        place = self.place
        place.wait_for_client(self._wait_seconds, self._wait_reason, self._wait_since)
        try:
            sock.sendall(memoryview(data)[sent:])
        except OSError as error:
            raise self.gone(str(error)) from None
        finally:
            place.serving()

    def gone(self, reason: str) -> ClientGone:
        """The client is gone; with no reason to log when the connection table closed it (it logged why)."""
        return ClientGone("" if self.place.closed else reason)

    def respond(self, response: wire.Response) -> None:
        self.write(wire.encode(wire.CommandResponse(response)))

    def not_leader(self, leader_id: int) -> None:
        self.write(not_leader_packet(leader_id))

    def error(self, code: ErrorCode, message: str = "") -> None:
        self.respond(wire.CommandErrorResponse(code, message))

    # --- the session ------------------------------------------------------------------------------

    def serve(self) -> None:
        """Requests until the connection ends (after the handshake)."""
        while True:
            self.handle(self.read())  # no reference to a packet (its payload) outlives its handling

    def handle(self, packet: wire.Packet) -> None:
        """One packet after the handshake (once the answer to the previous one is written)."""
        if self._answer is not None or self._writing is not None:
            self._wait_for_answer()
        if isinstance(packet, wire.CommandRequest):
            self.execute(packet.command)
        elif isinstance(packet, wire.ClusterMetadataRequest):
            self.cluster_metadata()
        elif isinstance(packet, wire.NackAfter) and not self.extended:
            raise ClientGone("a NackAfter (extension) from a 1.0 client")  # to it, an unknown packet marker
        else:  # any other known packet is read and ignored, as by the original server; at most one per turn
            self.throttle_ignored()

    def throttle_ignored(self) -> None:
        """After an ignored packet: wait for the hub's next turn, and longer once the connection has used up its
        IGNORED_WORK_PER_SECOND."""
        now = time.monotonic()
        allowance = min(IGNORED_BURST, self._ignored_allowance + (now - self._ignored_at) * IGNORED_WORK_PER_SECOND)
        self._ignored_allowance = allowance - self._last_packet_work
        self._ignored_at = now
        if self._ignored_allowance < 0:
            self._work = 0
            gevent.sleep(-self._ignored_allowance / IGNORED_WORK_PER_SECOND)
        else:
            self.spend(FAIR_SHARE_WORK)

    def execute(self, command: wire.Command) -> None:
        """Run one command's whole flow; with metrics, count its outcome and time it."""
        metrics = self.metrics
        started = self._started = time.perf_counter() if metrics is not None else 0.0
        if not self.extended and isinstance(command, wire.EXTENSION_COMMANDS):
            # An original (1.0) client never sends these: to it they are unknown markers (docs/client-protocol.md §5).
            raise ClientGone(f"an extension command ({type(command).__name__}) from a 1.0 client")
        self._command_name = COMMAND_NAMES[type(command)]
        outcome = outcomes.INTERNAL_ERROR
        try:
            outcome = self.handlers[type(command)](command)
        except SERVICE_ERRORS as ended:
            outcome = metrics_outcome(ended)
            ending = ending_of(ended)
            if ending is Ending.NOT_LEADER:
                assert isinstance(ended, NotLeader)
                self.not_leader(ended.leader_id)
            elif ending is Ending.OUTCOME_UNKNOWN:
                # The outcome is unknown: no answer would be true. Closing tells the client exactly that.
                raise ClientGone(f"outcome unknown: {ended}") from None
            else:
                raise
        except ClientGone:
            outcome = outcomes.DISCONNECTED
            raise
        finally:
            if outcome != PENDING:
                self._answer = None  # none was proposed (or it raised before): no answer will come
                if metrics is not None:
                    metrics.observe_request(self._command_name, outcome, time.perf_counter() - started)

    def handshake(self) -> None:
        first = self.read()
        if not isinstance(first, wire.AuthorizationRequest):
            raise ClientGone(f"expected an authorization request, got {type(first).__name__}")
        self.write(AUTHORIZED)
        second = self.read()
        if not isinstance(second, wire.BootstrapRequest):
            raise ClientGone(f"expected a bootstrap request, got {type(second).__name__}")
        if not wire.is_supported_version(second.major, second.minor):
            self.write(wire.encode(wire.BootstrapResponse(False, UNSUPPORTED_VERSION)))
            raise ClientGone(f"unsupported client version {second.major}.{second.minor}.{second.patch}")
        self.write(BOOTSTRAPPED)
        self.extended = wire.knows_extension(second.minor)
        self.place.requests = 1  # the handshake is complete: no longer evictable; the idle timeout applies
        self._wait_seconds = self._idle_timeout
        self._wait_reason = "activity"
        self._wait_since = None

    def cluster_metadata(self) -> None:
        metrics = self.metrics
        started = time.perf_counter() if metrics is not None else 0.0
        leader = self.node.leader_id
        self.write(wire.encode(wire.ClusterMetadataResponse(
            tuple(self.peers.client_endpoint_list()), None if leader < 0 else leader, self.node.id,
        )))
        if metrics is not None:
            metrics.observe_request("cluster_metadata", outcomes.OK, time.perf_counter() - started)

    def answer(self, result: Result) -> str:
        """Write the final answer of a write: Ok, a business error, or a policy violation. Returns the outcome."""
        outcome, data = final_answer(result)
        self.write(data)
        return outcome

    # --- answers written by the node loop ---------------------------------------------------------

    def expect_answer(self, ok_outcome: str = outcomes.OK) -> _Answer:
        """The reply for the write this command proposes: the command then returns PENDING."""
        answer = _Answer(self, self._command_name, self._started, ok_outcome)
        self._answer = answer
        return answer

    def answered(self, answer: _Answer, result: Result) -> None:
        """The write's result (called by the node loop): write its answer now."""
        outcome, data = final_answer(result)
        self._finish(answer, answer.ok_outcome if outcome == outcomes.OK else outcome, data)

    def refused(self, answer: _Answer, error: BaseException) -> None:
        """The write failed (called by the node loop or its watcher): NotLeader is answered; any other failure
        closes the connection — on an unknown outcome no answer would be true, and closing tells the client
        exactly that."""
        if not isinstance(error, SERVICE_ERRORS):
            logger.error("client %s: a write failed: %s: %s", self.place.address, type(error).__name__, error)
            self._finish(answer, outcomes.INTERNAL_ERROR, None)
            return
        ending = ending_of(error)
        if ending is Ending.NOT_LEADER:
            assert isinstance(error, NotLeader)
            self._finish(answer, metrics_outcome(error), not_leader_packet(error.leader_id))
            return
        if ending is Ending.OUTCOME_UNKNOWN:
            logger.info("client %s disconnected: outcome unknown: %s", self.place.address, error)
        self._finish(answer, metrics_outcome(error), None)

    def _finish(self, answer: _Answer, outcome: str, data: bytes | None) -> None:
        """Write ``data`` (None: close the connection) without blocking the caller, count the request, and let
        the session go on."""
        if data is None:
            shut_down(self.sock)
        else:
            self._write_now(data)
            self._owed()
        if self.metrics is not None:
            self.metrics.observe_request(answer.command, outcome, time.perf_counter() - answer.started)
        if self._answer is answer:
            self._answer = None
            waiting, self._answer_written = self._answer_written, None
            if waiting is not None:
                waiting.set()

    def _write_now(self, data: bytes) -> None:
        """Write without blocking: what the socket does not take at once is written by a greenlet of its own,
        which the session waits for before its next packet."""
        try:
            sent = send_at_once(self.sock, data)
        except OSError:
            shut_down(self.sock)  # the session's next read ends it
            return
        if sent < len(data):
            self._writing = gevent.spawn(self._write_rest, data[sent:])

    def _write_rest(self, data: bytes) -> None:
        try:
            self.write(data)
        except ClientGone:
            shut_down(self.sock)
        else:
            self._writing = None
            self._owed()

    def _owed(self) -> None:
        """The answer is written: from now on the client owes its next request, within the idle timeout (the
        session's read, if it is blocked in one, set no deadline while the server owed the answer)."""
        if self._reading and self._writing is None:
            self.place.wait_for_client(self._wait_seconds, self._wait_reason, self._wait_since)

    def _wait_for_answer(self) -> None:
        """Before the next packet: the answer to the previous one is written (a client that sends ahead)."""
        while self._answer is not None:
            self._answer_written = Event()
            self._answer_written.wait()
        writing, self._writing = self._writing, None
        if writing is not None:
            writing.join()

    # --- commands: each returns its outcome (taskflux.server.metrics) -------------------------------

    def enqueue(self, command: wire.EnqueueCommand) -> str:
        if not is_valid_queue_name(command.queue):
            self.write(wire.encode(wire.ErrorResponse(ErrorCode.INVALID_QUEUE_NAME)))
            return outcomes.ERROR
        self.node.ensure_serving()  # a NotLeader now, before the first Ok, is safe for the client to retry
        self.write(OK)
        decision = self.read()
        if isinstance(decision, wire.Nack):
            self.write(OK)
            return outcomes.NACK
        if not isinstance(decision, wire.Ack):
            raise ClientGone(f"expected Ack or Nack after an enqueue, got {type(decision).__name__}")
        self.service.start_enqueue(command.queue, command.priority, command.payload, self.expect_answer())
        return PENDING

    def dequeue(self, command: wire.DequeueCommand) -> str:
        delivery = self.service.reserve(command.queue, command.timeout_ms / 1000)
        if delivery is None:
            self.write(NO_RECORD)
            return outcomes.EMPTY
        if isinstance(delivery, Failure):
            self.error(delivery.code)
            return outcomes.ERROR
        try:
            self.respond(wire.DequeueResponse(delivery.record))
            decision = self.read()
        except ClientGone:
            delivery.abandon()  # the consumer is gone with the record: a failed delivery
            raise
        return self._settle([delivery], decision)

    def _settle(self, deliveries: list[Delivery], decision: wire.Packet) -> str:
        """The end of the deliveries a client was shown: Ack removes them; Nack (NackAfter: with its delay) is a
        failed delivery each, logged (counted; it may delay or dead-letter them) and answered Ok once they are
        back, whatever became of the log entry; anything else breaks the protocol (a failed delivery too)."""
        if isinstance(decision, wire.Ack):
            self.service.start_ack_all(deliveries, self.expect_answer())
            return PENDING
        delay = POLICY_DELAY
        if isinstance(decision, wire.NackAfter) and self.extended and 0 <= decision.delay_ms <= MAX_DELAY_MS:
            delay = decision.delay_ms
        elif not isinstance(decision, wire.Nack):
            self.service.start_fail_all(deliveries, POLICY_DELAY, None)
            raise ClientGone(f"expected Ack or Nack after a dequeue, got {decision}")
        self.service.start_fail_all(deliveries, delay, self.expect_answer(outcomes.NACK))
        return PENDING

    def count(self, command: wire.CountCommand) -> str:
        queue = self.service.get_queue(command.queue)
        if isinstance(queue, Failure):
            self.error(queue.code)
            return outcomes.ERROR
        self.respond(wire.CountResponse(queue.count))
        return outcomes.OK

    def create_queue(self, command: wire.CreateQueueCommand) -> str:
        return self._create(create_command(command))

    def _create(self, create: CreateQueue | Failure) -> str:
        if isinstance(create, Failure):
            return self._invalid(create)
        invalid = create.validate()
        if invalid is not None:
            return self._invalid(invalid)
        return self.answer(self.service.create_queue(create))

    def _invalid(self, failure: Failure) -> str:
        """Validation ("mapping") errors are ErrorResponse packets (docs/client-protocol.md §8)."""
        self.write(wire.encode(wire.ErrorResponse(failure.code)))
        return outcomes.ERROR

    def delete_queue(self, command: wire.DeleteQueueCommand) -> str:
        return self.answer(self.service.delete_queue(command.queue))

    def list_queues(self, command: wire.ListQueuesCommand) -> str:
        metadata = wire.extended_metadata if self.extended else wire.original_metadata
        self.respond(wire.ListQueuesResponse(tuple(
            wire.QueueInfo(queue.name, queue.count, metadata(queue)) for queue in self.service.list_queues()
        )))
        return outcomes.OK

    # --- the extension (docs/client-protocol.md §13) ---------------------------------------------------

    def enqueue_many(self, command: wire.EnqueueManyCommand) -> str:
        """One phase: the records are added (all or none) and the ids answered once committed. A record with a key
        the queue remembers adds nothing and answers the first enqueue's id, so a client retries safely."""
        if not is_valid_queue_name(command.queue):
            self.error(ErrorCode.INVALID_QUEUE_NAME)
            return outcomes.ERROR
        self.service.start_add_records(command.queue, command.items, self.expect_answer())
        return PENDING

    def dequeue_many(self, command: wire.DequeueManyCommand) -> str:
        """Up to ``max_records`` records (waiting for the first), then the client's Ack (all removed) or Nack
        (each a failed delivery), as for one record."""
        if not 1 <= command.max_records <= wire.MAX_BATCH:
            self.error(ErrorCode.INVALID_RECORD)
            return outcomes.ERROR
        taken = self.service.reserve_many(command.queue, command.max_records, command.timeout_ms / 1000)
        if isinstance(taken, Failure):
            self.error(taken.code)
            return outcomes.ERROR
        if not taken:
            self.respond(wire.RecordsResponse(()))
            return outcomes.EMPTY
        try:
            self.respond(wire.RecordsResponse(tuple(delivery.record for delivery in taken)))
            decision = self.read()
        except ClientGone:
            self.service.start_fail_all(taken, POLICY_DELAY, None)  # the consumer is gone with the records
            raise
        return self._settle(taken, decision)

    def peek(self, command: wire.PeekCommand) -> str:
        records = self.service.peek(command.queue, command.limit)
        if isinstance(records, Failure):
            self.error(records.code)
            return outcomes.ERROR
        self.respond(wire.RecordsResponse(tuple(records)))
        return outcomes.OK

    def create_queue_with_policies(self, command: wire.CreateQueueWithPoliciesCommand) -> str:
        return self._create(create_command(command))


def create_command(command: wire.CreateQueueCommand | wire.CreateQueueWithPoliciesCommand) -> CreateQueue | Failure:
    """The CreateQueue a request asks for (invalid values kept, for ``CreateQueue.validate`` to refuse), or the
    failure of a retry backoff code that is neither 0 (fixed) nor 1 (exponential)."""
    delivery = DeliveryPolicies()
    if isinstance(command, wire.CreateQueueWithPoliciesCommand):
        if command.retry_backoff not in (Backoff.FIXED, Backoff.EXPONENTIAL):
            return invalid_policy(f"unknown retry backoff {command.retry_backoff}")
        delivery = DeliveryPolicies(command.max_deliveries, command.dead_letter_queue, command.retry_delay_ms,
                                    Backoff(command.retry_backoff), command.retry_max_delay_ms,
                                    command.dedup_window_ms, command.dedup_max_keys)
    return CreateQueue.of(command.queue, command.implementation, command.max_queue_size, command.max_payload_size,
                          command.priority_range, delivery)


def final_answer(result: Result) -> tuple[str, bytes]:
    """A write's outcome (for the metrics) and its final answer: Ok (Added for EnqueueMany), a business error or a
    policy violation."""
    if isinstance(result, RecordsAdded):
        return outcomes.OK, wire.encode_added(result.record_ids, [not added for added in result.added])
    if isinstance(result, Failure):
        return outcomes.ERROR, wire.encode(wire.CommandResponse(wire.CommandErrorResponse(result.code, "")))
    if isinstance(result, PolicyViolation):
        return outcomes.POLICY_VIOLATION, wire.encode(wire.CommandResponse(
            wire.PolicyViolationResponse(result.policy, result.limits)))
    return outcomes.OK, OK


def not_leader_packet(leader_id: int) -> bytes:
    return wire.encode(wire.NotLeader(None if leader_id < 0 else leader_id))
