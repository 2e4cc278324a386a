"""Start TaskFlux node processes on loopback: the one place the scripts build a node's command line.

Used by ``cluster.py`` (a cluster you keep), ``failover.py`` and ``bench.py --start-node`` (throw-away nodes).
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class NodeStartError(Exception):
    """A node exited or did not listen in time; the message carries the end of its log."""


def free_port() -> int:
    """A loopback port free right now (bind to 0, read it back)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def node_command(python: str, node_id: int, cluster_ports: Sequence[int], client_port: int, data_dir: Path,
                 extra: Sequence[str] = (), http_port: int | None = None, grpc_port: int | None = None) -> list[str]:
    """``python taskflux.py`` for node ``node_id`` of a loopback cluster whose raft ports are ``cluster_ports``.
    REST and gRPC listen on loopback at the given ports, and are off without one; ``extra`` options come last
    and win."""
    peers = " ".join(f"127.0.0.1:{port}" for port in cluster_ports)
    http = [f"--http-listen-address=127.0.0.1:{http_port}"] if http_port else ["--http-enabled=false"]
    grpc = [f"--grpc-listen-address=127.0.0.1:{grpc_port}"] if grpc_port else ["--grpc-enabled=false"]
    return [
        python, str(REPO / "taskflux.py"),
        f"--cluster-peers={peers}",
        f"--cluster-node-id={node_id}",
        "--cluster-listen-host=127.0.0.1",
        f"--cluster-listen-port={cluster_ports[node_id]}",
        "--tcp-adapter-listen-host=127.0.0.1",
        f"--tcp-adapter-listen-port={client_port}",
        f"--tcp-adapter-advertise-address=127.0.0.1:{client_port}",
        *http,
        *grpc,
        f"--data-directory={data_dir}",
        "--log-format=text",
        *extra,
    ]


def spawn(command: list[str], log_path: Path, new_session: bool = False) -> subprocess.Popen[bytes]:
    """Start a node with its output appended to ``log_path``."""
    log = open(log_path, "ab")  # noqa: SIM115 (the child holds it for its life)
    try:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                start_new_session=new_session)
    finally:
        log.close()


def wait_listening(process: subprocess.Popen[bytes], port: int, log_path: Path, timeout: float = 30) -> None:
    """Return once the node accepts connections on ``port``; NodeStartError if it exits or times out."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
            raise NodeStartError(f"the node exited with status {process.returncode}:\n{tail}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise NodeStartError(f"the node did not listen on 127.0.0.1:{port} within {timeout:.0f} s") from None
            time.sleep(0.05)
