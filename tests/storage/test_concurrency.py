"""One OS thread appends while another reads what is already published: no torn view, no errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gevent import monkey

from taskflux.storage import DiskStorage

from .helpers import make_entries

# The suite may run under gevent's monkey-patching, where threading makes greenlets; the node runs
# append() in a real OS thread (gevent's thread pool), so this test does too.
_start_new_thread = monkey.get_original("_thread", "start_new_thread")
_allocate_lock = monkey.get_original("_thread", "allocate_lock")


def run_in_os_thread(target: Callable[[], None]) -> Callable[[], bool]:
    """Start ``target`` in a new OS thread; returns a function telling whether it is still running."""
    running = _allocate_lock()
    running.acquire()

    def body() -> None:
        try:
            target()
        finally:
            running.release()

    _start_new_thread(body, ())
    return running.locked


def test_reads_during_appends_in_a_worker_thread(tmp_path: Path) -> None:
    initial = make_entries(1, 50)
    later = make_entries(51, 600, size=20)
    with DiskStorage(tmp_path, soft_limit_bytes=300, hard_limit_bytes=600) as s:
        s.append(initial)
        s.set_committed(50)
        failures: list[BaseException] = []

        def writer() -> None:
            try:
                for k in range(0, len(later), 7):
                    s.append(later[k : k + 7])
            except BaseException as e:  # reported by the main thread
                failures.append(e)

        is_running = run_in_os_thread(writer)
        reads = 0
        seen = set()
        expected = initial + later
        while is_running() or reads < 50:
            assert s.entries(1, 51, 1 << 20) == initial
            last = s.last_index()
            seen.add(last)
            # Whatever is published is durable and fully indexed: readable with the right terms.
            assert s.term(last) == expected[last - 1].term
            assert s.entries(max(1, last - 10), last + 1, 1 << 20) == expected[max(0, last - 11) : last]
            reads += 1
        assert not failures
        assert len(seen) > 3  # the reads really overlapped the appends
        assert s.last_index() == 650
        assert s.entries(1, 651, 1 << 30) == expected
