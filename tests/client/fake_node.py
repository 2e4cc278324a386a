"""A scripted in-process TaskFlux node for client tests: a loopback listener speaking the client protocol with the
real codec, a tiny in-memory queue manager, and switches for the faults a test wants (drop a connection at a given
point, stall, refuse the version, claim another leader). Threads work plainly and under gevent monkey-patching."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from taskflux.domain.errors import ErrorCode, PolicyCode
from taskflux.domain.names import is_valid_queue_name
from taskflux.domain.policies import QueuePolicies
from taskflux.domain.records import Record
from taskflux.wire.client_protocol import (
    Ack,
    AuthorizationRequest,
    AuthorizationResponse,
    BootstrapRequest,
    BootstrapResponse,
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
    Direction,
    EnqueueCommand,
    ErrorResponse,
    ListQueuesCommand,
    ListQueuesResponse,
    Nack,
    NotLeader,
    Ok,
    Packet,
    PacketDecoder,
    PolicyViolationResponse,
    QueueInfo,
    encode,
    queue_metadata,
)

DEADLINE = 10.0


def wait_until(condition: Callable[[], bool], timeout: float = DEADLINE) -> None:
    """Poll ``condition`` until it holds; fail the test if it does not within ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.002)


@dataclass
class FakeQueue:
    """A queue of the fake: records sorted by (priority, arrival)."""

    policies: QueuePolicies = field(default_factory=QueuePolicies)
    records: list[tuple[int, int, Record]] = field(default_factory=list)
    next_id: int = 1
    arrivals: int = 0

    def put(self, record: Record) -> None:
        self.arrivals += 1
        self.records.append((record.priority, self.arrivals, record))
        self.records.sort(key=lambda item: (item[0], item[1]))


