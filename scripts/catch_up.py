#!/usr/bin/env python3
"""How long a new, empty node takes to catch up with a loaded cluster: the snapshot transfer rate.

    python scripts/catch_up.py --records 1000000 [--payload 100] [--writers 16] [--data DIR]

Starts one node on loopback, fills its default queue with ``--records`` records (``--writers`` client processes,
``--payload`` bytes each), adds a second node with ``python -m taskflux.admin add``, starts it empty with
``cluster_join``, and measures until its applied index reaches the leader's commit index (its copy holds every
record): the time, the snapshot it received and the rate. Then it promotes the new node and checks that the new
node, made leader, counts every record. Prints one line per figure; everything runs on 127.0.0.1 and is stopped
at the end.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from local_nodes import REPO, free_port, node_command, spawn, wait_listening

from taskflux.client.client import TaskFluxClient


def fill(args: tuple[str, int, int, int]) -> int:
    """One writer process: ``count`` records into the default queue."""
    endpoint, first, count, payload_size = args
    client = TaskFluxClient([endpoint], timeout=30)
    payload = b"x" * payload_size
    try:
        for number in range(first, first + count):
            client.enqueue("", number, payload)
    finally:
        client.close()
    return count


def status(http_port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/api/v1/cluster", timeout=5) as answer:
            return json.loads(answer.read())  # type: ignore[no-any-return]
    except OSError:
        return None


def admin(http_port: int, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "taskflux.admin", "--server", f"127.0.0.1:{http_port}", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"admin {' '.join(args)} failed: {done.stdout}{done.stderr}")
    return done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--payload", type=int, default=100, help="payload bytes per record")
    parser.add_argument("--writers", type=int, default=16, help="client processes filling the queue")
    parser.add_argument("--data", default=None, help="directory for the nodes' data and logs (default: a temp dir)")
    args = parser.parse_args()
    root = Path(args.data or tempfile.mkdtemp(prefix="taskflux-catch-up-"))
    root.mkdir(parents=True, exist_ok=True)
    ports = {name: free_port() for name in ("cluster0", "client0", "http0", "cluster1", "client1", "http1")}
    leader_cmd = node_command(sys.executable, 0, [ports["cluster0"]], ports["client0"], root / "node0",
                              http_port=ports["http0"])
    processes = []
    try:
        leader = spawn(leader_cmd, root / "node0.log")
        processes.append(leader)
        wait_listening(leader, ports["client0"], root / "node0.log")
        endpoint = f"127.0.0.1:{ports['client0']}"
        started = time.monotonic()
        share = args.records // args.writers
        jobs = [(endpoint, w * share, share + (args.records % args.writers if w == args.writers - 1 else 0),
                 args.payload) for w in range(args.writers)]
        with multiprocessing.get_context("spawn").Pool(args.writers) as pool:
            written = sum(pool.map(fill, jobs))
        fill_seconds = time.monotonic() - started
        rate = written / fill_seconds
        print(f"filled: {written} records of {args.payload} B in {fill_seconds:.1f} s ({rate:,.0f}/s)")
        view = status(ports["http0"])
        assert view is not None
        target = view["commit_index"]

        added = admin(ports["http0"], "add", f"127.0.0.1:{ports['client1']}/{ports['cluster1']}")
        node_id = int(added.split()[1])
        joiner_cmd = node_command(sys.executable, 0, [ports["cluster0"]], ports["client1"], root / "node1",
                                  extra=["--cluster-join=true", f"--cluster-node-id={node_id}",
                                         f"--cluster-listen-port={ports['cluster1']}"],
                                  http_port=ports["http1"])
        joiner_cmd = [part for part in joiner_cmd if not part.startswith("--cluster-peers=")]
        started = time.monotonic()
        joiner = spawn(joiner_cmd, root / "node1.log")
        processes.append(joiner)
        while True:
            view = status(ports["http1"])
            if view is not None and view["applied_index"] >= target:
                break
            if joiner.poll() is not None or time.monotonic() - started > 3600:
                raise SystemExit(f"the new node did not catch up:\n{(root / 'node1.log').read_text()[-3000:]}")
            time.sleep(0.05)
        seconds = time.monotonic() - started
        snapshot = root / "node1" / "snapshot"
        size = snapshot.stat().st_size if snapshot.exists() else 0
        print(f"caught up: index {target} in {seconds:.2f} s from its start (process start, handshake, snapshot, "
              f"log tail, apply)")
        print(f"snapshot received: {size / 1e6:.1f} MB; {size / 1e6 / seconds:.1f} MB/s, "
              f"{written / seconds:,.0f} records/s")
        admin(ports["http0"], "promote", str(node_id))
        admin(ports["http0"], "transfer-leadership", str(node_id))
        client = TaskFluxClient([f"127.0.0.1:{ports['client1']}"], timeout=30)
        try:
            count = client.count("")
        finally:
            client.close()
        print(f"the new node, leading: {count} records in the queue (expected {written})")
        return 0 if count == written else 1
    finally:
        for process in processes:
            process.kill()
            process.wait()
        if args.data is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
