"""The benchmark's REST and gRPC clients: the binary protocol's put / get + ack closed loop, per interface.

REST: ``put`` is one committed enqueue (``POST .../records``); ``get`` is a leased dequeue plus its ack (two
requests, like the binary protocol's dequeue + Ack). One keep-alive connection per client.
gRPC: one Enqueue and one Dequeue stream per client; ``put`` is a data + ack round, ``get`` a request +
ack round. gRPC is imported only where a client is made (after the fork: no gRPC state crosses it).
"""

from __future__ import annotations

import base64
import http.client
import json
import queue
import socket
from typing import Any
from urllib.parse import quote


class ClientError(Exception):
    """An answer the benchmark did not expect."""


class NotLeader(ClientError):
    """The node is not the leader (421) or knows none (503)."""


class RestConnection:
    """One keep-alive HTTP connection to a node's REST interface."""

    def __init__(self, address: tuple[str, int], queue: str, timeout: float) -> None:
        self.conn = http.client.HTTPConnection(address[0], address[1], timeout=timeout)
        self.conn.connect()
        # http.client writes a request with a body in two sends: without this, Nagle holds the second.
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        name = quote(queue, safe="")
        self.records = f"/api/v1/queues/{name}/records?priority="
        self.batch = f"/api/v1/queues/{name}/records/batch"
        self.dequeue = f"/api/v1/queues/{name}/dequeue?lease=60s&wait="

    def _call(self, path: str, body: bytes | None = None, kind: str = "application/octet-stream") -> tuple[int, bytes]:
        headers = {"Content-Type": kind} if body is not None else {}
        self.conn.request("POST", path, body, headers)
        response = self.conn.getresponse()
        data = response.read()
        if response.status in (421, 503):
            raise NotLeader(data.decode(errors="replace"))
        return response.status, data

    def put(self, priority: int, payload: bytes) -> None:
        status, data = self._call(f"{self.records}{priority}", payload)
        if status != 201:
            raise ClientError(f"enqueue answered {status}: {data[:200]!r}")

    def put_many(self, priority: int, payload: bytes, keys: list[bytes]) -> None:
        """One record (with ``?key=``) per POST .../records, or a batch (JSON) per POST .../records/batch."""
        if len(keys) == 1:
            key = f"&key={keys[0].decode()}" if keys[0] else ""
            status, data = self._call(f"{self.records}{priority}{key}", payload)
        else:
            encoded = base64.b64encode(payload).decode("ascii")
            body = json.dumps({"records": [{"priority": priority, "payload_base64": encoded,
                                            **({"key": key.decode()} if key else {})} for key in keys]})
            status, data = self._call(self.batch, body.encode(), "application/json")
        if status != 201:
            raise ClientError(f"enqueue answered {status}: {data[:200]!r}")

    def get(self, timeout_ms: int) -> bool:
        status, data = self._call(f"{self.dequeue}{timeout_ms}ms")
        if status == 204:
            return False
        if status != 200:
            raise ClientError(f"dequeue answered {status}: {data[:200]!r}")
        token = json.loads(data)["lease"]
        status, data = self._call(f"/api/v1/leases/{token}/ack")
        if status != 204:
            raise ClientError(f"ack answered {status}: {data[:200]!r}")
        return True

    def close(self) -> None:
        self.conn.close()


class _Stream:
    """A bidirectional gRPC stream driven one message at a time."""

    def __init__(self, method: Any) -> None:
        self._requests: queue.Queue[object] = queue.Queue()
        self._responses = method(iter(self._requests.get, None))

    def exchange(self, request: object) -> Any:
        self._requests.put(request)
        return next(self._responses)

    def close(self) -> None:
        self._requests.put(None)


class GrpcConnection:
    """One channel to a node's gRPC interface, with an Enqueue and a Dequeue stream."""

    def __init__(self, address: tuple[str, int], queue_name: str, timeout: float) -> None:
        import grpc

        from taskflux.server.grpc_api import taskflux_pb2 as pb
        from taskflux.server.grpc_api import taskflux_pb2_grpc as pb_grpc

        self.pb = pb
        self.queue = queue_name
        self.channel = grpc.insecure_channel(f"{address[0]}:{address[1]}")
        grpc.channel_ready_future(self.channel).result(timeout=timeout)
        stub = self.stub = pb_grpc.TaskFluxServiceStub(self.channel)
        self.enqueue = _Stream(stub.Enqueue)
        self.dequeue = _Stream(stub.Dequeue)
        self.ack_enqueue = pb.EnqueueRequest(ack=pb.AckMessage(ack=True))
        self.ack_dequeue = pb.DequeueRequest(ack=pb.AckMessage(ack=True))

    @staticmethod
    def _check(answer: Any, expected: str) -> None:
        kind = answer.WhichOneof("result")
        if kind == "not_leader":
            raise NotLeader(str(answer).strip())
        if kind != expected:
            raise ClientError(str(answer).strip())

    def put(self, priority: int, payload: bytes) -> None:
        pb = self.pb
        data = pb.EnqueueRequest(data=pb.EnqueueRequest.EnqueueRequestData(
            queue=self.queue, record=pb.QueueRecord(priority=priority, payload=payload)))
        self._check(self.enqueue.exchange(data), "data")
        answer = self.enqueue.exchange(self.ack_enqueue)
        self._check(answer, "data")
        if answer.data.HasField("policy_violation"):
            raise ClientError(str(answer).strip())

    def put_many(self, priority: int, payload: bytes, keys: list[bytes]) -> None:
        """One EnqueueMany call of ``len(keys)`` records."""
        pb = self.pb
        answer = self.stub.EnqueueMany(pb.EnqueueManyRequest(queue=self.queue, records=[
            pb.NewRecord(priority=priority, payload=payload, key=key) for key in keys]))
        self._check(answer, "data")

    def get(self, timeout_ms: int) -> bool:
        pb = self.pb
        request = pb.DequeueRequest(request=pb.DequeueRequest.DequeueRequestData(queue=self.queue,
                                                                                 timeout=timeout_ms))
        answer = self.dequeue.exchange(request)
        self._check(answer, "success")
        if not answer.success.HasField("record"):
            return False
        self._check(self.dequeue.exchange(self.ack_dequeue), "success")
        return True

    def close(self) -> None:
        self.enqueue.close()
        self.dequeue.close()
        self.channel.close()
