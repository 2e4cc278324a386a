"""Hostile clients in a process of their own, so that their CPU time is not the node's: a test measures what
the node does for real clients while ``attacking(kind, address)`` runs one of ``ATTACKS`` in a loop
(a few threads, loopback only, bounded in time).

Run directly: ``python -m tests.support.attackers KIND HOST:PORT SECONDS THREADS``.
"""

from __future__ import annotations

import contextlib
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

Address = tuple[str, int]


def _exchange(address: Address, data: bytes, read: bool = True) -> None:
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(data)
        if read:
            sock.recv(65536)


def http_oversized_claim(address: Address) -> None:
    _exchange(address, b"POST /api/v1/queues//records?priority=1 HTTP/1.1\r\nHost: x\r\n"
                       b"Content-Type: application/octet-stream\r\nContent-Length: 99999999999\r\n\r\n")


def http_oversized_body(address: Address) -> None:
    body = b"{" + b" " * 300_000 + b"}"
    _exchange(address, b"POST /commands/v1/enqueue HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


def http_wrong_type(address: Address) -> None:
    _exchange(address, b"POST /api/v1/queues//records HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n"
                       b"Content-Length: 9\r\n\r\n<record/>")


def http_garbage(address: Address) -> None:
    _exchange(address, bytes(range(256)) * 16 + b"\r\n\r\n")


def slow_drip(address: Address) -> None:
    """A request head (or an HTTP/2 preface) one byte at a time, 50 ms apart, for as long as it is taken."""
    with socket.create_connection(address, timeout=5) as sock:
        for byte in b"POST /api/v1/queues//records HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000:
            sock.send(bytes([byte]))
            time.sleep(0.05)


def grpc_garbage(address: Address) -> None:
    """Not HTTP/2 at all, then a valid preface followed by frames that make no sense."""
    _exchange(address, bytes(range(256)) * 64)
    _exchange(address, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x40\x00\x09\x01" + b"\xff" * 20_000, read=False)


def _grpc_channel(address: Address):  # type: ignore[no-untyped-def]
    import grpc

    return grpc.insecure_channel(f"{address[0]}:{address[1]}",
                                 options=[("grpc.max_send_message_length", 64 * 1024 * 1024)])


def grpc_oversized(address: Address) -> None:
    """GetCount requests of 8 MiB and malformed protobuf, on one channel per round."""
    import grpc

    with _grpc_channel(address) as channel:
        call = channel.unary_unary("/taskflux.TaskFluxService/GetCount")
        for request in (b"\x0a" + b"\xff\xff\xff\x03" + b"x" * (8 * 1024 * 1024), b"\xff" * 64):
            with contextlib.suppress(grpc.RpcError):
                call(request, timeout=5)


ATTACKS: dict[str, Callable[[Address], None]] = {
    "http-oversized-claim": http_oversized_claim,
    "http-oversized-body": http_oversized_body,
    "http-wrong-type": http_wrong_type,
    "http-garbage": http_garbage,
    "slow-drip": slow_drip,
    "grpc-garbage": grpc_garbage,
    "grpc-oversized": grpc_oversized,
}


def run(kind: str, address: Address, seconds: float, threads: int) -> None:
    attack = ATTACKS[kind]
    deadline = time.monotonic() + seconds
    with contextlib.suppress(OSError):
        attack(address)  # one round first, so that the node is surely under attack once "ready" is read
    print("ready", flush=True)

    def loop() -> None:
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                attack(address)

    workers = [threading.Thread(target=loop, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def percentile(seconds: list[float], fraction: float) -> float:
    """The ``fraction`` percentile (0.99: p99) of latencies in seconds."""
    ordered = sorted(seconds)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


# The target is 50 ms (printed with -s); the assertion only catches a lock-out (seconds), since a loaded
# 2-core test machine shared with other test runs shows spikes of a few hundred ms now and then.
P99_BOUND_SECONDS = 1.0


def assert_real_clients_served(latencies: Callable[[], list[float]], attack: str, what: str) -> None:
    """Measure real clients with ``latencies`` (seconds of ``what``, one per round) during ``attack``: print
    their p50 and p99, and fail on a lock-out (p99 past ``P99_BOUND_SECONDS``)."""
    seconds = latencies()
    p50, p99 = percentile(seconds, 0.5), percentile(seconds, 0.99)
    print(f"\n{attack}: real clients' {what} p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")
    assert p99 < P99_BOUND_SECONDS, f"{attack}: p99 {p99 * 1000:.1f} ms"


@contextlib.contextmanager
def idle_connections(address: str, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections to ``address`` (``host:port``) that send nothing (unless the block makes them),
    all closed when the block ends."""
    host, port = address.rsplit(":", 1)
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sockets.append(socket.create_connection((host, int(port)), timeout=10))
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


@contextlib.contextmanager
def attacking(kind: str, address: str, threads: int = 4, seconds: float = 60.0) -> Iterator[None]:
    """Run attack ``kind`` against ``address`` (``host:port``) in another process while the block runs."""
    assert kind in ATTACKS, kind
    process = subprocess.Popen([sys.executable, "-m", "tests.support.attackers", kind, address, str(seconds),
                                str(threads)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert process.stdout is not None
        readable, _, _ = select.select([process.stdout], [], [], 30.0)
        assert readable and process.stdout.readline() == b"ready\n", f"the {kind} attacker did not start"
        yield
    finally:
        process.kill()
        process.wait(timeout=10)


if __name__ == "__main__":
    host, port = sys.argv[2].rsplit(":", 1)
    run(sys.argv[1], (host, int(port)), float(sys.argv[3]), int(sys.argv[4]))
