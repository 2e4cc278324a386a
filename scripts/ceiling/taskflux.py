#!/usr/bin/env python3
"""The framework's ceiling: the smallest gevent server the peer kit can drive as ``taskflux:1node`` or
``taskflux:3node``.

    /tmp/peerbench/.venv/bin/python /tmp/peerbench/peerbench.py run \\
        --targets taskflux:1node,beanstalkd:durable --repeat 2 \\
        --opt taskflux.repo=$PWD/scripts/ceiling --opt taskflux.python=$PWD/.venv/bin/python \\
        --baseline beanstalkd:durable
    # replicated: --targets taskflux:3node,redis:durable (and -P 32 -C 32); env CEILING_SYNC=... as below

It answers exactly what the kit sends (handshake, ClusterMetadata, CreateQueue, the two-phase enqueue,
dequeue + Ack) with one greenlet per connection, keeps records in one in-memory heap and makes every
Ack durable the way the node does: appended to a file, fdatasync in the node's disk thread, group
commit across connections. No raft, no log format, no checksums, no state machine, no validation: what
it measures is the cost of gevent, the sockets and the fsync hand-off alone, i.e. an upper bound for
any TaskFlux node on the same machine. Not a server to use; it ignores everything it does not need.

With three peers (``--targets taskflux:3node``) node 0 is the leader for good and the two others are bare
followers: each batch the leader flushes is also sent, framed, to both followers over one TCP link each; a
follower appends every batch it has read to its file, fdatasyncs and answers with the highest batch number now
durable. A batch is committed once the leader's own fdatasync and one follower's answer cover it; the leader
pipelines (a batch is sent and synced while the previous one still waits for its answers). No elections, no
terms, no checksums, no retries: the floor of a replicated node on the same stack, not a replicated server.

Where the fdatasync runs, on every node: ``CEILING_SYNC=thread`` (default: the node's ``DiskThread``),
``inline`` (on the hub, which stops while it lasts) or ``process`` (a helper process syncs the file the hub
wrote; the hub waits on a pipe). ``CEILING_FOLLOWER_INLINE=1`` puts only the followers' fdatasync on the hub.
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


SYNC_MODE = os.environ.get("CEILING_SYNC", "thread")  # thread | inline | process
FRAME = struct.Struct(">QI")  # batch number, length
ACK = struct.Struct(">Q")


class Syncer:
    """fdatasync in a helper process: the hub writes one byte to ask and reads one back when it is done.
    No GIL is shared and no thread is woken inside this process: only two pipe syscalls per sync."""

    CODE = (
        "import os, sys\n"
        "fd = os.open(sys.argv[1], os.O_WRONLY)\n"
        "while os.read(0, 4096):\n"
        "    os.fdatasync(fd); os.write(1, b'd')\n"
    )

    def __init__(self, path: str) -> None:
        import subprocess

        self.process = subprocess.Popen([sys.executable, "-c", self.CODE, path],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)

    def sync(self) -> None:
        self.process.stdin.write(b"s")
        self.process.stdout.read(1)


class GroupCommit:
    """Every append waits for one fdatasync that covers it; appends made meanwhile share the next one.
    With followers, a batch is also sent to each of them and waits for one follower's answer too."""

    def __init__(self, path: str, followers: list[socket.socket] | None = None) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.disk = DiskThread()
        self.syncer = Syncer(path) if SYNC_MODE == "process" else None
        self.pending: list[tuple[bytes, Event]] = []
        self.wake = Event()
        self.followers = followers or []
        self.sequence = 0
        self.local = 0  # highest batch durable here
        self.acked = 0  # highest batch durable on at least one follower
        self.waiting: list[tuple[int, list[Event]]] = []
        for link in self.followers:
            gevent.spawn(self._read_acks, link)
        gevent.spawn(self._flush_forever)

    def append(self, data: bytes) -> None:
        done = Event()
        self.pending.append((data, done))
        self.wake.set()
        done.wait()

    def _write(self, data: bytes) -> None:
        os.write(self.fd, data)
        os.fdatasync(self.fd)

    def durable_write(self, data: bytes, mode: str = SYNC_MODE) -> None:
        """Append ``data`` and wait until it is on disk, the way ``mode`` says."""
        if mode == "inline":
            self._write(data)
        elif mode == "process":
            os.write(self.fd, data)  # to the page cache; the helper process's fdatasync makes it durable
            self.syncer.sync()
        else:
            self.disk.call(self._write, data)


    def _flush_forever(self) -> None:
        while True:
            self.wake.wait()
            self.wake.clear()
            batch, self.pending = self.pending, []
            if not batch:
                continue
            data = b"".join(data for data, _ in batch)
            if not self.followers:
                self.durable_write(data)
                for _, done in batch:
                    done.set()
                continue
            self.sequence += 1
            frame = FRAME.pack(self.sequence, len(data)) + data
            for link in self.followers:
                link.sendall(frame)
            self.waiting.append((self.sequence, [done for _, done in batch]))
            self.durable_write(data)
            self.local = self.sequence
            self._release()

    def _read_acks(self, link: socket.socket) -> None:
        conn = Connection(link)
        while True:
            self.acked = max(self.acked, ACK.unpack(conn.take(8))[0])
            self._release()

    def _release(self) -> None:
        committed = min(self.local, self.acked)
        while self.waiting and self.waiting[0][0] <= committed:
            for done in self.waiting.pop(0)[1]:
                done.set()


