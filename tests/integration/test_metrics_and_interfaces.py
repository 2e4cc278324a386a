"""One real node serving all three interfaces: the same queue through each, and /metrics that follows them."""

from __future__ import annotations

import http.client
import json
from typing import Any

import grpc
import grpc.experimental.gevent as grpc_gevent
import pytest
from prometheus_client.parser import text_string_to_metric_families

from taskflux.wire import client_protocol as wire
from tests.support.cluster import LocalCluster, wait_until
from tests.support.raw_client import RawConnection

grpc_gevent.init_gevent()  # before any gRPC object in this (monkey-patched) process

from taskflux.server.grpc_api import taskflux_pb2 as pb  # noqa: E402
from taskflux.server.grpc_api import taskflux_pb2_grpc as pb_grpc  # noqa: E402

pytestmark = pytest.mark.timeout(120)


def rest(address: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path, json.dumps(body).encode() if body is not None else None,
                     {"Content-Type": "application/json"} if body is not None else {})
        response = conn.getresponse()
        raw = response.read()
        kind = response.getheader("Content-Type", "")
        return response.status, json.loads(raw) if raw and kind.startswith("application/json") else raw.decode()
    finally:
        conn.close()


class Scrape:
    """The samples of one /metrics page."""

    def __init__(self, text: str) -> None:
        self.samples = [sample for family in text_string_to_metric_families(text) for sample in family.samples]

    def value(self, name: str, **labels: str) -> float:
        return sum(s.value for s in self.samples
                   if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_one_queue_through_every_interface_and_metrics_that_follow(tmp_path: Any) -> None:
    with LocalCluster(1, tmp_path).running() as cluster:
        node = cluster.nodes[0]
        wait_until(lambda: rest(node.http_address, "GET", "/health/ready")[0] == 200, 20, "ready")

        binary = RawConnection(node.client_address)
        assert binary.command(wire.CreateQueueCommand("shared")) == wire.Ok()
        assert binary.enqueue("shared", 3, b"from tcp") == wire.Ok()
        assert rest(node.http_address, "POST", "/api/v1/queues/shared/records",
                     {"priority": 1, "payload": "from rest"})[0] == 201
        with grpc.insecure_channel(node.grpc_address) as channel:
            stub = pb_grpc.TaskFluxServiceStub(channel)
            requests = iter([
                pb.EnqueueRequest(data=pb.EnqueueRequest.EnqueueRequestData(
                    queue="shared", record=pb.QueueRecord(priority=2, payload=b"from grpc"))),
                pb.EnqueueRequest(ack=pb.AckMessage(ack=True)),
            ])
            answers = list(stub.Enqueue(requests, timeout=10))
            assert [a.WhichOneof("result") for a in answers] == ["data", "data"]
            assert stub.GetCount(pb.GetCountRequest(queue="shared"), timeout=10).data.count == 3

        # Every interface sees the others' records, most urgent first.
        assert rest(node.http_address, "POST", "/api/v1/queues/shared/dequeue")[1]["payload"] == "from rest"
        taken = binary.dequeue("shared")
        assert taken.response.record.payload == b"from grpc"  # type: ignore[union-attr]

        status, page = rest(node.http_address, "GET", "/metrics")
        assert status == 200
        scrape = Scrape(page)
        for interface, command in (("tcp", "enqueue"), ("rest", "add_record"), ("grpc", "Enqueue.ack"),
                                   ("grpc", "GetCount"), ("rest", "dequeue"), ("tcp", "dequeue")):
            assert scrape.value("taskflux_requests_total", interface=interface, command=command, outcome="ok") >= 1, (
                interface, command)
        assert scrape.value("taskflux_records_enqueued_total", interface="tcp") == 1
        assert scrape.value("taskflux_records_enqueued_total", interface="rest") == 1
        assert scrape.value("taskflux_queue_depth", queue="shared") == 1
        assert scrape.value("taskflux_raft_role", role="leader") == 1
        assert scrape.value("taskflux_clients_connected", interface="tcp") == 1  # `binary` is still open
        assert scrape.value("taskflux_clients_connected", interface="rest") == 1  # the scrape's own connection
        assert scrape.value("taskflux_raft_persist_batch_entries_count") >= 5
        assert scrape.value("taskflux_raft_commit_index") == scrape.value("taskflux_raft_applied_index") >= 6
        assert scrape.value("taskflux_storage_log_segments") >= 1
        binary.close()
