#!/usr/bin/env python3
"""Load generator for a running TaskFlux node or cluster over the binary client protocol (and REST or gRPC).

    python scripts/bench.py --endpoints 127.0.0.1:2602                     # 4 producers + 4 consumers
    python scripts/bench.py --endpoints 127.0.0.1:2602 127.0.0.1:2603 -P 32 -C 32 -n 50000
    python scripts/bench.py --start-node                                   # a temporary single node
    python scripts/bench.py --start-node --interfaces binary,rest -P 16 -C 16  # the same load per interface
    python scripts/bench.py --start-node --interfaces binary,rest,grpc --put-mode batch --phases enqueue
    python scripts/bench.py --start-node --put-mode keyed --phases enqueue    # one record per call, with a key

Producers and consumers are OS processes (fork), one connection each, a blocking closed loop (no
pipelining). ``--put-mode`` chooses the producers' call: ``original`` (the binary protocol's two-phase Enqueue,
REST's POST .../records, gRPC's Enqueue stream), ``one`` (one record per EnqueueMany / REST record / gRPC
EnqueueMany, no key), ``keyed`` (the same with an idempotency key: ``keyed`` against ``one`` is what a key
costs), ``batch`` (``--batch`` keyed records per EnqueueMany / POST .../records/batch). Phases: ``enqueue``
(P producers put N records), ``drain`` (C consumers dequeue + ack N), ``mixed`` (both at once, N each).
Per phase and role it prints ops/s (and records/s), p50/p99/p99.9 latency in ms,
the client's CPU (sum over worker processes, in cores, and the busiest worker) so a reader can tell
whether the client saturated, the server's CPU (and its system-time share) when its pid is known, and the
machine's busy cores.

The leader is found with ClusterMetadata; a NotLeader answer sends the worker to the named leader.
The hot path (enqueue, dequeue, ack) is hand-encoded and checked against the codec in
``taskflux/wire/client_protocol.py`` at start-up; everything else goes through that codec.
Only loopback endpoints are accepted. Every phase has a message count and a time limit.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import multiprocessing as mp
import os
import random
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from taskflux.wire import client_protocol as wire  # noqa: E402

sys.path.insert(0, str(REPO / "scripts"))
from bench_clients import ClientError, GrpcConnection, RestConnection  # noqa: E402
from bench_clients import NotLeader as InterfaceNotLeader  # noqa: E402
from local_nodes import NodeStartError, free_port, node_command, spawn, wait_listening  # noqa: E402

INTERFACES = ("binary", "rest", "grpc")

MAX_WORKERS = 64
I32 = struct.Struct(">i")
U32 = struct.Struct(">I")
I64_I32 = struct.Struct(">qi")
NO_DELAY = bytes(16)  # an EnqueueMany item's delay and not-before: none
ADDED_ONE = 15  # 63 61, count 1, id, duplicate
U64_I64_I32 = struct.Struct(">Qqi")
ACK = b"\x4b"
OK = 0x6B
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A failure the user should read as one line (no traceback)."""


class NotLeaderError(BenchError):
    """The server answered NotLeader; ``leader_id`` is the leader it names (None if unknown)."""

    def __init__(self, leader_id: int | None) -> None:
        super().__init__(f"not the leader (leader: {leader_id})")
        self.leader_id = leader_id


# --- endpoints ---------------------------------------------------------------------------------------------------

