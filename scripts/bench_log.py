#!/usr/bin/env python3
"""Benchmark of the storage log: 100-byte records appended in batches of 1, 64 and 256, one fsync per
batch, beside a plain-file floor measured in the same run (os.write of the same bytes + os.fsync).

The two cases run in alternating slices of a few milliseconds, so that drift in the machine's speed
(a shared VM varies by 2x within seconds) hits both alike; the ratio is what to read.
Not a test. Usage: python scripts/bench_log.py [--dir DIR] [--seconds S] [--record-bytes N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from taskflux.raft.types import Entry
from taskflux.storage import DiskStorage
from taskflux.storage.records import RECORD_HEADER_SIZE

BATCH_SIZES = (1, 64, 256)
SLICE_BATCHES = 32
clock = time.perf_counter


class Floor:
    """A plain file: one os.write of a batch's bytes (data plus our record headers) and one fsync."""

    def __init__(self, directory: str, batch: int, record_bytes: int) -> None:
        self.path = os.path.join(directory, f"floor-{batch}.bin")
        self.payload = b"x" * ((record_bytes + RECORD_HEADER_SIZE) * batch)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)

    def run(self, batches: int) -> float:
        fd, payload = self.fd, self.payload
        start = clock()
        for _ in range(batches):
            os.write(fd, payload)
            os.fsync(fd)
        return clock() - start

    def close(self) -> None:
        os.close(self.fd)
        os.unlink(self.path)


class Log:
    """DiskStorage.append of ``batch`` entries per call, default segment limits."""

    def __init__(self, directory: str, batch: int, record_bytes: int) -> None:
        self.path = os.path.join(directory, f"log-{batch}")
        self.storage = DiskStorage(self.path)
        self.batch = batch
        self.data = os.urandom(record_bytes)
        self.index = 1

    def run(self, batches: int) -> float:
        storage, batch, data = self.storage, self.batch, self.data
        elapsed = 0.0
        for _ in range(batches):
            # Built outside the timed region, just before use, as the raft core hands a batch over ready.
            entries = [Entry(i, 1, data) for i in range(self.index, self.index + batch)]
            start = clock()
            storage.append(entries)
            elapsed += clock() - start
            self.index += batch
        storage.set_committed(self.index - 1)
        return elapsed

    def close(self) -> None:
        self.storage.close()
        shutil.rmtree(self.path)


def measure(directory: str, batch: int, record_bytes: int, seconds: float) -> tuple[float, float, int]:
    """(floor seconds, log seconds, batches each) from alternating slices until ``seconds`` pass."""
    floor, log = Floor(directory, batch, record_bytes), Log(directory, batch, record_bytes)
    try:
        floor.run(SLICE_BATCHES)  # warm-up, not counted
        log.run(SLICE_BATCHES)
        floor_s = log_s = 0.0
        batches = 0
        deadline = clock() + seconds
        while clock() < deadline:
            floor_s += floor.run(SLICE_BATCHES)
            log_s += log.run(SLICE_BATCHES)
            batches += SLICE_BATCHES
    finally:
        floor.close()
        log.close()
    return floor_s, log_s, batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", help="where to write (default: a temp dir under the current directory)")
    parser.add_argument("--seconds", type=float, default=6.0, help="wall time per batch size (default 6)")
    parser.add_argument("--record-bytes", type=int, default=100)
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="bench-log-", dir=args.dir or os.getcwd())
    print(f"directory {directory}, {args.record_bytes}-byte records, one fsync per batch")
    print(f"{'case':<14}{'batch':>6}{'records/s':>13}{'batches/s':>12}{'vs floor':>10}")
    try:
        for batch in BATCH_SIZES:
            floor_s, log_s, batches = measure(directory, batch, args.record_bytes, args.seconds)
            for name, seconds in (("plain file", floor_s), ("DiskStorage", log_s)):
                ratio = f"{floor_s / seconds:>9.0%}" if name == "DiskStorage" else ""
                print(f"{name:<14}{batch:>6}{batches * batch / seconds:>13,.0f}{batches / seconds:>12,.0f}{ratio}")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
