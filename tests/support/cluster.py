"""Real node processes on loopback for integration tests: free ports, temp data directories, SIGKILL.

``LocalCluster(size, tmp_path)`` lays out a cluster; with ``proxied=True`` every node reaches every
other node through its own ``FaultyProxy`` (node A's entry for node B is the proxy A→B), so a test can
cut any link in either direction.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from taskflux.wire import client_protocol as wire
from tests.support.proxy import FaultyProxy
from tests.support.raw_client import RawConnection

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class HeldPorts:
    """Distinct free loopback ports, kept bound until ``release()``: ports picked one at a time and released
    at once can come back twice, and a proxy binding port 0 meanwhile could get one of them."""

    def __init__(self, count: int) -> None:
        self._sockets = []
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            self._sockets.append(sock)
        self.ports = [sock.getsockname()[1] for sock in self._sockets]

    def release(self) -> None:
        for sock in self._sockets:
            sock.close()


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> object:
    """Poll ``condition`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


def rest_status(node: NodeProcess) -> dict[str, Any] | None:
    """The node's ``/api/v1/cluster`` view (role, term, leader_id, commit_index, …), None when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://{node.http_address}/api/v1/cluster", timeout=2) as answer:
            return json.loads(answer.read())  # type: ignore[no-any-return]
    except OSError:
        return None


class NodeProcess:
    """One ``python taskflux.py`` process with its own ports and data directory."""

    def __init__(self, node_id: int, root: Path, peers: list[str], cluster_port: int, client_port: int,
                 extra: dict[str, str], http_port: int | None = None, grpc_port: int | None = None) -> None:
        self.node_id = node_id
        self.data_dir = root / f"node{node_id}"
        self.log_path = root / f"node{node_id}.log"
        self.client_port = client_port
        self.cluster_port = cluster_port
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.peers = peers
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def client_address(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def http_address(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def command(self) -> list[str]:
        options = {
            **({"cluster-peers": " ".join(self.peers)} if self.peers else {}),
            "cluster-node-id": str(self.node_id),
            "cluster-listen-host": "127.0.0.1",
            "cluster-listen-port": str(self.cluster_port),
            "tcp-adapter-listen-host": "127.0.0.1",
            "tcp-adapter-listen-port": str(self.client_port),
            "tcp-adapter-advertise-address": self.client_address,
            "http-listen-address": self.http_address,
            "grpc-listen-address": self.grpc_address,
            "data-directory": str(self.data_dir),
            "log-format": "text",
            **self.extra,
        }
        return [sys.executable, str(REPO / "taskflux.py"), *(f"--{k}={v}" for k, v in options.items())]

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        log = open(self.log_path, "ab")  # noqa: SIM115 (the child owns it for its life)
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"})
        log.close()
        wait_until(self._listening, 20, f"node {self.node_id} to listen on {self.client_address}")

    def _listening(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"node {self.node_id} exited with {self.process.returncode}:\n{self.log()}")
        try:
            socket.create_connection(("127.0.0.1", self.client_port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: nothing gets a chance to flush."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def terminate(self, timeout: float = 15) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class LocalCluster:
    """``size`` nodes on loopback; stop() kills whatever is left."""

    def __init__(self, size: int, root: Path, proxied: bool = False, **extra: str) -> None:
        self.root = root
        held = HeldPorts(4 * size)
        ports = iter(held.ports)
        cluster_ports = [next(ports) for _ in range(size)]
        client_ports = [next(ports) for _ in range(size)]
        self.proxies: dict[tuple[int, int], FaultyProxy] = {}
        self.nodes: list[NodeProcess] = []
        for me in range(size):
            peers = []
            for other in range(size):
                if other == me or not proxied:
                    peers.append(f"127.0.0.1:{cluster_ports[other]}")
                else:
                    proxy = FaultyProxy(("127.0.0.1", cluster_ports[other]))
                    self.proxies[(me, other)] = proxy
                    peers.append(proxy.address)
            options = {"raft-election-timeout": "500ms", **{k.replace("_", "-"): v for k, v in extra.items()}}
            self.nodes.append(NodeProcess(me, root, peers, cluster_ports[me], client_ports[me], options,
                                          http_port=next(ports), grpc_port=next(ports)))
        held.release()  # the proxies are bound: nothing else in this process takes ports before the nodes do

    @property
    def client_addresses(self) -> list[str]:
        return [node.client_address for node in self.nodes]

    def start(self) -> None:
        """Start every node; if one fails, stop the others before raising (a fixture whose setup fails
        never reaches its teardown, and the nodes would outlive the test run)."""
        try:
            for node in self.nodes:
                node.start()
        except BaseException:
            self.stop()
            raise

    @contextlib.contextmanager
    def running(self) -> Iterator[LocalCluster]:
        """Started, with a leader elected; every node killed on the way out, whatever happened."""
        try:
            self.start()
            self.wait_for_leader()
            yield self
        finally:
            self.stop()

    def metadata(self, node_id: int) -> object | None:
        """ClusterMetadata as node ``node_id`` sees it, or None when it does not answer."""
        try:
            conn = RawConnection(self.nodes[node_id].client_address, timeout=2)
            try:
                return conn.request(wire.ClusterMetadataRequest())
            finally:
                conn.close()
        except OSError:
            return None

    def leader(self, among: list[int] | None = None) -> int | None:
        """The leader that the given running nodes (default: all running) agree on, or None."""
        ids = among if among is not None else [n.node_id for n in self.nodes if n.running]
        seen = set()
        for node_id in ids:
            answer = self.metadata(node_id)
            seen.add(getattr(answer, "leader_id", None))
        if len(seen) == 1:
            (leader,) = seen
            if leader in ids:  # a leader the others still remember but that is not running does not count
                return leader
        return None

    def wait_for_leader(self, among: list[int] | None = None, timeout: float = 20) -> int:
        found: list[int] = []

        def agreed() -> bool:
            leader = self.leader(among)
            if leader is not None:
                found.append(leader)
            return leader is not None

        wait_until(agreed, timeout, "a leader")
        if among is None:
            self.wait_until_caught_up(found[-1], timeout)
        return found[-1]

    def wait_until_caught_up(self, leader: int, timeout: float = 20) -> None:
        """Every running node's commit index reaches the leader's. A node that joined a new cluster after its
        first commit does not vote until it has caught up (docs/operations.md, "Identity rules"): a test that
        stops a node right after the election must not catch one in that window."""
        view = rest_status(self.nodes[leader])
        if view is None:
            return
        target = view["commit_index"]

        def caught_up() -> bool:
            views = [rest_status(node) for node in self.nodes if node.running]
            return all(view is None or view["commit_index"] >= target for view in views)

        wait_until(caught_up, timeout, f"every node to reach commit index {target}")

    def isolate(self, node_id: int) -> None:
        """Cut every link to and from ``node_id`` (needs ``proxied=True``)."""
        for (a, b), proxy in self.proxies.items():
            if node_id in (a, b):
                proxy.cut()

    def heal(self) -> None:
        for proxy in self.proxies.values():
            proxy.heal()

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()
        for proxy in self.proxies.values():
            proxy.close()

    def logs(self) -> str:
        return "\n".join(f"--- node {node.node_id} ---\n{node.log()[-4000:]}" for node in self.nodes)

    def new_node(self) -> NodeProcess:
        """A node process not started yet, to be added at run time (``cluster_join``): its id is the next one
        (ids are never reused, and every node this cluster ever had is in ``nodes``)."""
        held = HeldPorts(4)
        cluster_port, client_port, http_port, grpc_port = held.ports
        held.release()
        options = {**self.nodes[0].extra, "cluster-join": "true"}
        node = NodeProcess(len(self.nodes), self.root, [], cluster_port, client_port, options,
                           http_port=http_port, grpc_port=grpc_port)
        self.nodes.append(node)
        return node

    def member_address(self, node: NodeProcess) -> str:
        return f"127.0.0.1:{node.client_port}/{node.cluster_port}"

    def admin(self, *args: str, via: NodeProcess | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``python -m taskflux.admin`` against ``via`` (default: every running node, the first that answers)."""
        servers = [via] if via is not None else [node for node in self.nodes if node.running]
        command = [sys.executable, "-m", "taskflux.admin", *(f"--server={n.http_address}" for n in servers), *args]
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=120)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({done.returncode}): {done.stdout}{done.stderr}\n"
                                 f"{self.logs()}")
        return done

    def members(self, node: NodeProcess) -> dict[str, Any] | None:
        """``/api/v1/cluster/members`` as ``node`` sees it, None when it does not answer."""
        try:
            with urllib.request.urlopen(f"http://{node.http_address}/api/v1/cluster/members", timeout=2) as answer:
                return json.loads(answer.read())  # type: ignore[no-any-return]
        except OSError:
            return None