def parse_endpoint(text: str) -> tuple[str, int]:
    """``host:port`` → (host, port); only loopback hosts are accepted."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise BenchError(f"endpoint {text!r}: expected host:port with a port in 1..65535")
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, int(port_text), proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise BenchError(f"endpoint {text!r}: cannot resolve {host!r}: {exc}") from None
    for info in infos:
        if not ipaddress.ip_address(info[4][0]).is_loopback:
            raise BenchError(f"endpoint {text!r}: {info[4][0]} is not a loopback address; this benchmark only "
                             "sends to 127.0.0.1 / ::1")
    return host, int(port_text)


# --- one connection ----------------------------------------------------------------------------------------------

class Connection:
    """One blocking client connection: hand-encoded hot path, the codec for everything else."""

    def __init__(self, address: tuple[str, int], queue: str, timeout: float) -> None:
        self.address = address
        self.sock = socket.create_connection(address, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.qname = _qname(queue)
        self.enqueue_head = b"\x43\x45" + self.qname
        self.queue = queue
        auth = self.request(wire.AuthorizationRequest())
        if not isinstance(auth, wire.AuthorizationResponse) or not auth.success:
            raise BenchError(f"{address}: authorization refused: {auth!r}")
        boot = self.request(wire.BootstrapRequest())
        if not isinstance(boot, wire.BootstrapResponse) or not boot.success:
            raise BenchError(f"{address}: bootstrap refused: {boot!r}")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError(f"{self.address[0]}:{self.address[1]} closed the connection")
        self.buf += data

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _packet(self) -> Any:
        """The next packet through the codec (control path and unexpected answers)."""
        decoder = wire.PacketDecoder(wire.Direction.SERVER_TO_CLIENT)
        decoder.feed(self.buf)
        self.buf = b""
        while True:
            packet = decoder.next_packet()
            if packet is not None:
                # whatever the decoder holds beyond this packet stays buffered for the next read
                rest = decoder.pending_bytes
                if rest:
                    self.buf = bytes(decoder._buffer[len(decoder._buffer) - rest:])
                return packet
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError(f"{self.address[0]}:{self.address[1]} closed the connection")
            decoder.feed(data)

    def request(self, packet: Any) -> Any:
        """Send one packet encoded by the codec and return the decoded answer."""
        self.sock.sendall(wire.encode(packet))
        return self._packet()

    def _unexpected(self) -> BenchError:
        """Decode an answer that is not the fast path's and turn it into an exception."""
        packet = self._packet()
        if isinstance(packet, wire.NotLeader):
            return NotLeaderError(packet.leader_id)
        if isinstance(packet, wire.ErrorResponse):
            return BenchError(f"error response {packet.code}: {packet.message}")
        if isinstance(packet, wire.CommandResponse):
            return BenchError(f"command refused: {packet.response!r}")
        return BenchError(f"unexpected packet {packet!r}")

    def _expect_ok(self) -> None:
        if not self.buf:
            self._fill()
        if self.buf[0] == OK:
            self.buf = self.buf[1:]
            return
        raise self._unexpected()

    def put_many(self, priority: int, payload: bytes, keys: list[bytes]) -> None:
        """One EnqueueMany (protocol 1.1) of ``len(keys)`` records (an empty key: none), answered once committed."""
        items = b"".join(I64_I32.pack(priority, len(payload)) + payload + I32.pack(len(key)) + key + NO_DELAY
                         for key in keys)
        self.sock.sendall(b"\x43\x65" + self.qname + I32.pack(len(keys)) + items)
        if len(keys) == 1:  # the fast path: one fixed-size answer
            while len(self.buf) < ADDED_ONE:
                self._fill()
            if self.buf[:6] == b"\x63\x61\x00\x00\x00\x01":
                self.buf = self.buf[ADDED_ONE:]
                return
        answer = self._packet()
        if not (isinstance(answer, wire.CommandResponse) and isinstance(answer.response, wire.AddedResponse)
                and len(answer.response.records) == len(keys)):
            if isinstance(answer, wire.NotLeader):
                raise NotLeaderError(answer.leader_id)
            raise BenchError(f"EnqueueMany answered {answer!r}")

    def put(self, priority: int, payload: bytes) -> None:
        """Two-phase enqueue: request → Ok, Ack → Ok (the second Ok means durable)."""
        self.sock.sendall(self.enqueue_head + I64_I32.pack(priority, len(payload)) + payload)
        self._expect_ok()
        self.sock.sendall(ACK)
        self._expect_ok()

    def get(self, timeout_ms: int) -> bool:
        """Dequeue, and Ack what came (→ Ok, durable). False when nothing arrived within ``timeout_ms``."""
        self.sock.sendall(b"\x43\x44" + self.qname + U32.pack(timeout_ms))
        while len(self.buf) < 3:
            self._fill()
        if self.buf[0] != 0x63 or self.buf[1] != 0x64:
            raise self._unexpected()
        if self.buf[2] == 0:
            self.buf = self.buf[3:]
            return False
        head = self._read(23)
        _, _, size = U64_I64_I32.unpack_from(head, 3)
        self._read(size)
        self.sock.sendall(ACK)
        self._expect_ok()
        return True

    def metadata(self) -> wire.ClusterMetadataResponse:
        answer = self.request(wire.ClusterMetadataRequest())
        if not isinstance(answer, wire.ClusterMetadataResponse):
            raise BenchError(f"ClusterMetadata answered {answer!r}")
        return answer

    def create_queue(self) -> None:
        """Create the queue (H4, no limits); an existing queue is fine."""
        answer = self.request(wire.CommandRequest(wire.CreateQueueCommand(self.queue)))
        if isinstance(answer, wire.Ok):
            return
        if isinstance(answer, wire.CommandResponse) and isinstance(answer.response, wire.CommandErrorResponse) \
                and answer.response.code == 3:  # already exists
            return
        if isinstance(answer, wire.NotLeader):
            raise NotLeaderError(answer.leader_id)
        raise BenchError(f"create queue {self.queue!r}: {answer!r}")

    def count(self) -> int:
        answer = self.request(wire.CommandRequest(wire.CountCommand(self.queue)))
        if isinstance(answer, wire.CommandResponse) and isinstance(answer.response, wire.CountResponse):
            return answer.response.count
        raise BenchError(f"count {self.queue!r}: {answer!r}")


