#!/usr/bin/env python3
"""Load generator for the gRPC interface of a running TaskFlux node (it starts no node itself).

    python scripts/bench_grpc.py --address 127.0.0.1:1607
    python scripts/bench_grpc.py --address 127.0.0.1:1607 --processes 4 --connections 4 -n 20000 --seconds 30

Workers are OS processes (spawned, so no gRPC state crosses a fork), each with ``--connections`` channels
driven by one thread each in a closed loop (one call or round in flight per channel). Phases, on the
default queue (no queue is created):

- ``count``   unary GetCount;
- ``enqueue`` one Enqueue stream per channel, rounds of data -> data{} then ack -> data{} (committed);
- ``dequeue`` one Dequeue stream per channel, rounds of request -> record then ack -> success{} (committed),
  which takes back what ``enqueue`` put in.

Each phase stops after ``-n`` operations (split over the channels) or ``--seconds``, whichever comes first,
and prints operations per second and the p50/p99 latency of one operation (a call, or a whole round).
Only loopback addresses are accepted.
"""

from __future__ import annotations

import argparse
import ipaddress
import multiprocessing as mp
import queue
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PHASES = ("count", "enqueue", "dequeue")
CALL_TIMEOUT = 30.0


class BenchError(Exception):
    """A failure to report as one line."""


@dataclass
class Outcome:
    """What one worker process measured in one phase."""

    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def loopback_address(text: str) -> str:
    """``host:port`` if every address ``host`` resolves to is loopback."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise BenchError(f"address {text!r}: expected host:port with a port in 1..65535")
    try:
        infos = socket.getaddrinfo(host.strip("[]"), int(port), proto=socket.IPPROTO_TCP)
    except socket.gaierror as error:
        raise BenchError(f"address {text!r}: cannot resolve: {error}") from None
    for info in infos:
        if not ipaddress.ip_address(info[4][0]).is_loopback:
            raise BenchError(f"address {text!r}: {info[4][0]} is not loopback; this benchmark stays on this machine")
    return text


# --- in a worker process ---------------------------------------------------------------------------------------


class Rounds:
    """A bidirectional stream driven one message at a time from a plain thread."""

    def __init__(self, method: Callable[..., Iterator[object]]) -> None:
        self._requests: queue.Queue[object] = queue.Queue()
        self._responses = method(iter(self._requests.get, None), timeout=CALL_TIMEOUT * 10)

    def exchange(self, request: object) -> Any:
        self._requests.put(request)
        return next(self._responses)

    def close(self) -> None:
        self._requests.put(None)
        for _ in self._responses:
            pass


def run_connection(phase: str, address: str, operations: int, deadline: float, payload: bytes) -> Outcome:
    """One channel's closed loop for ``phase``: at most ``operations`` operations, until ``deadline``."""
    import grpc

    from taskflux.server.grpc_api import taskflux_pb2 as pb
    from taskflux.server.grpc_api import taskflux_pb2_grpc as pb_grpc

    outcome = Outcome()
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.TaskFluxServiceStub(channel)
        if phase == "count":
            def operation() -> str | None:
                answer = stub.GetCount(pb.GetCountRequest(queue=""), timeout=CALL_TIMEOUT)
                return None if answer.WhichOneof("result") == "data" else str(answer).strip()
            stream = None
        elif phase == "enqueue":
            stream = Rounds(stub.Enqueue)
            data = pb.EnqueueRequest(data=pb.EnqueueRequest.EnqueueRequestData(
                queue="", record=pb.QueueRecord(priority=1, payload=payload)))
            ack = pb.EnqueueRequest(ack=pb.AckMessage(ack=True))

            def operation() -> str | None:
                received = stream.exchange(data)
                if received.WhichOneof("result") != "data":
                    return str(received).strip()
                answer = stream.exchange(ack)
                accepted = answer.WhichOneof("result") == "data" and not answer.data.HasField("policy_violation")
                return None if accepted else str(answer).strip()
        else:
            stream = Rounds(stub.Dequeue)
            request = pb.DequeueRequest(request=pb.DequeueRequest.DequeueRequestData(queue="", timeout=1000))
            ack = pb.DequeueRequest(ack=pb.AckMessage(ack=True))

            def operation() -> str | None:
                answer = stream.exchange(request)
                if answer.WhichOneof("result") != "success":
                    return str(answer).strip()
                if not answer.success.HasField("record"):
                    return "no record"
                done = stream.exchange(ack)
                return None if done.WhichOneof("result") == "success" else str(done).strip()

        try:
            for _ in range(operations):
                if time.monotonic() > deadline:
                    break
                started = time.perf_counter()
                problem = operation()
                if problem is not None:
                    outcome.errors.append(problem)
                    if problem == "no record":
                        break  # drained
                    continue
                outcome.latencies.append(time.perf_counter() - started)
        except grpc.RpcError as error:
            outcome.errors.append(f"{error.code().name}: {error.details()}")
        finally:
            if stream is not None:
                stream.close()
    return outcome


