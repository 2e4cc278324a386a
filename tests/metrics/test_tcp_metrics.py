"""The binary protocol's request metrics: a ClientServer on loopback driven by a raw protocol client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import gevent
import pytest

from taskflux.server.metrics import NodeMetrics
from taskflux.server.peers import PeerNetwork
from taskflux.server.tcp import ClientPortSettings, ClientServer
from taskflux.wire import client_protocol as wire
from tests.metrics.helpers import Scrape, start_node, wait_until
from tests.support.raw_client import RawConnection

pytestmark = pytest.mark.timeout(60)


SETTINGS = ClientPortSettings("127.0.0.1", 0)  # any free port


def peer_network(node_id: int = 0, cluster_size: int = 1) -> PeerNetwork:
    """Never started: the client port only reads the client endpoints it knows."""
    return PeerNetwork(node_id, [("127.0.0.1", 5000 + i) for i in range(cluster_size)], ("127.0.0.1", 0),
                       "127.0.0.1:1", lambda message: None)


def answer(packet: wire.Packet) -> object:
    """The response inside a CommandResponse (or the packet itself)."""
    return packet.response if isinstance(packet, wire.CommandResponse) else packet


def is_error(packet: wire.Packet) -> bool:
    return isinstance(answer(packet), (wire.CommandErrorResponse, wire.ErrorResponse))


def record_of(packet: wire.Packet) -> object:
    response = answer(packet)
    assert isinstance(response, wire.DequeueResponse), packet
    return response.record


class Served:
    """A node, its metrics and a started ClientServer on a free loopback port (peers are never started)."""

    def __init__(self, path: Path, cluster_size: int = 1, node_id: int = 0) -> None:
        self.metrics = NodeMetrics(process_metrics=False)
        self.node, self.storage = start_node(path / "data", self.metrics, node_id=node_id, cluster_size=cluster_size)
        self.peers = peer_network(node_id, cluster_size)
        self.clients = ClientServer(self.node, self.peers, SETTINGS, metrics=self.metrics)
        self.clients.start()

    def connect(self) -> RawConnection:
        return RawConnection(self.clients.address)

    def scrape(self) -> Scrape:
        return Scrape(self.metrics)

    def requests(self, command: str, outcome: str) -> float:
        return self.scrape().value_or_zero("taskflux_requests_total", interface="tcp", command=command,
                                           outcome=outcome)

    def stop(self) -> None:
        self.clients.stop(timeout=1.0)
        self.node.stop()
        self.storage.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    harness = Served(tmp_path)
    wait_until(lambda: harness.node.is_leader)
    yield harness
    harness.stop()


def test_requests_are_counted_by_command_and_outcome(served: Served) -> None:
    conn = served.connect()
    assert conn.command(wire.CreateQueueCommand("jobs")) == wire.Ok()
    assert is_error(conn.command(wire.CreateQueueCommand("jobs")))  # it exists
    assert conn.command(wire.CreateQueueCommand("tiny", max_queue_size=1)) == wire.Ok()
    for priority in range(3):
        assert conn.enqueue("jobs", priority, b"job") == wire.Ok()
    assert conn.enqueue("tiny", 1, b"a") == wire.Ok()
    assert isinstance(answer(conn.enqueue("tiny", 1, b"b")), wire.PolicyViolationResponse)
    assert is_error(conn.enqueue("missing", 1, b"c"))
    assert conn.command(wire.EnqueueCommand("jobs", 9, b"declined")) == wire.Ok()
    assert conn.request(wire.Nack()) == wire.Ok()  # the client declines its own enqueue
    assert record_of(conn.dequeue("jobs", ack=True)) is not None  # handed out, acked
    assert record_of(conn.dequeue("jobs", ack=False)) is not None  # handed out, nacked: offered again
    assert record_of(conn.dequeue("tiny", ack=True)) is not None
    assert record_of(conn.dequeue("tiny")) is None  # empty
    assert conn.command(wire.CountCommand("jobs")) == wire.CommandResponse(wire.CountResponse(2))
    assert isinstance(conn.command(wire.ListQueuesCommand()), wire.CommandResponse)
    assert conn.command(wire.DeleteQueueCommand("tiny")) == wire.Ok()
    assert isinstance(conn.request(wire.ClusterMetadataRequest()), wire.ClusterMetadataResponse)

    expected = {
        ("create_queue", "ok"): 2, ("create_queue", "error"): 1,
        ("enqueue", "ok"): 4, ("enqueue", "policy_violation"): 1, ("enqueue", "error"): 1, ("enqueue", "nack"): 1,
        ("dequeue", "ok"): 2, ("dequeue", "nack"): 1, ("dequeue", "empty"): 1,
        ("count", "ok"): 1, ("list_queues", "ok"): 1, ("delete_queue", "ok"): 1, ("cluster_metadata", "ok"): 1,
    }
    scrape = served.scrape()
    for (command, outcome), count in expected.items():
        assert scrape.value("taskflux_requests_total", interface="tcp", command=command, outcome=outcome) == count, \
            (command, outcome)
    found = {(labels["command"], labels["outcome"]) for labels in scrape.labels_of("taskflux_requests_total")}
    assert found == set(expected)
    for command in {command for command, _ in expected}:
        total = sum(count for (c, _), count in expected.items() if c == command)
        assert scrape.value("taskflux_request_duration_seconds_count", interface="tcp", command=command) == total
    assert scrape.value("taskflux_request_duration_seconds_sum", interface="tcp", command="enqueue") > 0
    assert scrape.value("taskflux_records_enqueued_total", interface="tcp") == 4
    assert scrape.value("taskflux_records_dequeued_total", interface="tcp") == 3
    assert scrape.value("taskflux_records_acked_total", interface="tcp") == 2
    assert scrape.value("taskflux_records_nacked_total", interface="tcp") == 1
    assert scrape.value("taskflux_queue_depth", queue="jobs") == 2
    conn.close()


def test_connected_clients_go_up_and_down(served: Served) -> None:
    def connected() -> float:
        return served.scrape().value("taskflux_clients_connected", interface="tcp")

    assert connected() == 0
    first, second = served.connect(), served.connect()
    wait_until(lambda: connected() == 2)
    second.close()
    wait_until(lambda: connected() == 1)
    first.close()
    wait_until(lambda: connected() == 0)


def test_a_client_gone_mid_flow_counts_as_disconnected(served: Served) -> None:
    conn = served.connect()
    assert conn.command(wire.EnqueueCommand("", 1, b"never confirmed")) == wire.Ok()
    conn.close()
    wait_until(lambda: served.requests("enqueue", "disconnected") == 1)
    assert served.scrape().value("taskflux_records_enqueued_total", interface="tcp") == 0


def test_a_follower_counts_not_leader(tmp_path: Path) -> None:
    follower = Served(tmp_path, cluster_size=3, node_id=1)  # nobody answers its votes: it never leads
    try:
        conn = follower.connect()
        assert isinstance(conn.command(wire.EnqueueCommand("", 1, b"x")), wire.NotLeader)
        assert isinstance(conn.command(wire.CountCommand("")), wire.NotLeader)
        assert follower.requests("enqueue", "not_leader") == 1
        assert follower.requests("count", "not_leader") == 1
        assert follower.scrape().value("taskflux_raft_role", role="leader") == 0
        conn.close()
    finally:
        follower.stop()


def test_without_metrics_the_server_works_as_before(tmp_path: Path) -> None:
    node, storage = start_node(tmp_path / "data", None)
    clients = ClientServer(node, peer_network(), SETTINGS)
    clients.start()
    try:
        wait_until(lambda: node.is_leader)
        conn = RawConnection(clients.address)
        assert conn.enqueue("", 1, b"x") == wire.Ok()
        assert isinstance(conn.dequeue(""), wire.CommandResponse)
        conn.close()
        gevent.sleep(0)
    finally:
        clients.stop(timeout=1.0)
        node.stop()
        storage.close()


def test_a_write_ended_by_the_node_stopping_after_proposing_closes_the_connection_as_outcome_unknown(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(entries: object) -> None:
        raise OSError(5, "Input/output error")

    conn = served.connect()
    assert conn.command(wire.EnqueueCommand("", 1, b"maybe")) == wire.Ok()
    monkeypatch.setattr(served.storage, "append", broken)
    conn.send_packet(wire.Ack())
    wait_until(conn.is_closed_by_server)  # no answer: the outcome is unknown, as for a commit timeout
    wait_until(lambda: served.requests("enqueue", "timeout") == 1)  # counted as outcome unknown, not "stopped"
