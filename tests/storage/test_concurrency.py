"""One thread appends while another reads what is already published: no torn view, no errors."""

from __future__ import annotations

import threading
from pathlib import Path

from taskflux.storage import DiskStorage

from .helpers import make_entries


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

        thread = threading.Thread(target=writer)
        thread.start()
        reads = 0
        expected = initial + later
        while thread.is_alive() or reads < 50:
            assert s.entries(1, 51, 1 << 20) == initial
            last = s.last_index()
            # Whatever is published is durable and fully indexed: readable with the right terms.
            assert s.term(last) == expected[last - 1].term
            assert s.entries(max(1, last - 10), last + 1, 1 << 20) == expected[max(0, last - 11) : last]
            reads += 1
        thread.join()
        assert not failures
        assert s.last_index() == 650
        assert s.entries(1, 651, 1 << 30) == expected
