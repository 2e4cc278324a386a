#!/usr/bin/env python3
"""Hostile traffic on a node's client port while other clients work: their latency and the node's memory.

    python scripts/hostile_client.py [--seconds 10] [--clients 4] [--mode MODE ...] [--address HOST:PORT --pid PID]
    python scripts/hostile_client.py --stream MODE --address HOST:PORT [--seconds 10]

Starts a throw-away single node on loopback (or uses ``--address``, with ``--pid`` for its memory). For each mode
one process streams hostile bytes at the client port as fast as it can, reconnecting whenever the node closes the
connection, while ``--clients`` threads each open a fresh connection over and over, do the handshake and enqueue
one record. Prints, per mode, the handshake and enqueue latency (p50 / p99 / max), how many hostile connections
the node closed, the node's resident memory growth (peak minus the value before the mode started) and the CPU
the node used (cores, averaged over the mode).

Modes:
  none            no hostile traffic: the baseline
  metadata-claim  no handshake; a ClusterMetadataResponse (6D) claiming 1,000,000 endpoints of 60,000 bytes
  ignored-stream  handshake, then 6D packets of 1000 empty endpoints (4013 bytes each), parsed and ignored
  tiny-packets    handshake, then one-byte Ok (6B) packets, parsed and ignored
  max-enqueue     handshake, then Enqueues with a max_payload_size payload, each answered with a Nack
Loopback only; every mode ends after ``--seconds``. ``--stream`` only streams one mode at ``--address`` and prints
``<bytes sent> <connections closed by the node>`` (the integration tests run it as their hostile process).
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from taskflux.wire import client_protocol as wire
from taskflux.wire.primitives import I32, I64

HANDSHAKE = wire.encode(wire.AuthorizationRequest()) + wire.encode(wire.BootstrapRequest())
HANDSHAKE_ANSWER = wire.encode(wire.AuthorizationResponse()) + wire.encode(wire.BootstrapResponse())
CHUNK_BYTES = 64 * 1024
DEFAULT_MAX_PAYLOAD = 16 * 1024 * 1024


def _metadata_claim(max_payload: int) -> tuple[bytes, Iterator[bytes]]:
    endpoint = I32.pack(60_000) + b"x" * 60_000
    body = endpoint * (CHUNK_BYTES // len(endpoint) + 1)

    def chunks() -> Iterator[bytes]:
        yield bytes.fromhex("6D") + I32.pack(1_000_000)
        while True:
            yield body
    return b"", chunks()


def _ignored_stream(max_payload: int) -> tuple[bytes, Iterator[bytes]]:
    packet = wire.encode(wire.ClusterMetadataResponse(("",) * 1000, 0, 0))
    batch = packet * (CHUNK_BYTES // len(packet))
    return HANDSHAKE, iter(lambda: batch, None)


def _tiny_packets(max_payload: int) -> tuple[bytes, Iterator[bytes]]:
    batch = wire.encode(wire.Ok()) * CHUNK_BYTES
    return HANDSHAKE, iter(lambda: batch, None)


def _max_enqueue(max_payload: int) -> tuple[bytes, Iterator[bytes]]:
    header = bytes.fromhex("43 45 07") + b"hostile" + I64.pack(0) + I32.pack(max_payload)
    body = b"x" * CHUNK_BYTES
    nack = wire.encode(wire.Nack())

    def chunks() -> Iterator[bytes]:
        while True:
            yield header
            left = max_payload
            while left > 0:
                yield body[: min(left, CHUNK_BYTES)]
                left -= CHUNK_BYTES
            yield nack
    return HANDSHAKE, chunks()


def _none(max_payload: int) -> tuple[bytes, Iterator[bytes]]:
    return b"", iter(())


MODES: dict[str, Callable[[int], tuple[bytes, Iterator[bytes]]]] = {
    "none": _none,
    "metadata-claim": _metadata_claim,
    "ignored-stream": _ignored_stream,
    "tiny-packets": _tiny_packets,
    "max-enqueue": _max_enqueue,
}


def _connect(address: str, timeout: float) -> socket.socket:
    host, port = address.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=timeout)


def stream_hostile(address: str, mode: str, seconds: float, max_payload: int = DEFAULT_MAX_PAYLOAD) -> tuple[int, int]:
    """Stream ``mode``'s bytes at ``address`` for ``seconds`` on one connection, and on a new one whenever the
    node closes it. Returns (bytes sent, connections the node closed)."""
    until = time.monotonic() + seconds
    sent = closed = 0
    if mode == "none":
        time.sleep(seconds)
    while time.monotonic() < until:
        preamble, chunks = MODES[mode](max_payload)
        try:
            with _connect(address, timeout=0.5) as sock:
                sock.sendall(preamble)
                pending = memoryview(b"")
                while time.monotonic() < until:
                    if not pending:
                        pending = memoryview(next(chunks))
                    with contextlib.suppress(TimeoutError):  # the node reads slowly: keep pushing on this one
                        count = sock.send(pending)
                        sent += count
                        pending = pending[count:]
                    if select.select([sock], [], [], 0)[0] and not sock.recv(65536):  # drain the node's answers
                        raise ConnectionResetError("closed by the node")
        except OSError:
            closed += 1
            time.sleep(0.001)
    return sent, closed


@dataclass
class Latencies:
    """Seconds per handshake and per enqueue (the two phases with the Ack), and the failures."""

    handshake: list[float] = field(default_factory=list)
    enqueue: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def timed_round(address: str, queue: str, latencies: Latencies, timeout: float = 10.0) -> None:
    """One fresh connection: handshake, enqueue one record (with its Ack), close. Records the latencies."""
    started = time.perf_counter()
    try:
        with _connect(address, timeout) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(HANDSHAKE)
            _expect(sock, HANDSHAKE_ANSWER)
            shaken = time.perf_counter()
            sock.sendall(wire.encode(wire.CommandRequest(wire.EnqueueCommand(queue, 1, b"probe"))))
            _expect(sock, wire.encode(wire.Ok()))
            sock.sendall(wire.encode(wire.Ack()))
            _expect(sock, wire.encode(wire.Ok()))
            done = time.perf_counter()
    except (OSError, AssertionError) as error:
        latencies.failures.append(f"{type(error).__name__}: {error}")
        return
    latencies.handshake.append(shaken - started)
    latencies.enqueue.append(done - shaken)


def _expect(sock: socket.socket, expected: bytes) -> None:
    data = b""
    while len(data) < len(expected):
        chunk = sock.recv(len(expected) - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {data.hex()}")
        data += chunk
    assert data == expected, f"{data.hex()} instead of {expected.hex()}"


def probe_clients(address: str, queue: str, clients: int, seconds: float) -> Latencies:
    """``clients`` threads doing :func:`timed_round` back to back for ``seconds``."""
    latencies = Latencies()
    until = time.monotonic() + seconds

    def loop() -> None:
        while time.monotonic() < until:
            timed_round(address, queue, latencies)

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 30)
    return latencies


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stream_in_process(address: str, mode: str, seconds: float, max_payload: int, out: mp.Queue) -> None:
    out.put(stream_hostile(address, mode, seconds, max_payload))


def run_mode(address: str, pid: int | None, mode: str, seconds: float, clients: int, max_payload: int) -> str:
    """One mode: hostile stream in its own process, probes in threads, RSS sampled. Returns the report line."""
    baseline = rss_bytes(pid) if pid else 0
    cpu_before = cpu_seconds(pid) if pid else 0.0
    peak = [baseline]
    results: mp.Queue = mp.Queue()
    hostile = mp.Process(target=_stream_in_process, args=(address, mode, seconds, max_payload, results))
    hostile.start()
    sampling = threading.Event()

    def sample() -> None:
        while pid and not sampling.wait(0.05):
            peak[0] = max(peak[0], rss_bytes(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    time.sleep(min(1.0, seconds / 4))  # the stream is under way before the first probe
    latencies = probe_clients(address, f"probe-{mode}", clients, seconds - min(1.0, seconds / 4))
    sent, closed = results.get(timeout=seconds + 30)
    hostile.join(30)
    sampling.set()
    sampler.join(5)
    node_cpu = (cpu_seconds(pid) - cpu_before) / seconds if pid else float("nan")
    ms = 1000
    return (f"{mode:15} rounds {len(latencies.enqueue):5}  failures {len(latencies.failures):3}  "
            f"handshake p50/p99/max {percentile(latencies.handshake, .5) * ms:6.1f} "
            f"{percentile(latencies.handshake, .99) * ms:6.1f} {max(latencies.handshake, default=0) * ms:6.1f} ms  "
            f"enqueue p50/p99/max {percentile(latencies.enqueue, .5) * ms:6.1f} "
            f"{percentile(latencies.enqueue, .99) * ms:6.1f} {max(latencies.enqueue, default=0) * ms:6.1f} ms  "
            f"hostile {sent / 1e6:8.1f} MB, closed by the node {closed:6}  "
            f"RSS growth {(peak[0] - baseline) / 2**20:6.1f} MiB  node CPU {node_cpu:4.2f} cores")


def _start_node(directory: Path, max_payload: int) -> tuple[str, subprocess.Popen[bytes]]:
    from scripts.local_nodes import free_port, node_command, spawn, wait_listening

    cluster_port, client_port = free_port(), free_port()
    command = node_command(sys.executable, 0, [cluster_port], client_port, directory / "data",
                           [f"--max-payload-size={max_payload}"])
    log = directory / "node.log"
    process = spawn(command, log)
    wait_listening(process, client_port, log)
    address = f"127.0.0.1:{client_port}"
    deadline = time.monotonic() + 30
    while True:  # until a leader is elected and the queues are created
        with contextlib.suppress(OSError, AssertionError), _connect(address, 5) as sock:
            sock.sendall(HANDSHAKE)
            _expect(sock, HANDSHAKE_ANSWER)
            for mode in MODES:
                sock.sendall(wire.encode(wire.CommandRequest(wire.CreateQueueCommand(f"probe-{mode}"))))
                _expect(sock, wire.encode(wire.Ok()))
            sock.sendall(wire.encode(wire.CommandRequest(wire.CreateQueueCommand("hostile"))))
            _expect(sock, wire.encode(wire.Ok()))
            return address, process
        if time.monotonic() > deadline:
            process.kill()
            raise SystemExit(f"the node did not create the queues within 30 s; see {log}")
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="per mode (default 10)")
    parser.add_argument("--clients", type=int, default=4, help="probing client threads (default 4)")
    parser.add_argument("--mode", action="append", choices=sorted(MODES), help="default: every mode")
    parser.add_argument("--address", help="an existing node's client port (loopback); default: start one")
    parser.add_argument("--pid", type=int, help="that node's process id, for its memory")
    parser.add_argument("--max-payload-size", type=int, default=DEFAULT_MAX_PAYLOAD)
    parser.add_argument("--stream", choices=sorted(MODES), help="only stream this mode at --address")
    args = parser.parse_args()
    if args.address and not args.address.startswith("127."):
        parser.error("--address must be on loopback (127.x.x.x)")
    if args.stream:
        if not args.address:
            parser.error("--stream needs --address")
        sent, closed = stream_hostile(args.address, args.stream, args.seconds, args.max_payload_size)
        print(sent, closed)
        return
    modes = args.mode or list(MODES)
    with tempfile.TemporaryDirectory() as directory:
        process = None
        if args.address:
            address, pid = args.address, args.pid
        else:
            address, process = _start_node(Path(directory), args.max_payload_size)
            pid = process.pid
        try:
            print(f"node {address}, max_payload_size {args.max_payload_size}, max packet "
                  f"{wire.client_packet_limit(args.max_payload_size)} bytes, {args.clients} probing clients, "
                  f"{args.seconds:g} s per mode, pid {pid or '-'} on {os.cpu_count()} cores", flush=True)
            for mode in modes:
                print(run_mode(address, pid, mode, args.seconds, args.clients, args.max_payload_size), flush=True)
        finally:
            if process is not None:
                process.kill()
                process.wait(10)


if __name__ == "__main__":
    main()
