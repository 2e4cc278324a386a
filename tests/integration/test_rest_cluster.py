"""REST against a 3-node cluster of real processes: followers point at the leader, writes survive its kill -9."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import LocalCluster, wait_until

pytestmark = pytest.mark.timeout(120)


def call(address: str, method: str, path: str, body: Any = None) -> tuple[int, dict[str, str], Any]:
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, json.dumps(body).encode() if body is not None else None, headers)
        response = conn.getresponse()
        raw = response.read()
        return response.status, dict(response.getheaders()), json.loads(raw) if raw else None
    finally:
        conn.close()


def answers(address: str) -> bool:
    try:
        call(address, "GET", "/health/live")
        return True
    except OSError:
        return False


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    cluster = LocalCluster(3, tmp_path, client_request_timeout="3s")
    cluster.start()
    yield cluster
    cluster.stop()


def test_followers_send_rest_clients_to_the_leader_and_acked_writes_survive_its_kill(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader()
    nodes = cluster.nodes
    for node in nodes:
        wait_until(lambda node=node: answers(node.http_address), 20, f"REST on node {node.node_id}")
    # Every node becomes ready: it knows the leader and has applied what is committed.
    for node in nodes:
        wait_until(lambda node=node: call(node.http_address, "GET", "/health/ready")[0] == 200, 20, "ready")

    follower = next(node for node in nodes if node.node_id != leader)
    status, headers, body = call(follower.http_address, "PUT", "/api/v1/queues/jobs")
    assert status == 421
    assert body["error"]["leader_id"] == leader
    assert body["error"]["leader"] == nodes[leader].http_address
    assert headers["Location"] == f"http://{nodes[leader].http_address}/api/v1/queues/jobs"

    view = call(follower.http_address, "GET", "/api/v1/cluster")[2]
    assert view["leader_id"] == leader and view["role"] == "follower"
    assert [n["http_address"] for n in view["nodes"]] == [n.http_address for n in nodes]

    target = nodes[leader].http_address
    assert call(target, "PUT", "/api/v1/queues/jobs")[0] == 201
    acked = []
    for i in range(30):
        status, _, _ = call(target, "POST", "/api/v1/queues/jobs/records", {"priority": i, "payload": f"r{i}"})
        assert status == 201
        acked.append(f"r{i}")
    removed = call(target, "POST", "/api/v1/queues/jobs/dequeue")[2]["payload"]  # committed before the answer
    assert removed == "r0"

    nodes[leader].kill()
    survivors = [n.node_id for n in nodes if n.node_id != leader]
    new_leader = cluster.wait_for_leader(among=survivors)
    address = nodes[new_leader].http_address

    def drained() -> list[str]:
        taken = []
        while True:
            status, _, body = call(address, "POST", "/api/v1/queues/jobs/dequeue")
            if status == 204:
                return taken
            assert status == 200, body
            taken.append(body["payload"])

    wait_until(lambda: call(address, "GET", "/health/ready")[0] == 200, 20, "the new leader is ready")
    assert sorted(drained()) == sorted(acked[1:])  # nothing acked lost, the dequeued record stays gone
