#!/usr/bin/env python3
"""Run a TaskFlux cluster on this machine: N node processes on loopback, stopped together on Ctrl-C.

    python scripts/cluster.py                    # 3 nodes: clients on 2602-2604, raft on 5000-5002
    python scripts/cluster.py --nodes 5 --data /tmp/tf --client-port 7000 --cluster-port 7100

Node i listens for clients on client-port + i and for its peers on cluster-port + i, keeps its data in
DATA/node<i> and writes its log to DATA/node<i>.log. Extra ``--option=value`` arguments after ``--`` go to
every node (for example ``-- --log-level=Debug``).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def node_command(node: int, args: argparse.Namespace, extra: list[str]) -> list[str]:
    peers = " ".join(f"127.0.0.1:{args.cluster_port + i}" for i in range(args.nodes))
    return [
        sys.executable, str(REPO / "taskflux.py"),
        f"--cluster-peers={peers}",
        f"--cluster-node-id={node}",
        "--cluster-listen-host=127.0.0.1",
        f"--cluster-listen-port={args.cluster_port + node}",
        "--tcp-adapter-listen-host=127.0.0.1",
        f"--tcp-adapter-listen-port={args.client_port + node}",
        f"--http-listen-address=127.0.0.1:{args.http_port + node}",
        f"--grpc-listen-address=127.0.0.1:{args.grpc_port + node}",
        f"--data-directory={Path(args.data) / f'node{node}'}",
        "--log-format=text",
        *extra,
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=3, choices=(1, 3, 5))
    parser.add_argument("--client-port", type=int, default=2602)
    parser.add_argument("--cluster-port", type=int, default=5000)
    parser.add_argument("--http-port", type=int, default=1606)
    parser.add_argument("--grpc-port", type=int, default=1706)
    parser.add_argument("--data", default="cluster-data", help="directory for the nodes' data and logs")
    parser.add_argument("extra", nargs="*", help="options passed to every node (after --)")
    args = parser.parse_args()
    Path(args.data).mkdir(parents=True, exist_ok=True)
    processes = []
    for node in range(args.nodes):
        log = open(Path(args.data) / f"node{node}.log", "ab")  # noqa: SIM115 (held by the child)
        # A session of its own: Ctrl-C reaches only this launcher, which then stops the nodes one by one.
        processes.append(subprocess.Popen(node_command(node, args, args.extra), stdout=log, stderr=log,
                                          start_new_session=True))
        log.close()
    print(f"{args.nodes} nodes started (logs in {args.data}/node<i>.log); client endpoints:")
    for node in range(args.nodes):
        print(f"  node {node}: 127.0.0.1:{args.client_port + node}")
    endpoints = " ".join(f"127.0.0.1:{args.client_port + i}" for i in range(args.nodes))
    print(f"console: python -m taskflux.client -e {endpoints.replace(' ', ' -e ')}")
    print("Ctrl-C stops them all.")
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    while not stopping:
        for node, process in enumerate(processes):
            if process.poll() is not None:
                print(f"node {node} exited with status {process.returncode}; see {args.data}/node{node}.log")
                stopping = True
        time.sleep(0.2)
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
    print("all nodes stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