def follow(path: str, port: int) -> None:
    """A bare follower: append what the leader sends, fdatasync, answer with the batch number now durable."""
    log = GroupCommit(path)
    mode = "inline" if os.environ.get("CEILING_FOLLOWER_INLINE") == "1" else SYNC_MODE

    def handle(sock: socket.socket, _address: object) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer = b""
        try:
            while True:
                data = sock.recv(262144)
                if not data:
                    return
                buffer += data
                chunks, last = [], 0
                while len(buffer) >= FRAME.size:
                    sequence, length = FRAME.unpack_from(buffer)
                    if len(buffer) < FRAME.size + length:
                        break
                    chunks.append(buffer[FRAME.size:FRAME.size + length])
                    buffer = buffer[FRAME.size + length:]
                    last = sequence
                if chunks:
                    log.durable_write(b"".join(chunks), mode)
                    sock.sendall(ACK.pack(last))
        except OSError:
            pass

    StreamServer(("127.0.0.1", port), handle).serve_forever()


def dial(address: str) -> socket.socket:
    """A link to a follower, retried until it listens (the kit starts the nodes one after another)."""
    host, port = address.rsplit(":", 1)
    for _ in range(200):
        try:
            link = socket.create_connection((host, int(port)))
            link.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return link
        except OSError:
            gevent.sleep(0.05)
    raise SystemExit(f"follower {address} never listened")


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


def serve(log: GroupCommit | None, port: int, leader: int, me: int) -> None:
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
                if marker == b"\x4d":  # ClusterMetadata: no endpoints, the leader, this node
                    sock.sendall(b"\x6d" + I32.pack(0) + I32.pack(leader) + I32.pack(me))
                    continue
                assert log is not None, "a follower of the ceiling serves ClusterMetadata only"
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
    path = os.path.join(config["data_directory"], "ceiling.log")
    me = int(config.get("cluster_node_id", 0))
    peers = list(config.get("cluster_peers") or [])
    port = int(config["tcp_adapter_listen_port"])
    if me != 0:
        gevent.spawn(serve, None, port, 0, me)
        follow(path, int(config["cluster_listen_port"]))
        return
    followers = [dial(address) for i, address in enumerate(peers) if i != me]
    serve(GroupCommit(path, followers), port, 0, me)


if __name__ == "__main__":
    main()
