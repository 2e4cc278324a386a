#!/usr/bin/env python3
"""Failover time of a 3-node TaskFlux cluster on loopback: the leader fails, time the first acked write after.

    python scripts/failover.py                  # 10 runs, kill -9, default election timeout (500 ms)
    python scripts/failover.py --mode stop      # the leader's machine vanishes: SIGSTOP, its sockets stay open
    python scripts/failover.py --runs 5 --election-timeout 300ms --writers 2

Each run starts a fresh cluster (free ports, a temp directory per run), waits for a leader, creates a
queue and keeps ``--writers`` connections enqueueing to the leader (two-phase enqueue: the final Ok
means committed on a majority). Then the leader fails and the script measures the time from the failure
to the first enqueue acknowledged by another node:

- ``--mode kill``: SIGKILL; the kernel closes the leader's sockets, which its peers and clients see at once.
- ``--mode stop``: SIGSTOP, as if its machine had vanished: its sockets stay open and silent, so the
  followers notice only when their election timeout elapses. The writers are told at once (their
  connections to it are shut down and it is no longer asked for the leader), so the time is the
  cluster's alone: a real client adds its own request timeout. The node is killed at the end of the run.

Writers that lose their connection or get NotLeader ask the surviving nodes for the leader
(ClusterMetadata) and retry immediately. Prints each run, the median and the maximum; every wait is
bounded and every node is killed at the end of its run.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))

from bench import BenchError, Connection  # noqa: E402
from local_nodes import NodeStartError, free_port, node_command, spawn, wait_listening  # noqa: E402

QUEUE = "failover"
PAYLOAD = b"x" * 100


class Cluster:
    """Three ``python taskflux.py`` processes on loopback with data under ``root``."""

    def __init__(self, python: str, root: Path, size: int, election_timeout: str, extra: list[str]) -> None:
        self.root = root
        cluster_ports = [free_port() for _ in range(size)]
        self.client_ports = [free_port() for _ in range(size)]
        options = [f"--raft-election-timeout={election_timeout}", "--log-level=Information", *extra]
        self.commands = [node_command(python, i, cluster_ports, self.client_ports[i], root / f"node{i}", options)
                         for i in range(size)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * size
        self.vanished: set[int] = set()  # stopped (SIGSTOP): running, but answering nothing

    def start(self) -> None:
        for i, cmd in enumerate(self.commands):
            self.procs[i] = spawn(cmd, self.root / f"node{i}.log")
        for i, port in enumerate(self.client_ports):
            try:
                wait_listening(self.procs[i], port, self.root / f"node{i}.log")  # type: ignore[arg-type]
            except NodeStartError as error:
                raise BenchError(f"node {i}: {error}") from None

    def log(self, i: int) -> str:
        path = self.root / f"node{i}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def alive(self) -> list[int]:
        """The nodes whose process runs and has not vanished."""
        return [i for i, p in enumerate(self.procs) if p is not None and p.poll() is None and i not in self.vanished]

    def leader(self, among: list[int], timeout: float) -> int:
        """The node id a running node names as leader and that itself agrees."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i in among:
                try:
                    conn = Connection(("127.0.0.1", self.client_ports[i]), QUEUE, timeout=1)
                    try:
                        meta = conn.metadata()
                    finally:
                        conn.close()
                except (OSError, BenchError):
                    continue
                if meta.leader_id is not None and meta.leader_id == meta.responding_id:
                    return i
            time.sleep(0.02)
        raise BenchError(f"no leader among nodes {among} within {timeout:.0f} s")

    def vanish(self, i: int) -> None:
        """SIGSTOP node ``i``: its sockets stay open, nothing is read or sent (``kill`` ends it)."""
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            self.vanished.add(i)
            proc.send_signal(signal.SIGSTOP)

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)

    def stop(self) -> None:
        for i in range(len(self.procs)):
            self.kill(i)


class Writers:
    """Threads enqueueing in a loop; records (ack time, node id) of every acknowledged write."""

    def __init__(self, cluster: Cluster, count: int, limit_s: float) -> None:
        self.cluster = cluster
        self.stop_at = time.monotonic() + limit_s
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.acks: list[tuple[float, int]] = []
        self.errors = 0
        self.open: dict[int, Connection] = {}  # writer -> its connection, while it has one
        self.threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(count)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=10)

    def drop_connections_to(self, node: int) -> None:
        """Shut down every writer connection to ``node``: the writers then look for the new leader at once."""
        with self.lock:
            doomed = [conn for conn in self.open.values() if conn.address[1] == self.cluster.client_ports[node]]
        for conn in doomed:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)

    def first_ack_after(self, t0: float, not_node: int) -> tuple[float, int] | None:
        """(time, node) of the earliest write acked at or after ``t0`` by a node other than ``not_node``."""
        with self.lock:
            found = [(t, node) for t, node in self.acks if t >= t0 and node != not_node]
        return min(found) if found else None

    def _connect(self) -> tuple[Connection, int] | None:
        """A connection to whichever node currently says it is the leader."""
        for i in self.cluster.alive():
            try:
                conn = Connection(("127.0.0.1", self.cluster.client_ports[i]), QUEUE, timeout=1)
            except (OSError, BenchError):
                continue
            try:
                meta = conn.metadata()
            except (OSError, BenchError):
                conn.close()
                continue
            if meta.leader_id is not None and meta.leader_id == meta.responding_id:
                return conn, i
            conn.close()
        return None

    def _run(self, n: int) -> None:
        conn: Connection | None = None
        node = -1
        priority = 0
        while not self.stopping.is_set() and time.monotonic() < self.stop_at:
            if conn is None:
                found = self._connect()
                if found is None:
                    time.sleep(0.005)
                    continue
                conn, node = found
                with self.lock:
                    self.open[n] = conn
            try:
                conn.put(priority % 1000, PAYLOAD)
            except (OSError, BenchError):
                with self.lock:
                    self.errors += 1
                    del self.open[n]
                conn.close()
                conn = None
                continue
            now = time.monotonic()
            with self.lock:
                self.acks.append((now, node))
            priority += 1
        if conn is not None:
            conn.close()


