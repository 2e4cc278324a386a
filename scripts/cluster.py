#!/usr/bin/env python3
"""Run a TaskFlux cluster on this machine: N node processes on loopback, stopped together on Ctrl-C.

    python scripts/cluster.py        # 3 nodes: clients on 2602-2604, REST 1616-1618, gRPC 1626-1628, raft 5000-5002
    python scripts/cluster.py --nodes 5 --data /tmp/tf --client-port 7000 --cluster-port 7100 --http-port 0

Node i listens for clients on client-port + i (REST on http-port + i, gRPC on grpc-port + i; 0 turns them
off) and for its peers on cluster-port + i, keeps its data in
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from local_nodes import node_command, spawn


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=3, choices=(1, 3, 5))
    parser.add_argument("--client-port", type=int, default=2602)
    parser.add_argument("--cluster-port", type=int, default=5000)
    parser.add_argument("--http-port", type=int, default=1616, help="REST of node i on this port + i (0: off)")
    parser.add_argument("--grpc-port", type=int, default=1626, help="gRPC of node i on this port + i (0: off)")
    parser.add_argument("--data", default="cluster-data", help="directory for the nodes' data and logs")
    parser.add_argument("extra", nargs="*", help="options passed to every node (after --)")
    args = parser.parse_args()
    Path(args.data).mkdir(parents=True, exist_ok=True)
    processes = []
    cluster_ports = [args.cluster_port + node for node in range(args.nodes)]
    for node in range(args.nodes):
        command = node_command(sys.executable, node, cluster_ports, args.client_port + node,
                               Path(args.data) / f"node{node}", args.extra,
                               http_port=args.http_port + node if args.http_port else None,
                               grpc_port=args.grpc_port + node if args.grpc_port else None)
        # A session of its own: Ctrl-C reaches only this launcher, which then stops the nodes one by one.
        processes.append(spawn(command, Path(args.data) / f"node{node}.log", new_session=True))
    print(f"{args.nodes} nodes started (logs in {args.data}/node<i>.log):")
    for node in range(args.nodes):
        rest = f", REST http://127.0.0.1:{args.http_port + node}" if args.http_port else ""
        grpc = f", gRPC 127.0.0.1:{args.grpc_port + node}" if args.grpc_port else ""
        print(f"  node {node}: binary protocol 127.0.0.1:{args.client_port + node}{rest}{grpc}")
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