def run_worker(phase: str, address: str, connections: int, operations: int, deadline: float,
               payload_bytes: int) -> Outcome:
    """One process: ``connections`` channels, one thread each; their outcomes merged."""
    payload = b"x" * payload_bytes
    results: list[Outcome] = []

    def one(share: int) -> None:
        results.append(run_connection(phase, address, share, deadline, payload))

    shares = [operations // connections + (1 if i < operations % connections else 0) for i in range(connections)]
    threads = [threading.Thread(target=one, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    merged = Outcome()
    for result in results:
        merged.latencies += result.latencies
        merged.errors += result.errors
    return merged


# --- the driver ------------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_phase(pool: mp.pool.Pool, args: argparse.Namespace, phase: str) -> None:
    workers = args.processes
    per_worker = [args.count // workers + (1 if i < args.count % workers else 0) for i in range(workers)]
    started = time.monotonic()
    deadline = started + args.seconds
    outcomes = pool.starmap(run_worker, [
        (phase, args.address, args.connections, share, deadline, args.payload) for share in per_worker
    ])
    elapsed = time.monotonic() - started
    latencies = [latency for outcome in outcomes for latency in outcome.latencies]
    errors = [error for outcome in outcomes for error in outcome.errors if error != "no record"]
    print(f"{phase:8} {len(latencies):7d} ops in {elapsed:6.2f} s = {len(latencies) / elapsed:8.0f} ops/s   "
          f"p50 {percentile(latencies, 0.50) * 1000:7.2f} ms   p99 {percentile(latencies, 0.99) * 1000:7.2f} ms   "
          f"errors {len(errors)}")
    for error in sorted(set(errors))[:5]:
        print(f"         error: {error}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", default="127.0.0.1:1607", help="the node's gRPC host:port (loopback only)")
    parser.add_argument("--processes", "-p", type=int, default=4, help="worker processes (default 4)")
    parser.add_argument("--connections", "-c", type=int, default=2, help="channels per process (default 2)")
    parser.add_argument("--count", "-n", type=int, default=5000, help="operations per phase, all workers (5000)")
    parser.add_argument("--seconds", type=float, default=20.0, help="time limit per phase (default 20 s)")
    parser.add_argument("--payload", type=int, default=100, help="payload bytes of enqueued records (default 100)")
    parser.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES))
    args = parser.parse_args(argv)
    try:
        loopback_address(args.address)
        if min(args.processes, args.connections, args.count) < 1 or args.seconds <= 0:
            raise BenchError("--processes, --connections, --count and --seconds must be positive")
    except BenchError as error:
        print(f"bench_grpc: {error}", file=sys.stderr)
        return 2
    print(f"gRPC at {args.address}: {args.processes} processes x {args.connections} channels, "
          f"at most {args.count} ops or {args.seconds:g} s per phase, payload {args.payload} B")
    with mp.get_context("spawn").Pool(args.processes) as pool:
        for phase in args.phases:
            run_phase(pool, args, phase)
    return 0


if __name__ == "__main__":
    sys.exit(main())