def _qname(queue: str) -> bytes:
    raw = queue.encode("latin-1")
    return bytes([len(raw)]) + raw


def check_hot_path(queue: str) -> None:
    """The hand-encoded requests must be byte-identical to the codec's."""
    qname = _qname(queue)
    mine = b"\x43\x45" + qname + I64_I32.pack(7, 3) + b"abc"
    theirs = wire.encode(wire.CommandRequest(wire.EnqueueCommand(queue, 7, b"abc")))
    if mine != theirs:
        raise BenchError(f"hand-encoded enqueue {mine.hex()} differs from the codec's {theirs.hex()}")
    mine = b"\x43\x44" + qname + U32.pack(250)
    theirs = wire.encode(wire.CommandRequest(wire.DequeueCommand(queue, 250)))
    if mine != theirs:
        raise BenchError(f"hand-encoded dequeue {mine.hex()} differs from the codec's {theirs.hex()}")
    if wire.encode(wire.Ack()) != ACK:
        raise BenchError("Ack is not 0x4b")
    mine = b"\x43\x65" + qname + I32.pack(1) + I64_I32.pack(7, 3) + b"abc" + I32.pack(1) + b"k" + NO_DELAY
    theirs = wire.encode(wire.CommandRequest(wire.EnqueueManyCommand(queue, (wire.EnqueueItem(7, b"abc", b"k"),))))
    if mine != theirs:
        raise BenchError(f"hand-encoded EnqueueMany {mine.hex()} differs from the codec's {theirs.hex()}")
    if len(wire.encode(wire.CommandResponse(wire.AddedResponse(((1, False),))))) != ADDED_ONE:
        raise BenchError("an Added answer of one record is not 15 bytes")


def find_leader(endpoints: list[tuple[str, int]], queue: str, timeout: float) -> tuple[str, int]:
    """Ask the endpoints (and the addresses they advertise) until one names a reachable leader."""
    deadline = time.monotonic() + timeout
    last_error = "no endpoint answered"
    while time.monotonic() < deadline:
        for address in endpoints:
            try:
                conn = Connection(address, queue, timeout=2)
            except (OSError, BenchError) as exc:
                last_error = f"{address[0]}:{address[1]}: {exc}"
                continue
            try:
                meta = conn.metadata()
            except (OSError, BenchError) as exc:
                last_error = f"{address[0]}:{address[1]}: {exc}"
                continue
            finally:
                conn.close()
            if meta.leader_id is None or not 0 <= meta.leader_id < len(meta.endpoints):
                last_error = f"{address[0]}:{address[1]} knows no leader yet"
                continue
            if meta.leader_id == meta.responding_id:
                return address
            return parse_endpoint(meta.endpoints[meta.leader_id])
        time.sleep(0.1)
    raise BenchError(f"no leader found within {timeout:.0f} s ({last_error})")


# --- workers -----------------------------------------------------------------------------------------------------

