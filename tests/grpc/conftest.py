"""A real gRPC server on 127.0.0.1 (port 0) over an in-process node on a DiskStorage in a temp dir, and a
client generated from ``taskflux.proto``. The suite runs under ``python -m gevent.monkey --module pytest``;
gRPC's gevent integration is switched on here, before any gRPC object exists."""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gevent
import grpc
import grpc.experimental.gevent as grpc_gevent
import pytest
from gevent import monkey
from gevent.queue import Queue

from taskflux.raft.config import RaftConfig
from taskflux.server.metrics import NodeMetrics
from taskflux.server.node import Node, NodeSettings
from taskflux.server.service import QueueService
from taskflux.storage.disk import DiskStorage

if not monkey.is_module_patched("socket"):
    raise pytest.UsageError("run the gRPC tests under gevent: python -m gevent.monkey --module pytest tests/grpc")
grpc_gevent.init_gevent()

from taskflux.server.grpc_api import taskflux_pb2 as pb  # noqa: E402  (after init_gevent)
from taskflux.server.grpc_api import taskflux_pb2_grpc as pb_grpc  # noqa: E402
from taskflux.server.grpc_api.servicer import GrpcServer, GrpcSettings  # noqa: E402

MAX_PAYLOAD_BYTES = 4096  # small, so that tests can cross both payload limits cheaply
CALL_TIMEOUT = 20.0  # every test call has a deadline: a hang fails the call, not the suite


def wait_until(condition: Callable[[], object], timeout: float = 10.0, what: str = "the condition") -> Any:
    """Poll ``condition`` (letting other greenlets run) until truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        gevent.sleep(0.01)


class Stream:
    """The client side of a bidirectional stream, one message at a time."""

    DONE = object()

    def __init__(self, method: grpc.StreamStreamMultiCallable) -> None:
        self._requests: Queue = Queue()
        self.call = method(iter(self._requests.get, self.DONE), timeout=CALL_TIMEOUT)

    def send(self, request: object) -> None:
        self._requests.put(request)

    def receive(self) -> Any:
        return next(self.call)

    def exchange(self, request: object) -> Any:
        self.send(request)
        return self.receive()

    def done_writing(self) -> None:
        self._requests.put(self.DONE)

    def status(self) -> tuple[grpc.StatusCode, str]:
        """The final status once the call ended (reading any remaining responses first)."""
        with contextlib.suppress(grpc.RpcError):
            for _ in self.call:
                pass
        return self.call.code(), self.call.details()


class Harness:
    """One node (leader, or a follower that never hears of a leader), its gRPC server and a client."""

    def __init__(self, path: Path, *, leader: bool = True, request_timeout: float = 5.0, max_workers: int = 64,
                 metrics: NodeMetrics | None = None):
        self.storage = DiskStorage(path / "data")
        raft = (RaftConfig(node_id=0, cluster_size=1, election_ticks=4, heartbeat_ticks=1) if leader
                else RaftConfig(node_id=1, cluster_size=3))
        settings = NodeSettings(tick_interval=0.01, request_timeout=request_timeout)
        self.node = Node(raft, self.storage, lambda message: None, settings, random.Random(1))
        self.service = QueueService(self.node)
        self.settings = GrpcSettings("127.0.0.1", 0, MAX_PAYLOAD_BYTES, max_workers)  # any free port
        self.server = GrpcServer(self.service, self.node, self.settings, metrics=metrics)
        self.channel: grpc.Channel | None = None
        self.stub: pb_grpc.TaskFluxServiceStub

    def start(self) -> Harness:
        self.node.start()
        if self.node.id == 0:
            wait_until(lambda: self.node.is_leader, what="the single node to lead")
        self.server.start()
        self.channel = grpc.insecure_channel(self.server.address)
        self.stub = pb_grpc.TaskFluxServiceStub(self.channel)
        return self

    def stop(self) -> None:
        if self.channel is not None:
            self.channel.close()
        self.server.stop(0)
        self.node.stop()
        self.storage.close()

    # --- conveniences over the stub ---

    def count(self, queue: str = "") -> int:
        response = self.stub.GetCount(pb.GetCountRequest(queue=queue), timeout=CALL_TIMEOUT)
        assert response.WhichOneof("result") == "data", response
        return response.data.count

    def create(self, queue: str, **policies: Any) -> pb.CreateQueueResponse:
        code = policies.pop("code", pb.Heap4)
        request = pb.CreateQueueRequest(queue=queue, code=code, policies=pb.QueuePolicyInfo(**policies))
        return self.stub.CreateQueue(request, timeout=CALL_TIMEOUT)

    def enqueue_stream(self) -> Stream:
        return Stream(self.stub.Enqueue)

    def dequeue_stream(self) -> Stream:
        return Stream(self.stub.Dequeue)

    def enqueue(self, queue: str, priority: int, payload: bytes) -> pb.EnqueueResponse:
        """One round (data, ack) on a new stream: the final answer, or the refusal of the data."""
        stream = self.enqueue_stream()
        answer = stream.exchange(data(queue, priority, payload))
        if answer.WhichOneof("result") == "data":
            answer = stream.exchange(enqueue_ack(True))
        stream.done_writing()
        assert stream.status()[0] is grpc.StatusCode.OK
        return answer

    def waiting_consumers(self, queue: str) -> int:
        """Dequeues of ``queue`` blocked for a record on the node (white-box: no client can see this)."""
        return len(self.node._consumers.get(queue, ()))


def data(queue: str, priority: int, payload: bytes) -> pb.EnqueueRequest:
    return pb.EnqueueRequest(data=pb.EnqueueRequest.EnqueueRequestData(
        queue=queue, record=pb.QueueRecord(priority=priority, payload=payload)))


def enqueue_ack(value: bool) -> pb.EnqueueRequest:
    return pb.EnqueueRequest(ack=pb.AckMessage(ack=value))


def dequeue(queue: str, timeout_ms: int = 0) -> pb.DequeueRequest:
    return pb.DequeueRequest(request=pb.DequeueRequest.DequeueRequestData(queue=queue, timeout=timeout_ms))


def dequeue_ack(value: bool) -> pb.DequeueRequest:
    return pb.DequeueRequest(ack=pb.AckMessage(ack=value))


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    started = Harness(tmp_path).start()
    yield started
    started.stop()


@pytest.fixture
def follower(tmp_path: Path) -> Iterator[Harness]:
    started = Harness(tmp_path, leader=False).start()
    yield started
    started.stop()
