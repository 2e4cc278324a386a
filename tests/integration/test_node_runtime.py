"""The node runtime with real processes: a node loop that dies, limits that differ between nodes, the leader
lease and snapshots of a large state while the cluster keeps its leader."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.server.test_node import break_tmp_dir
from tests.support.cluster import LocalCluster, wait_until
from tests.support.raw_client import RawConnection

pytestmark = pytest.mark.timeout(180)


def enqueue_until_refused(address: str, payload: bytes, limit: int) -> None:
    """Enqueue until the node stops answering (or ``limit`` records were written)."""
    try:
        conn = RawConnection(address, timeout=5)
        for i in range(limit):
            conn.enqueue("", i, payload)
    except (OSError, AssertionError):
        return


@pytest.mark.parametrize("signals", [0, 3])
def test_a_leader_whose_loop_dies_exits_promptly_with_one_log_line(tmp_path: Path, signals: int) -> None:
    cluster = LocalCluster(3, tmp_path, log_file_soft_limit="1KiB", log_file_hard_limit="2KiB")
    with cluster.running():
        leader = cluster.nodes[cluster.wait_for_leader()]
        break_tmp_dir(leader.data_dir)  # its next new log segment cannot be created: the loop fails
        enqueue_until_refused(leader.client_address, b"x" * 100, 500)
        wait_until(lambda: "the node loop failed" in leader.log(), 20, "the loop to fail")
        assert leader.process is not None
        for _ in range(signals):  # an operator's SIGTERMs during that stop change nothing
            if leader.running:
                leader.process.send_signal(signal.SIGTERM)
            time.sleep(0.05)
        assert leader.process.wait(15) == 1
        log = leader.log()
        assert log.count("the node loop failed") == 1, log
        assert "Traceback" not in log, log
        assert log.rstrip().endswith("stopped"), log  # the stop ran to its end: files closed