@dataclass
class WorkerResult:
    """What one worker process reports back."""

    role: str
    ops: int = 0
    errors: int = 0
    redirects: int = 0
    first_error: str = ""
    latencies: list[float] = field(default_factory=list)
    start: float = 0.0
    end: float = 0.0
    cpu: float = 0.0
    timed_out: bool = False


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def connect(interface: str, address: tuple[str, int], queue: str, timeout: float) -> Any:
    """A client of ``interface`` with ``put(priority, payload)``, ``get(timeout_ms) -> bool`` and ``close()``."""
    if interface == "rest":
        return RestConnection(address, queue, timeout)
    if interface == "grpc":
        return GrpcConnection(address, queue, timeout)
    return Connection(address, queue, timeout)


def worker(role: str, interface: str, leader: tuple[str, int], endpoints: list[tuple[str, int]], queue: str,
           quota: int, payload_size: int, seed: int, go: Any, deadline_s: float, stop_on_empty: bool,
           out: Any, put_mode: str = "original", batch: int = 1) -> None:
    """One producer ("put") or consumer ("get") process: connect, wait for the start signal, run ``quota`` ops.
    ``leader`` is the address of ``interface`` on the leader; only the binary protocol follows NotLeader."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    result = WorkerResult(role)
    rng = random.Random(seed)
    payload = rng.randbytes(payload_size)
    priorities = [rng.randrange(1000) for _ in range(min(quota, 65536) or 1)]
    conn: Any = None
    try:
        conn = connect(interface, leader, queue, timeout=max(5.0, min(30.0, deadline_s)))
        go.wait()
        cpu0 = _cpu()
        start = time.perf_counter()
        result.start = time.time()
        deadline = start + deadline_s
        lat = result.latencies
        clock = time.perf_counter
        done = 0
        npri = len(priorities)
        while done < quota:
            t0 = clock()
            if t0 > deadline:
                result.timed_out = True
                break
            try:
                if role == "put" and put_mode == "original":
                    conn.put(priorities[done % npri], payload)
                elif role == "put":
                    keyed = put_mode != "one"
                    keys = [b"%d-%d-%d" % (seed, done, i) if keyed else b"" for i in range(batch)]
                    conn.put_many(priorities[done % npri], payload, keys)
                elif not conn.get(1000):
                    if stop_on_empty:
                        break
                    continue
            except NotLeaderError as exc:
                result.redirects += 1
                conn.close()
                conn = None
                time.sleep(0.05)
                leader = find_leader(endpoints, queue, timeout=max(1.0, deadline - clock()))
                conn = Connection(leader, queue, timeout=10)
                if not result.first_error:
                    result.first_error = str(exc)
                continue
            except (BenchError, ClientError, InterfaceNotLeader) as exc:
                result.errors += 1
                if not result.first_error:
                    result.first_error = str(exc)
                continue
            lat.append(clock() - t0)
            done += 1
        result.ops = done
        result.end = time.time()
        result.cpu = _cpu() - cpu0
    except (OSError, BenchError, ClientError) as exc:
        result.errors += 1
        result.first_error = result.first_error or f"{type(exc).__name__}: {exc}"
        result.end = time.time()
    finally:
        if conn is not None:
            conn.close()
    out.put(result)


# --- CPU accounting ----------------------------------------------------------------------------------------------

def proc_cpu(pids: list[int]) -> tuple[float, float]:
    """(user, system) seconds of the given processes and their children (from /proc)."""
    user = system = 0.0
    seen: set[int] = set()
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            user += int(fields[11]) / CLK_TCK
            system += int(fields[12]) / CLK_TCK
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            todo.extend(int(c) for c in children)
        except (OSError, IndexError, ValueError):
            continue
    return user, system


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    parts = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return float(sum(parts) - idle), float(sum(parts))


# --- phases ------------------------------------------------------------------------------------------------------

def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def run_phase(name: str, interface: str, args: argparse.Namespace, leader: tuple[str, int],
              endpoints: list[tuple[str, int]], server_pids: list[int]) -> list[dict[str, Any]]:
    """Run one phase with fresh worker processes; return one summary row per role."""
    ctx = mp.get_context("fork")
    go = ctx.Event()
    out = ctx.Queue()
    plan: list[tuple[str, int, bool]] = []
    if name in ("enqueue", "mixed"):
        plan += [("put", q, False) for q in split(args.n, args.producers)]
    if name in ("drain", "mixed"):
        plan += [("get", q, name == "drain") for q in split(args.n, args.consumers)]
    procs = []
    for i, (role, quota, stop_on_empty) in enumerate(plan):
        calls = -(-quota // args.batch) if role == "put" else quota  # a put call carries --batch records
        p = ctx.Process(target=worker, args=(role, interface, leader, endpoints, args.queue, calls, args.payload,
                                             args.seed * 1000 + i + hash(name) % 997, go, args.phase_timeout,
                                             stop_on_empty, out, args.put_mode, args.batch), daemon=True)
        p.start()
        procs.append(p)
    time.sleep(0.3 + 0.01 * len(procs))  # let every worker connect before the clock starts
    busy0, total0 = machine_busy()
    server0 = proc_cpu(server_pids)
    t0 = time.time()
    go.set()
    results: list[WorkerResult] = []
    hard_deadline = time.monotonic() + args.phase_timeout + 30
    while len(results) < len(procs) and time.monotonic() < hard_deadline:
        try:
            results.append(out.get(timeout=1))
        except Exception:  # queue.Empty
            if not any(p.is_alive() for p in procs) and out.empty():
                break
    wall = time.time() - t0
    busy1, total1 = machine_busy()
    server1 = proc_cpu(server_pids)
    server_user, server_sys = server1[0] - server0[0], server1[1] - server0[1]
    for p in procs:
        p.join(timeout=2)
        if p.is_alive():
            p.kill()
            p.join()
    missing = len(procs) - len(results)
    ncpu = os.cpu_count() or 1
    machine = (busy1 - busy0) / max(1.0, total1 - total0) * ncpu
    rows = []
    for role in ("put", "get"):
        mine = [r for r in results if r.role == role]
        if not mine:
            continue
        ops = sum(r.ops for r in mine)
        end = max((r.end for r in mine), default=t0)
        elapsed = max(1e-9, end - t0)
        lat = sorted(x for r in mine for x in r.latencies)
        cpu = sum(r.cpu for r in mine)
        per_call = args.batch if role == "put" else 1
        rows.append({
            "interface": interface, "phase": name, "role": role, "workers": len(mine), "ops": ops,
            "seconds": round(elapsed, 3),
            "ops_per_s": ops / elapsed, "records_per_s": ops * per_call / elapsed,
            "put_mode": args.put_mode if role == "put" else "",
            "server_us_per_record": ((server_user + server_sys) / max(1, ops * per_call) * 1e6
                                     if server_pids and name != "mixed" else None),
            "p50_ms": percentile(lat, 0.5) * 1e3, "p99_ms": percentile(lat, 0.99) * 1e3,
            "p999_ms": percentile(lat, 0.999) * 1e3,
            "client_cpu_cores": cpu / elapsed, "max_worker_cpu": max(r.cpu for r in mine) / elapsed,
            "server_cpu_cores": (server_user + server_sys) / wall if server_pids else None,
            "server_sys_share": server_sys / max(1e-9, server_user + server_sys) if server_pids else None,
            "machine_busy_cores": machine,
            "errors": sum(r.errors for r in mine) + missing, "redirects": sum(r.redirects for r in mine),
            "timed_out": any(r.timed_out for r in mine),
            "first_error": next((r.first_error for r in mine if r.first_error), ""),
        })
    return rows


def print_rows(rows: list[dict[str, Any]]) -> None:
    header = (f"{'iface':6} {'phase':8} {'role':4} {'conns':>5} {'ops':>7} {'ops/s':>9} {'recs/s':>9} {'p50 ms':>8} "
              f"{'p99 ms':>8} {'p99.9 ms':>9} {'cli cpu':>7} {'max wkr':>7} {'srv cpu':>7} {'srv sys':>7} "
              f"{'us/rec':>7} {'busy':>5} {'err':>4}")
    print(header)
    print("-" * len(header))
    for r in rows:
        srv = "-" if r["server_cpu_cores"] is None else f"{r['server_cpu_cores']:.2f}"
        sys_share = "-" if r["server_sys_share"] is None else f"{100 * r['server_sys_share']:.0f}%"
        per_record = "-" if r["server_us_per_record"] is None else f"{r['server_us_per_record']:.0f}"
        print(f"{r['interface']:6} {r['phase']:8} {r['role']:4} {r['workers']:5d} {r['ops']:7d} {r['ops_per_s']:9.0f} "
              f"{r['records_per_s']:9.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['p999_ms']:9.2f} "
              f"{r['client_cpu_cores']:7.2f} {r['max_worker_cpu']:7.2f} {srv:>7} {sys_share:>7} {per_record:>7} "
              f"{r['machine_busy_cores']:5.2f} {r['errors']:4d}")
    for r in rows:
        if r["first_error"]:
            print(f"  {r['interface']}/{r['phase']}/{r['role']}: {r['errors']} errors, {r['redirects']} NotLeader "
                  f"redirects; first: {r['first_error']}")
        if r["timed_out"]:
            print(f"  {r['interface']}/{r['phase']}/{r['role']}: stopped by the phase time limit")


# --- a temporary node --------------------------------------------------------------------------------------------

def wait_listening_address(address: tuple[str, int], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(address, timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise BenchError(f"nothing listens on {address[0]}:{address[1]}") from None
            time.sleep(0.05)


def start_node(python: str, extra: list[str]) -> tuple[subprocess.Popen[bytes], dict[str, tuple[str, int]], str]:
    """A single node on free loopback ports with its data in a temp dir; returns (process, address per
    interface, dir)."""
    root = tempfile.mkdtemp(prefix="taskflux-bench-")
    cluster_port, client_port, http_port, grpc_port = free_port(), free_port(), free_port(), free_port()
    command = node_command(python, 0, [cluster_port], client_port, Path(root) / "data", ["--log-level=Warning", *extra],
                           http_port=http_port, grpc_port=grpc_port)
    proc = spawn(command, Path(root) / "node.log")
    try:
        wait_listening(proc, client_port, Path(root) / "node.log")
    except NodeStartError as error:
        proc.kill()
        shutil.rmtree(root, ignore_errors=True)
        raise BenchError(f"the temporary node did not start: {error}") from None
    addresses = {"binary": ("127.0.0.1", client_port), "rest": ("127.0.0.1", http_port),
                 "grpc": ("127.0.0.1", grpc_port)}
    return proc, addresses, root


# --- main --------------------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--endpoints", nargs="+", default=[], metavar="HOST:PORT",
                        help="client ports of the node(s); loopback only")
    parser.add_argument("--start-node", action="store_true",
                        help="start a temporary single node (temp data dir, free ports) and stop it afterwards")
    parser.add_argument("--node-python", default=None,
                        help="Python for --start-node (default: .venv/bin/python if present, else this one)")
    parser.add_argument("--node-option", action="append", default=[], metavar="--OPTION=VALUE",
                        help="extra option for the --start-node node (repeatable)")
    parser.add_argument("--server-pid", type=int, action="append", default=[],
                        help="pid(s) of the server process(es), to report server CPU")
    parser.add_argument("-P", "--producers", type=int, default=4)
    parser.add_argument("-C", "--consumers", type=int, default=4)
    parser.add_argument("--queue", default="bench")
    parser.add_argument("--payload", type=int, default=100, help="payload bytes")
    parser.add_argument("-n", type=int, default=20000, help="messages per phase")
    parser.add_argument("--phases", default="enqueue,drain,mixed")
    parser.add_argument("--interfaces", default="binary",
                        help=f"comma list of {', '.join(INTERFACES)}: the phases run once per interface")
    parser.add_argument("--http", metavar="HOST:PORT", help="the leader's REST address (implied by --start-node)")
    parser.add_argument("--grpc", metavar="HOST:PORT", help="the leader's gRPC address (implied by --start-node)")
    parser.add_argument("--put-mode", choices=("original", "one", "keyed", "batch"), default="original",
                        help="the producers' call (see the module's docstring)")
    parser.add_argument("--batch", type=int, default=100, help="records per call with --put-mode batch")
    parser.add_argument("--phase-timeout", type=float, default=60.0, help="time limit of one phase, seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    for name in ("producers", "consumers"):
        value = getattr(args, name)
        if not 1 <= value <= MAX_WORKERS:
            parser.error(f"--{name}: {value} is outside 1..{MAX_WORKERS}")
    if not 0 <= args.payload <= 16 * 1024 * 1024:
        parser.error("--payload: 0..16 MiB")
    if not 1 <= args.n <= 10_000_000:
        parser.error("-n: 1..10000000")
    if not 1 <= args.phase_timeout <= 3600:
        parser.error("--phase-timeout: 1..3600 s")
    if not 1 <= args.batch <= 1000:
        parser.error("--batch: 1..1000")
    if args.put_mode != "batch":
        args.batch = 1
    args.phase_list = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = set(args.phase_list) - {"enqueue", "drain", "mixed"}
    if unknown or not args.phase_list:
        parser.error(f"--phases: unknown {sorted(unknown)}; choose from enqueue, drain, mixed")
    args.interface_list = [i.strip() for i in args.interfaces.split(",") if i.strip()]
    unknown = set(args.interface_list) - set(INTERFACES)
    if unknown or not args.interface_list:
        parser.error(f"--interfaces: unknown {sorted(unknown)}; choose from {', '.join(INTERFACES)}")
    if "rest" in args.interface_list and not (args.http or args.start_node):
        parser.error("--interfaces rest needs --http HOST:PORT (the leader's REST address) or --start-node")
    if "grpc" in args.interface_list and not (args.grpc or args.start_node):
        parser.error("--interfaces grpc needs --grpc HOST:PORT (the leader's gRPC address) or --start-node")
    if bool(args.endpoints) == args.start_node:
        parser.error("give either --endpoints HOST:PORT ... or --start-node")
    try:
        queue_bytes = len(args.queue.encode("latin-1"))
    except UnicodeEncodeError:
        parser.error("--queue: latin-1 characters only")
    if not 1 <= queue_bytes <= 255:
        parser.error("--queue: 1..255 bytes")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    node: subprocess.Popen[bytes] | None = None
    root = ""
    try:
        check_hot_path(args.queue)
        server_pids = list(args.server_pid)
        if args.start_node:
            venv = REPO / ".venv" / "bin" / "python"
            python = args.node_python or (str(venv) if venv.exists() else sys.executable)
            node, addresses, root = start_node(python, args.node_option)
            endpoints = [addresses["binary"]]
            server_pids.append(node.pid)
            print(f"started a temporary node (pid {node.pid}) on {addresses['binary'][0]}:{addresses['binary'][1]}, "
                  f"data in {root}")
        else:
            endpoints = [parse_endpoint(e) for e in args.endpoints]
            addresses = {name: parse_endpoint(value) for name, value in (("rest", args.http), ("grpc", args.grpc))
                         if value}
        leader = find_leader(endpoints, args.queue, timeout=20)
        conn = Connection(leader, args.queue, timeout=10)
        try:
            conn.create_queue()
            before = conn.count()
        finally:
            conn.close()
        print(f"leader {leader[0]}:{leader[1]}, queue {args.queue!r} holds {before} records; "
              f"{args.producers} producers + {args.consumers} consumers, n={args.n}, payload {args.payload} B, "
              f"client {os.cpu_count()} CPUs")
        rows: list[dict[str, Any]] = []
        for interface in args.interface_list:
            if interface != "binary":
                wait_listening_address(addresses[interface])
            target = leader if interface == "binary" else addresses[interface]
            for phase in args.phase_list:
                rows += run_phase(phase, interface, args, target, endpoints, server_pids)
        print()
        print_rows(rows)
        print("\nops/s = ops / (start signal → the role's last op); latency per op: put = request/Ok + Ack/Ok, "
              "get = dequeue + Ack/Ok.\ncli cpu = all worker processes (cores), max wkr = the busiest worker "
              "(1.00 = a worker saturated), srv cpu = server process tree (cores), srv sys = its system-time share,\n"
              "busy = machine busy cores.")
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2))
        return 1 if any(r["errors"] for r in rows) else 0
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"bench: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    finally:
        if node is not None:
            node.terminate()
            try:
                node.wait(15)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait()
        if root:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
