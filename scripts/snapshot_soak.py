#!/usr/bin/env python3
"""Snapshots of a large queue under write load: does the cluster keep its leader? 3 nodes on loopback.

    python scripts/snapshot_soak.py                      # 1,000,000 records, then 5 minutes more of writes
    python scripts/snapshot_soak.py --records 200000 --soak 60 --writers 16

Starts a fresh 3-node cluster (free ports, a temp directory, REST/gRPC off) with small log segments and
``snapshot_creation_segments_threshold=1``, so a snapshot of the whole state is taken every few seconds.
``--writers`` connections enqueue 100-byte records to the leader until ``--records`` are stored, then keep
writing for ``--soak`` seconds. Prints the leader changes and election attempts seen in the nodes' logs during
the soak, the writes and the errors (lost connections, NotLeader), the snapshots taken, and each node's
longest node-loop turn (logged by a node when it stops). Every wait is bounded; the nodes are stopped at the
end (SIGTERM, then SIGKILL) and the directory removed unless ``--keep``.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))

from bench import BenchError  # noqa: E402
from failover import Cluster, Writers, start_writing  # noqa: E402

LONGEST_TURN = re.compile(r"longest turn took ([0-9.]+) s")
SNAPSHOT = re.compile(r"snapshot at index \d+: (\d+) bytes in ([0-9.]+) s")


def count(cluster: Cluster, text: str) -> int:
    return sum(cluster.log(i).count(text) for i in range(3))


def acked(writers: Writers) -> int:
    with writers.lock:
        return len(writers.acks)


def stop_gracefully(cluster: Cluster) -> None:
    for proc in cluster.procs:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in cluster.procs:
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):  # killed below
                proc.wait(30)
    cluster.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--soak", type=float, default=300.0, help="seconds of writes once --records are stored")
    parser.add_argument("--writers", type=int, default=32)
    parser.add_argument("--segment", default="4MiB", help="log_file_soft_limit (the hard limit is twice it)")
    parser.add_argument("--election-timeout", default="500ms")
    parser.add_argument("--fill-limit", type=float, default=1800.0, help="give up if the fill takes longer")
    parser.add_argument("--keep", action="store_true", help="keep the data directory and logs")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="taskflux-soak-"))
    hard = f"{2 * int(args.segment[:-3])}{args.segment[-3:]}" if args.segment.endswith("MiB") else args.segment
    options = [f"--log-file-soft-limit={args.segment}", f"--log-file-hard-limit={hard}",
               "--snapshot-creation-segments-threshold=1"]
    cluster = Cluster(sys.executable, root, 3, args.election_timeout, options)
    writers: Writers | None = None
    try:
        _, writers = start_writing(cluster, args.writers, limit_s=args.fill_limit + args.soak + 60)
        started = time.monotonic()
        while acked(writers) < args.records:
            if time.monotonic() - started > args.fill_limit:
                raise BenchError(f"only {acked(writers)} records after {args.fill_limit:.0f} s")
            time.sleep(1)
        fill_seconds = time.monotonic() - started
        print(f"filled: {acked(writers)} records in {fill_seconds:.0f} s ({acked(writers) / fill_seconds:.0f}/s); "
              f"leaders so far {count(cluster, 'role leader')}", flush=True)
        leaders, attempts, errors, before = (count(cluster, "role leader"), count(cluster, "role pre_candidate"),
                                             writers.errors, acked(writers))
        soak_started = time.monotonic()
        time.sleep(args.soak)
        soak_seconds = time.monotonic() - soak_started
        writes, soak_errors = acked(writers) - before, writers.errors - errors
        leader_changes = count(cluster, "role leader") - leaders
        election_attempts = count(cluster, "role pre_candidate") - attempts
        writers.stop()
        writers = None
        stop_gracefully(cluster)
        snapshots = [(int(size), float(seconds))
                     for i in range(3) for size, seconds in SNAPSHOT.findall(cluster.log(i))]
        turns = [max(map(float, LONGEST_TURN.findall(cluster.log(i))), default=float("nan")) for i in range(3)]
        print(f"soak: {soak_seconds:.0f} s, {writes} writes ({writes / soak_seconds:.0f}/s), {soak_errors} errors, "
              f"leader changes {leader_changes}, election attempts {election_attempts}")
        if snapshots:
            print(f"snapshots: {len(snapshots)}, largest {max(s for s, _ in snapshots) / 1e6:.1f} MB, "
                  f"longest {max(t for _, t in snapshots):.2f} s (taken off the loop)")
        print("longest node-loop turn per node: " + ", ".join(f"node {i} {t:.3f} s" for i, t in enumerate(turns)))
        return 0 if leader_changes == 0 else 1
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        if writers is not None:
            writers.stop()
        cluster.stop()
        if args.keep:
            print(f"data and logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
