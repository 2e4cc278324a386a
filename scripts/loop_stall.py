#!/usr/bin/env python3
"""Does an fsync on the gevent hub stall the node? One in-process single node, many writers, and a probe.

    python scripts/loop_stall.py [--writers 64] [--seconds 5] [--dir PATH]

Runs the same write load twice: with the node's disk writes in the node's disk thread (how the server runs)
and directly on the hub. A probe greenlet asks to sleep 1 ms over and over; how late it wakes up is how
long the hub was blocked. Prints writes/s, the probe's lateness (p50/p99/max) and fsync batches.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from taskflux.domain.commands import AddRecord  # noqa: E402
from taskflux.raft.config import RaftConfig  # noqa: E402
from taskflux.server.node import Node, NodeSettings  # noqa: E402
from taskflux.storage.disk import DiskStorage  # noqa: E402


def run(in_thread: bool, writers: int, seconds: float, directory: str) -> None:
    with tempfile.TemporaryDirectory(dir=directory) as data, DiskStorage(data) as storage:
        config = RaftConfig(node_id=0, cluster_size=1)
        node = Node(config, storage, lambda message: None,
                    NodeSettings(disk_io_in_thread=in_thread), random.Random(1))
        node.start()
        while not node.is_leader:
            gevent.sleep(0.01)
        deadline = time.monotonic() + seconds
        done = [0]
        lateness: list[float] = []

        def write() -> None:
            while time.monotonic() < deadline:
                node.submit(AddRecord("", 0, b"x" * 100))
                done[0] += 1

        def probe() -> None:
            while time.monotonic() < deadline:
                started = time.monotonic()
                gevent.sleep(0.001)
                lateness.append(time.monotonic() - started - 0.001)

        batches = node.batches
        started = time.monotonic()
        gevent.joinall([gevent.spawn(write) for _ in range(writers)] + [gevent.spawn(probe)])
        elapsed = time.monotonic() - started
        node.stop()
        lateness.sort()
        where = "disk thread" if in_thread else "on the hub "
        print(f"fsync {where}: {done[0] / elapsed:8.0f} writes/s, {(node.batches - batches) / elapsed:6.0f} "
              f"fsync batches/s, hub lateness p50 {statistics.median(lateness) * 1e3:6.2f} ms, "
              f"p99 {lateness[int(len(lateness) * 0.99)] * 1e3:6.2f} ms, max {lateness[-1] * 1e3:6.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writers", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--dir", default=".", help="where the temporary data directory goes (the disk measured)")
    args = parser.parse_args()
    for in_thread in (True, False):
        run(in_thread, args.writers, args.seconds, args.dir)


if __name__ == "__main__":
    main()
