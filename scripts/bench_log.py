#!/usr/bin/env python3
"""Benchmark of the storage log: 100-byte records appended in batches of 1, 64 and 256, one fsync per
batch, beside a plain-file floor measured in the same run (os.write of the same bytes + os.fsync).

Not a test. Usage: python scripts/bench_log.py [--dir DIR] [--seconds S] [--record-bytes N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from taskflux.raft.types import Entry
from taskflux.storage import DiskStorage
from taskflux.storage.records import RECORD_HEADER_SIZE

BATCH_SIZES = (1, 64, 256)


@dataclass
class Result:
    batches: int
    records: int
    seconds: float

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds

    @property
    def batches_per_s(self) -> float:
        return self.batches / self.seconds


def bench_floor(directory: str, batch: int, record_bytes: int, seconds: float) -> Result:
    """Plain file: one os.write of the batch's bytes (records plus our header size) and one fsync."""
    path = os.path.join(directory, f"floor-{batch}.bin")
    payload = b"x" * ((record_bytes + RECORD_HEADER_SIZE) * batch)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    try:
        n = 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            os.write(fd, payload)
            os.fsync(fd)
            n += 1
            if n % 16 == 0 and time.perf_counter() >= deadline:
                break
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
        os.unlink(path)
    return Result(n, n * batch, elapsed)


def bench_log(directory: str, batch: int, record_bytes: int, seconds: float) -> Result:
    """DiskStorage.append of ``batch`` entries per call (entries built beforehand, not timed)."""
    data_dir = os.path.join(directory, f"log-{batch}")
    data = os.urandom(record_bytes)
    storage = DiskStorage(data_dir)
    clock = time.perf_counter
    try:
        index = 1
        n = 0
        elapsed = 0.0
        while elapsed < seconds:
            # Built outside the timed region, just before use (warm in cache), as the raft core hands
            # a batch over ready.
            entries = [Entry(i, 1, data) for i in range(index, index + batch)]
            start = clock()
            storage.append(entries)
            elapsed += clock() - start
            index += batch
            n += 1
    finally:
        storage.close()
        shutil.rmtree(data_dir)
    return Result(n, n * batch, elapsed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", help="where to write (default: a temp dir under the current directory)")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per case (default 3)")
    parser.add_argument("--record-bytes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3, help="floor/log pairs per batch size; best kept")
    args = parser.parse_args()
    parent = args.dir or os.getcwd()
    directory = tempfile.mkdtemp(prefix="bench-log-", dir=parent)
    print(f"directory {directory}, {args.record_bytes}-byte records, {args.seconds:g} s per case")
    print(f"{'case':<14}{'batch':>6}{'records/s':>13}{'batches/s':>12}{'vs floor':>10}")
    try:
        for batch in BATCH_SIZES:
            floor = log = None
            for _ in range(args.rounds):  # interleaved so drift hits both alike
                f = bench_floor(directory, batch, args.record_bytes, args.seconds / args.rounds)
                g = bench_log(directory, batch, args.record_bytes, args.seconds / args.rounds)
                floor = f if floor is None or f.records_per_s > floor.records_per_s else floor
                log = g if log is None or g.records_per_s > log.records_per_s else log
            assert floor is not None and log is not None
            ratio = log.records_per_s / floor.records_per_s
            print(f"{'plain file':<14}{batch:>6}{floor.records_per_s:>13,.0f}{floor.batches_per_s:>12,.0f}{'':>10}")
            print(f"{'DiskStorage':<14}{batch:>6}{log.records_per_s:>13,.0f}{log.batches_per_s:>12,.0f}"
                  f"{ratio:>9.0%}")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
