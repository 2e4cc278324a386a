#!/usr/bin/env python3
"""The framework's ceiling: the smallest gevent server the peer kit can drive as ``taskflux:1node``.

    /tmp/peerbench/.venv/bin/python /tmp/peerbench/peerbench.py run \\
        --targets taskflux:1node,beanstalkd:durable --repeat 2 \\
        --opt taskflux.repo=$PWD/scripts/ceiling --opt taskflux.python=$PWD/.venv/bin/python \\
        --baseline beanstalkd:durable

It answers exactly what the kit sends (handshake, ClusterMetadata, CreateQueue, the two-phase enqueue,
dequeue + Ack) with one greenlet per connection, keeps records in one in-memory heap and makes every
Ack durable the way the node does: appended to a file, fdatasync in the node's disk thread, group
commit across connections. No raft, no log format, no checksums, no state machine, no validation: what
it measures is the cost of gevent, the sockets and the fsync hand-off alone, i.e. an upper bound for
any TaskFlux node on the same machine. Not a server to use; it ignores everything it does not need.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import heapq  # noqa: E402
import itertools  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
import yaml  # noqa: E402
from gevent.event import Event  # noqa: E402
from gevent.server import StreamServer  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from taskflux.server.disk_thread import DiskThread  # noqa: E402

I32 = struct.Struct(">i")
U32 = struct.Struct(">I")
I64 = struct.Struct(">q")
RECORD = struct.Struct(">Qq")


class GroupCommit:
    """Every append waits for one fdatasync that covers it; appends made meanwhile share the next one."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.disk = DiskThread()
        self.pending: list[tuple[bytes, Event]] = []
        self.wake = Event()
        gevent.spawn(self._flush_forever)

    def append(self, data: bytes) -> None:
        done = Event()
        self.pending.append((data, done))
        self.wake.set()
        done.wait()

    def _write(self, data: bytes) -> None:
        os.write(self.fd, data)
        os.fdatasync(self.fd)

    def _flush_forever(self) -> None:
        while True:
            self.wake.wait()
            self.wake.clear()
            batch, self.pending = self.pending, []
            if batch:
                self.disk.call(self._write, b"".join(data for data, _ in batch))
                for _, done in batch:
                    done.set()


class Connection:
    """Reads exact byte counts from a socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def take(self, n: int) -> bytes:
        while len(self.buffer) < n:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError
            self.buffer += data
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out


def serve(log: GroupCommit, port: int) -> None:
    heap: list[tuple[int, int, bytes]] = []
    sequence = itertools.count()
    available = Event()

    def handle(sock: socket.socket, _address: object) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Connection(sock)
        try:
            conn.take(2)
            sock.sendall(b"\x61\x01")
            conn.take(13)
            sock.sendall(b"\x62\x01")
            while True:
                marker = conn.take(1)
                if marker == b"\x4d":  # ClusterMetadata: no endpoints, leader 0, this node 0
                    sock.sendall(b"\x6d" + I32.pack(0) + I32.pack(0) + I32.pack(0))
                    continue
                kind = conn.take(1)
                conn.take(conn.take(1)[0])  # queue name (one queue is all the kit uses)
                if kind == b"\x51":  # CreateQueue
                    conn.take(13)
                    sock.sendall(b"\x6b")
                elif kind == b"\x45":  # Enqueue, Ok, Ack, Ok
                    priority = I64.unpack(conn.take(8))[0]
                    payload = conn.take(I32.unpack(conn.take(4))[0])
                    sock.sendall(b"\x6b")
                    conn.take(1)
                    log.append(payload)
                    heapq.heappush(heap, (priority, next(sequence), payload))
                    available.set()
                    sock.sendall(b"\x6b")
                elif kind == b"\x44":  # Dequeue, record, Ack, Ok
                    timeout = U32.unpack(conn.take(4))[0] / 1000
                    if not heap:
                        available.clear()
                        available.wait(timeout)
                    if not heap:
                        sock.sendall(b"\x63\x64\x00")
                        continue
                    priority, record_id, payload = heapq.heappop(heap)
                    sock.sendall(b"\x63\x64\x01" + RECORD.pack(record_id, priority) + I32.pack(len(payload)) + payload)
                    conn.take(1)
                    log.append(RECORD.pack(record_id, priority))
                    sock.sendall(b"\x6b")
        except (EOFError, OSError):
            pass

    StreamServer(("127.0.0.1", port), handle).serve_forever()


def main() -> None:
    with open(sys.argv[sys.argv.index("-c") + 1]) as file:
        config = yaml.safe_load(file)
    log = GroupCommit(os.path.join(config["data_directory"], "ceiling.log"))
    serve(log, int(config["tcp_adapter_listen_port"]))


if __name__ == "__main__":
    main()