def start_writing(cluster: Cluster, writers: int, limit_s: float) -> tuple[int, Writers]:
    """Start ``cluster``, create the queue on its leader and start ``writers`` writer connections (stopping
    by themselves after ``limit_s``). Returns the leader's id and the running writers."""
    cluster.start()
    leader = cluster.leader(cluster.alive(), timeout=30)
    conn = Connection(("127.0.0.1", cluster.client_ports[leader]), QUEUE, timeout=5)
    try:
        conn.create_queue()
    finally:
        conn.close()
    running = Writers(cluster, writers, limit_s=limit_s)
    running.start()
    return leader, running


def one_run(run: int, args: argparse.Namespace, python: str) -> float:
    """Start a cluster, write, kill the leader, return seconds from the kill to the first new ack."""
    root = Path(tempfile.mkdtemp(prefix=f"taskflux-failover{run}-"))
    cluster = Cluster(python, root, 3, args.election_timeout, args.node_option)
    writers: Writers | None = None
    try:
        leader, writers = start_writing(cluster, args.writers, limit_s=args.warmup + args.timeout + 5)
        time.sleep(args.warmup)
        with writers.lock:
            before = len(writers.acks)
        if before == 0:
            raise BenchError("no write was acknowledged before the kill")
        t_kill = time.monotonic()
        if args.mode == "kill":
            cluster.kill(leader)
        else:
            cluster.vanish(leader)
            writers.drop_connections_to(leader)
        deadline = t_kill + args.timeout
        first = None
        while time.monotonic() < deadline:
            first = writers.first_ack_after(t_kill, leader)
            if first is not None:
                break
            time.sleep(0.005)
        if first is None:
            raise BenchError(f"no write acknowledged within {args.timeout:.0f} s of the kill")
        elapsed, new_leader = first[0] - t_kill, first[1]
        verb = "killed" if args.mode == "kill" else "stopped"
        print(f"run {run:2d}: {verb} leader {leader} after {before} acked writes; first ack on node {new_leader} "
              f"after {elapsed * 1e3:7.1f} ms", flush=True)
        return elapsed
    except BenchError as exc:
        logs = "\n".join(f"--- node{i}.log ---\n{cluster.log(i)[-1500:]}" for i in range(3))
        raise BenchError(f"run {run}: {exc}\n{logs}") from None
    finally:
        if writers is not None:
            writers.stop()
        cluster.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--mode", choices=("kill", "stop"), default="kill",
                        help="how the leader fails: kill -9, or SIGSTOP (its machine vanishes, sockets left open)")
    parser.add_argument("--election-timeout", default="500ms", help="raft election timeout given to every node")
    parser.add_argument("--writers", type=int, default=4, help="writer connections (threads)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of writing before the kill")
    parser.add_argument("--timeout", type=float, default=20.0, help="give up on a run this long after the kill")
    parser.add_argument("--node-option", action="append", default=[], metavar="--OPTION=VALUE",
                        help="extra option for every node (repeatable)")
    parser.add_argument("--python", default=None, help="Python for the nodes (default: .venv/bin/python if present)")
    parser.add_argument("--keep", action="store_true", help="keep the temp directories (node logs)")
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= 100:
        parser.error("--runs: 1..100")
    if not 1 <= args.writers <= 64:
        parser.error("--writers: 1..64")
    if not 0 < args.warmup <= 60 or not 0 < args.timeout <= 120:
        parser.error("--warmup: (0, 60] s, --timeout: (0, 120] s")
    venv = REPO / ".venv" / "bin" / "python"
    python = args.python or (str(venv) if venv.exists() else sys.executable)
    times: list[float] = []
    try:
        for run in range(1, args.runs + 1):
            times.append(one_run(run, args, python))
    except BenchError as exc:
        print(f"failover: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("failover: interrupted", file=sys.stderr)
        return 130
    finally:
        if times:
            ms = sorted(t * 1e3 for t in times)
            print(f"\n{len(ms)} runs, --mode {args.mode}, election timeout {args.election_timeout}: "
                  f"median {statistics.median(ms):.1f} ms, "
                  f"min {ms[0]:.1f} ms, max {ms[-1]:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
