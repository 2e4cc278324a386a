"""The node runtime with real processes: a node loop that dies, limits that differ between nodes, the leader
lease and snapshots of a large state while the cluster keeps its leader."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from taskflux.wire import client_protocol as wire
from tests.server.test_node import break_tmp_dir
from tests.support.cluster import LocalCluster, NodeProcess, wait_until
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


def restart(node: NodeProcess, **options: str) -> None:
    node.kill()
    node.extra.update({key.replace("_", "-"): value for key, value in options.items()})
    node.start()


def test_a_follower_with_a_smaller_max_payload_size_stores_serves_and_warns_once(tmp_path: Path) -> None:
    cluster = LocalCluster(3, tmp_path, client_request_timeout="5s")
    with cluster.running():
        small = cluster.nodes[(cluster.wait_for_leader() + 1) % 3]
        restart(small, max_payload_size="16KiB")
        leader_id = cluster.wait_for_leader()  # the small node is back and follows the leader
        assert leader_id != small.node_id  # a returning node does not depose a live leader
        third = cluster.nodes[3 - leader_id - small.node_id]
        third.kill()  # the leader's only partner is now the small node: nothing commits unless it stores it
        leader = RawConnection(cluster.nodes[leader_id].client_address)
        big = [bytes([65 + i]) * (200 * 1024) for i in range(3)]
        for payload in big:
            assert leader.enqueue("", 1, payload) == wire.Ok()
        restart(small)  # its log holds the big records: it opens it all the same
        cluster.wait_for_leader([leader_id, small.node_id])
        cluster.nodes[leader_id].kill()
        third.start()  # its log lacks the big records: only the small node can win now
        assert cluster.wait_for_leader([small.node_id, third.node_id]) == small.node_id
        conn = RawConnection(small.client_address)
        served = [conn.dequeue("").response.record.payload for _ in big]  # type: ignore[union-attr]
        assert served == big
        # One warning per run of the small node (two runs since its limit was lowered), not one per record.
        assert small.log().count("larger than this node's max_payload_size") == 2, small.log()