class FakeCluster:
    """State shared by the fake nodes: the queues, who leads, and the nodes' endpoints."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.queues: dict[str, FakeQueue] = {"": FakeQueue()}
        self.leader_id: int | None = 0
        self.nodes: list[FakeNode] = []
        self.reported_endpoints: list[str] | None = None  # what ClusterMetadata says; None = the real ones

    def add_node(self) -> FakeNode:
        node = FakeNode(self, len(self.nodes))
        self.nodes.append(node)
        return node

    def endpoints(self) -> list[str]:
        return [node.endpoint for node in self.nodes]

    def close(self) -> None:
        for node in self.nodes:
            node.close()


class _Drop(Exception):
    """Close the connection now without answering."""


class FakeNode:
    """One node of a :class:`FakeCluster`, listening on a free loopback port."""

    def __init__(self, cluster: FakeCluster, node_id: int) -> None:
        self.cluster = cluster
        self.node_id = node_id
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self.endpoint = f"127.0.0.1:{self.port}"
        self.received: list[Packet] = []
        self.raw: list[bytearray] = []  # bytes received, per connection
        self.connections = 0
        self.waiters = 0
        self._open: list[socket.socket] = []
        self._closed = False
        # Fault switches, each consumed once unless noted.
        self.drop_on_command: type | None = None  # close on receiving this command, before executing it
        self.drop_after_ack = False  # enqueue: execute after the Ack, then close without the final answer
        self.silent_after_ack = False  # enqueue: execute after the Ack, then never answer anything again
        self.drop_before_answer: type | None = None  # execute this command, then close without answering
        self.stall = False  # read but never answer (until the connection closes); stays on
        self.refuse_version = False  # stays on
        self.answer_count_wrongly = False  # a nonsensical answer (stays on)
        self.lose_leadership_on: tuple[type, int] | None = None  # execute this command, hand leadership to the
        # given node, answer NotLeader (a leader deposed after proposing)
        self.not_leader_after_ack = False  # enqueue on a non-leader: answer l after the Ack, like the original
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    # --- control -------------------------------------------------------------------------------------------------

    def commands(self, kind: type | None = None) -> list[object]:
        """Commands received, optionally of one type."""
        out = [p.command for p in self.received if isinstance(p, CommandRequest)]
        return [c for c in out if kind is None or isinstance(c, kind)]

    def drop_connections(self) -> None:
        """Close every open client connection (the listener keeps accepting)."""
        for sock in list(self._open):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        self.drop_connections()

    # --- serving -------------------------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            self._open.append(sock)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        raw = bytearray()
        self.raw.append(raw)
        session = _Session(self, sock, raw)
        try:
            session.run()
        except (_Drop, OSError, EOFError):
            pass
        finally:
            session.put_back()
            with contextlib.suppress(OSError):
                sock.close()
            if sock in self._open:
                self._open.remove(sock)


class _Session:
    """One client connection of a fake node."""

    def __init__(self, node: FakeNode, sock: socket.socket, raw: bytearray) -> None:
        self.node = node
        self.sock = sock
        self.raw = raw
        self.decoder = PacketDecoder(Direction.CLIENT_TO_SERVER)
        self.pending: tuple[str, Record] | None = None  # a dequeued record awaiting Ack/Nack

    def read(self) -> Packet:
        while (packet := self.decoder.next_packet()) is None:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError
            self.raw += data
            self.decoder.feed(data)
        self.node.received.append(packet)
        return packet

    def send(self, packet: Packet) -> None:
        self.sock.sendall(encode(packet))

    def put_back(self) -> None:
        if self.pending is not None:
            name, record = self.pending
            self.pending = None
            cluster = self.node.cluster
            with cluster.lock:
                queue = cluster.queues.get(name)
                if queue is not None:
                    queue.put(record)
                    cluster.lock.notify_all()

    def run(self) -> None:
        node = self.node
        if not isinstance(self.read(), AuthorizationRequest):
            raise _Drop
        self.send(AuthorizationResponse())
        bootstrap = self.read()
        if not isinstance(bootstrap, BootstrapRequest):
            raise _Drop
        # The fake speaks protocol 1.0, as the original server does: the client's 1.1 is refused, it falls back.
        if node.refuse_version or (bootstrap.major, bootstrap.minor) != (1, 0):
            self.send(BootstrapResponse(False, "version not supported"))
            raise _Drop
        self.send(BootstrapResponse())
        while True:
            packet = self.read()
            if node.stall:
                continue
            if isinstance(packet, ClusterMetadataRequest):
                cluster = node.cluster
                endpoints = cluster.reported_endpoints or cluster.endpoints()
                self.send(ClusterMetadataResponse(tuple(endpoints), cluster.leader_id, node.node_id))
            elif isinstance(packet, CommandRequest):
                self.command(packet.command)

    def command(self, command: object) -> None:
        node = self.node
        if node.drop_on_command is not None and isinstance(command, node.drop_on_command):
            node.drop_on_command = None
            raise _Drop
        is_leader = node.cluster.leader_id == node.node_id
        if not is_leader and not (isinstance(command, EnqueueCommand) and node.not_leader_after_ack):
            self.send(NotLeader(node.cluster.leader_id))
            return
        answer = self.execute(command, is_leader)
        if node.lose_leadership_on is not None and isinstance(command, node.lose_leadership_on[0]):
            node.cluster.leader_id = node.lose_leadership_on[1]
            node.lose_leadership_on = None
            answer = NotLeader(node.cluster.leader_id)
        if node.drop_before_answer is not None and isinstance(command, node.drop_before_answer):
            node.drop_before_answer = None
            raise _Drop
        if answer is not None:
            self.send(answer)

    def execute(self, command: object, is_leader: bool) -> Packet | None:
        cluster = self.node.cluster
        if isinstance(command, EnqueueCommand):
            return self.enqueue(command, is_leader)
        if isinstance(command, DequeueCommand):
            return self.dequeue(command)
        with cluster.lock:
            queues = cluster.queues
            if isinstance(command, CountCommand):
                if self.node.answer_count_wrongly:
                    return Ok() if len(self.node.commands(CountCommand)) % 2 else CommandResponse(DequeueResponse(None))
                queue = queues.get(command.queue)
                if queue is None:
                    return _error(ErrorCode.QUEUE_DOES_NOT_EXIST)
                return CommandResponse(CountResponse(len(queue.records)))
            if isinstance(command, CreateQueueCommand):
                if command.implementation not in (1, 2):
                    return ErrorResponse(ErrorCode.UNKNOWN_PRIORITY_QUEUE_CODE)
                if command.implementation == 2 and command.priority_range is None:
                    return ErrorResponse(ErrorCode.PRIORITY_RANGE_NOT_SPECIFIED)
                if command.priority_range is not None and command.priority_range[1] < command.priority_range[0]:
                    return ErrorResponse(ErrorCode.INVALID_PRIORITY_RANGE)
                if not is_valid_queue_name(command.queue):
                    return ErrorResponse(ErrorCode.INVALID_QUEUE_NAME)
                if command.queue in queues:
                    return _error(ErrorCode.QUEUE_ALREADY_EXISTS)
                queues[command.queue] = FakeQueue(
                    QueuePolicies(command.max_queue_size, command.max_payload_size, command.priority_range)
                )
                return Ok()
            if isinstance(command, DeleteQueueCommand):
                if not is_valid_queue_name(command.queue) or command.queue == "":
                    return _error(ErrorCode.INVALID_QUEUE_NAME)
                if queues.pop(command.queue, None) is None:
                    return _error(ErrorCode.QUEUE_DOES_NOT_EXIST)
                return Ok()
            if isinstance(command, ListQueuesCommand):
                return CommandResponse(ListQueuesResponse(tuple(
                    QueueInfo(name, len(q.records), queue_metadata(q.policies)) for name, q in queues.items()
                )))
        raise AssertionError(f"unexpected command {command}")

    def enqueue(self, command: EnqueueCommand, is_leader: bool) -> Packet | None:
        node = self.node
        if not is_valid_queue_name(command.queue):
            return ErrorResponse(ErrorCode.INVALID_QUEUE_NAME)
        self.send(Ok())
        decision = self.read()
        if isinstance(decision, Nack):
            return Ok()
        if not isinstance(decision, Ack):
            raise _Drop
        if not is_leader:
            return NotLeader(node.cluster.leader_id)
        cluster = node.cluster
        with cluster.lock:
            queue = cluster.queues.get(command.queue)
            if queue is None:
                return _error(ErrorCode.QUEUE_DOES_NOT_EXIST)
            violation = queue.policies.check_enqueue(len(queue.records), command.priority, len(command.payload))
            if violation is not None:
                return CommandResponse(PolicyViolationResponse(PolicyCode(violation.policy), violation.limits))
            queue.put(Record(queue.next_id, command.priority, command.payload))
            queue.next_id += 1
            cluster.lock.notify_all()
        if node.drop_after_ack:
            node.drop_after_ack = False
            raise _Drop
        if node.silent_after_ack:
            node.silent_after_ack = False
            node.stall = True
            return None
        return Ok()

    def dequeue(self, command: DequeueCommand) -> Packet | None:
        if not is_valid_queue_name(command.queue):
            return _error(ErrorCode.INVALID_QUEUE_NAME)
        cluster = self.node.cluster
        deadline = time.monotonic() + command.timeout_ms / 1000
        with cluster.lock:
            self.node.waiters += 1
            try:
                while True:
                    queue = cluster.queues.get(command.queue)
                    if queue is None:
                        return _error(ErrorCode.QUEUE_DOES_NOT_EXIST)
                    if queue.records:
                        record = queue.records.pop(0)[2]
                        break
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return CommandResponse(DequeueResponse(None))
                    cluster.lock.wait(left)
            finally:
                self.node.waiters -= 1
        self.pending = (command.queue, record)
        self.send(CommandResponse(DequeueResponse(record)))
        decision = self.read()
        if isinstance(decision, Ack):
            self.pending = None
            if self.node.stall:
                return None
        elif isinstance(decision, Nack):
            self.put_back()
        else:
            raise _Drop
        return Ok()


def _error(code: ErrorCode) -> Packet:
    return CommandResponse(CommandErrorResponse(code))
