"""Writes whose fate is unknown: an immediate dequeue hands its record over instead of losing it, and a
write that may still commit is answered "outcome unknown" (504), never "stopping, retry" (503)."""

from __future__ import annotations

import http.client
import json

import gevent
import pytest

from taskflux.server.main import Server
from tests.rest.conftest import Wsgi, queue_path, wait_until
from tests.support.stalls import stall_appends

pytestmark = pytest.mark.timeout(60)


def add(api: Wsgi, name: str, priority: int, payload: str) -> None:
    assert api("POST", queue_path(name, "/records"), {"priority": priority, "payload": payload}).status == 201


@pytest.fixture
def failing_disk(server: Server, api: Wsgi, monkeypatch: pytest.MonkeyPatch) -> Server:
    """A node holding one record whose next log append fails: the node loop ends, and the entries it had
    proposed (in a cluster: already sent to the followers, which a next leader may commit) are unknown."""
    add(api, "", 1, "precious")

    def broken(entries: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(server.storage, "append", broken)
    return server


def test_an_immediate_dequeue_whose_removal_ends_with_the_node_hands_the_record_over(
    failing_disk: Server, api: Wsgi
) -> None:
    answer = api("POST", queue_path("", "/dequeue"))
    assert answer.status == 200, answer.json  # not 503 without the record: the removal may still commit
    assert answer.json["payload"] == "precious" and answer.json["removal"] == "unconfirmed"


def test_an_original_dequeue_whose_removal_ends_with_the_node_hands_the_record_over(
    failing_disk: Server, api: Wsgi
) -> None:
    answer = api("POST", "/commands/v1/dequeue", {"queue": ""})
    assert answer.status == 200, answer.json
    assert answer.json["success"] and answer.json["payload"]["ok"]
    assert answer.json["payload"]["data"] == "cHJlY2lvdXM="  # base64 of "precious"


def test_a_write_ended_by_the_node_stopping_after_proposing_is_outcome_unknown(
    failing_disk: Server, api: Wsgi
) -> None:
    answer = api("POST", queue_path("", "/records"), {"priority": 2, "payload": "maybe"})
    assert answer.status == 504, answer.json  # not 503 "retry": a retry could insert it twice
    assert answer.json["error"]["reason"] == "outcome_unknown" and answer.json["error"]["outcome"] == "unknown"
    assert "may or may not take effect" in answer.json["error"]["message"]


def test_a_lease_ack_ended_by_the_node_stopping_after_proposing_is_outcome_unknown(
    server: Server, api: Wsgi, monkeypatch: pytest.MonkeyPatch
) -> None:
    add(api, "", 1, "leased")
    token = api("POST", queue_path("", "/dequeue"), query="lease=30s").json["lease"]

    def broken(entries: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(server.storage, "append", broken)
    answer = api("POST", f"/api/v1/leases/{token}/ack")
    assert answer.status == 504 and answer.json["error"]["outcome"] == "unknown"


def test_a_stop_before_anything_was_proposed_is_a_retryable_503(server: Server, api: Wsgi) -> None:
    add(api, "", 1, "kept")
    server.node.stop()
    answer = api("POST", queue_path("", "/dequeue"))
    assert answer.status == 503 and answer.headers.get("Retry-After") == "1"
    assert answer.json["error"]["reason"] == "stopping" and answer.json["error"]["outcome"] == "not_executed"
    original = api("POST", "/commands/v1/enqueue", {"queue": "", "payload": "x"})
    assert original.status == 503  # the node is stopping: nothing was done
    queue = server.node.manager.get("")
    assert queue is not None and queue.count == 1 and queue.reserved_count == 0  # the record stays


def test_an_immediate_dequeue_cut_short_by_the_server_stopping_still_hands_the_record_over(
    server: Server, api: Wsgi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The HTTP server's stop kills the request's greenlet while its removal waits for a stalled disk: the
    record is still written to the client, marked unconfirmed (the removal may commit later)."""
    add(api, "", 1, "in flight")
    stall_appends(server.storage, 3.0, monkeypatch)
    host, port = server.http.address.rsplit(":", 1)  # type: ignore[union-attr]
    conn = http.client.HTTPConnection(host, int(port), timeout=20)

    def dequeue() -> tuple[int, dict[str, object]]:
        conn.request("POST", "/api/v1/queues//dequeue")
        response = conn.getresponse()
        return response.status, json.loads(response.read())

    taking = gevent.spawn(dequeue)
    queue = server.node.manager.get("")
    assert queue is not None
    wait_until(lambda: queue.reserved_count == 1 and server.node.last_index > server.node.commit_index)
    server.http.stop(timeout=0.05)  # type: ignore[union-attr]  # kills the handler waiting for the commit
    status, body = taking.get(timeout=20)
    assert status == 200 and body["payload"] == "in flight" and body["removal"] == "unconfirmed"
