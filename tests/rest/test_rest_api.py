"""Every REST route in process (WSGI calls into a whole node): results, status codes, leases, bad input."""

from __future__ import annotations

import base64
import re

import gevent
import pytest

from taskflux.server.main import Server
from taskflux.server.openapi import openapi_document
from taskflux.server.service import Delivery, QueueService
from tests.rest.conftest import Wsgi, queue_path, wait_until

pytestmark = pytest.mark.timeout(60)


DEFAULT_DELIVERY_JSON = {"max_deliveries": None, "dead_letter_queue": None, "retry_delay_ms": 0,
                         "retry_backoff": "fixed", "retry_max_delay_ms": 900_000, "dedup_window_ms": 300_000,
                         "dedup_max_keys": 100_000}


def create(api: Wsgi, name: str, **body: object) -> None:
    answer = api("PUT", queue_path(name), body or None)
    assert answer.status == 201, answer.body


def add(api: Wsgi, name: str, priority: int, payload: str) -> int:
    answer = api("POST", queue_path(name, "/records"), {"priority": priority, "payload": payload})
    assert answer.status == 201, answer.body
    return int(answer.json["id"])


def count(api: Wsgi, name: str) -> int:
    return int(api("GET", queue_path(name)).json["count"])


def error_of(answer: object) -> dict[str, object]:
    return answer.json["error"]  # type: ignore[attr-defined,no-any-return]


# --- queues -------------------------------------------------------------------------------------------


def test_create_get_list_delete(api: Wsgi) -> None:
    answer = api("PUT", queue_path("jobs"), {"implementation": "QA", "max_queue_size": 10, "priority_range": [0, 99]})
    assert answer.status == 201
    assert answer.headers["Location"] == "/api/v1/queues/jobs"
    assert answer.json == {"name": "jobs", "implementation": "QA", "count": 0, "delayed": 0, "reserved": 0,
                           "policies": {"max_queue_size": 10, "max_payload_size": None, "priority_range": [0, 99],
                                        **DEFAULT_DELIVERY_JSON}}
    assert api("GET", queue_path("jobs")).json["implementation"] == "QA"
    names = [queue["name"] for queue in api("GET", "/api/v1/queues").json["queues"]]
    assert names == ["", "jobs"]  # the default queue always exists
    assert api("DELETE", queue_path("jobs")).status == 204
    assert api("GET", queue_path("jobs")).status == 404
    assert api("DELETE", queue_path("jobs")).status == 404


def test_create_with_no_body_makes_a_heap_without_limits(api: Wsgi) -> None:
    create(api, "plain")
    assert api("GET", queue_path("plain")).json["policies"] == {
        "max_queue_size": None, "max_payload_size": None, "priority_range": None, **DEFAULT_DELIVERY_JSON}


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"implementation": "fibonacci"}, 400, "implementation"),
        ({"implementation": "QA"}, 400, "priority_range"),  # a queue array needs a range
        ({"max_queue_size": -1}, 400, "max_queue_size"),
        ({"max_payload_size": "big"}, 400, "max_payload_size"),
        ({"max_queue_size": True}, 400, "max_queue_size"),
        ({"priority_range": [5, 1]}, 400, "priority_range"),
        ({"priority_range": [1]}, 400, "priority_range"),
        ({"priority_range": [0, 2**63]}, 400, "priority_range"),
        ({"colour": "red"}, 400, "colour"),
    ],
)
def test_invalid_queue_definitions_name_the_field(api: Wsgi, body: dict[str, object], status: int,
                                                  field: str) -> None:
    answer = api("PUT", queue_path("q"), body)
    assert answer.status == status
    assert error_of(answer)["field"] == field
    assert api("GET", queue_path("q")).status == 404  # nothing was created


def test_an_existing_queue_is_a_conflict(api: Wsgi) -> None:
    create(api, "twice")
    answer = api("PUT", queue_path("twice"))
    assert answer.status == 409
    assert error_of(answer)["reason"] == "queue_exists"


def test_invalid_names_are_refused_everywhere(api: Wsgi) -> None:
    for method, suffix in (("PUT", ""), ("GET", ""), ("DELETE", ""), ("POST", "/dequeue")):
        answer = api(method, queue_path("no spaces", suffix))
        assert answer.status == 400, (method, suffix)
        assert error_of(answer)["field"] == "name"
    assert api("PUT", queue_path("x" * 256)).status == 400
    assert api("PUT", queue_path("caf\u00e9")).status == 400
    not_utf8 = api("PUT", b"/api/v1/queues/caf\xe9")
    assert not_utf8.status == 400 and error_of(not_utf8)["reason"] == "invalid_path"
    assert api("GET", queue_path("caf")).status == 404


def test_the_default_queue_is_the_empty_segment_and_cannot_be_deleted(api: Wsgi) -> None:
    add(api, "", 1, "in the default queue")
    assert count(api, "") == 1
    answer = api("DELETE", queue_path(""))
    assert answer.status == 400
    assert error_of(answer)["reason"] == "default_queue"


def test_a_name_with_slashes_is_one_queue(api: Wsgi) -> None:
    create(api, "team/jobs")
    add(api, "team/jobs", 3, "x")
    assert count(api, "team/jobs") == 1
    assert api("POST", queue_path("team/jobs", "/dequeue")).json["payload"] == "x"


# --- records ------------------------------------------------------------------------------------------


def test_records_as_json_text_base64_plain_text_and_bytes(api: Wsgi) -> None:
    create(api, "r")
    assert add(api, "r", 5, "text") == 1
    answer = api("POST", queue_path("r", "/records"),
                 {"priority": 4, "payload_base64": base64.b64encode(b"\xff\x00").decode()})
    assert answer.status == 201 and answer.json == {"queue": "r", "id": 2, "priority": 4, "duplicate": False}
    assert api("POST", queue_path("r", "/records"), "plain", "text/plain; charset=utf-8", "priority=3").status == 201
    assert api("POST", queue_path("r", "/records"), b"\xc3\x28", "application/octet-stream",
               "priority=-9223372036854775808").status == 201
    taken = [api("POST", queue_path("r", "/dequeue")).json for _ in range(4)]
    assert [(t["priority"], t["payload"], t["payload_base64"]) for t in taken] == [
        (-(2**63), None, "wyg="), (3, "plain", "cGxhaW4="), (4, None, "/wA="), (5, "text", "dGV4dA==")]


@pytest.mark.parametrize(
    ("body", "content_type", "query", "status", "field"),
    [
        ({"payload": "x"}, None, "", 400, "priority"),
        ({"priority": "1", "payload": "x"}, None, "", 400, "priority"),
        ({"priority": 2**63, "payload": "x"}, None, "", 400, "priority"),
        ({"priority": 1}, None, "", 400, "payload"),
        ({"priority": 1, "payload": "x", "payload_base64": "eA=="}, None, "", 400, "payload"),
        ({"priority": 1, "payload_base64": "not base64!"}, None, "", 400, "payload_base64"),
        ({"priority": 1, "payload": 7}, None, "", 400, "payload"),
        ({"priority": 1, "payload": "x", "extra": 1}, None, "", 400, "extra"),
        (b"x", "text/plain", "", 400, "priority"),
        (b"x", "text/plain", "priority=high", 400, "priority"),
    ],
)
def test_invalid_records_name_the_field(api: Wsgi, body: object, content_type: str | None, query: str,
                                        status: int, field: str) -> None:
    answer = api("POST", queue_path("", "/records"), body, content_type, query)  # type: ignore[arg-type]
    assert answer.status == status
    assert error_of(answer)["field"] == field
    assert count(api, "") == 0


def test_malformed_bodies(api: Wsgi) -> None:
    path = queue_path("", "/records")
    assert error_of(api("POST", path, b"{not json", "application/json"))["reason"] == "invalid_json"
    assert error_of(api("POST", path, b"[1, 2]", "application/json"))["reason"] == "invalid_json"
    assert api("POST", path, b"\xff\xfe", "application/json").status == 400
    assert api("POST", path, b"<xml/>", "application/xml").status == 415
    assert api("PUT", queue_path("q"), b"<xml/>", "application/xml").status == 415


def test_payload_and_body_limits(api: Wsgi) -> None:
    limit = 64 * 1024
    path = queue_path("", "/records")
    assert api("POST", path, b"x" * limit, "application/octet-stream", "priority=1").status == 201
    answer = api("POST", path, b"x" * (limit + 1), "application/octet-stream", "priority=1")
    assert answer.status == 413
    answer = api("POST", path, {"priority": 1, "payload": "y" * (limit + 1)})
    assert answer.status == 413
    answer = api("PUT", queue_path("q"), b" " * (1024 * 1024), "application/json")
    assert answer.status == 413
    assert count(api, "") == 1


def test_policy_violations_are_422(api: Wsgi) -> None:
    create(api, "small", max_queue_size=1, max_payload_size=3, priority_range=[0, 10])
    add(api, "small", 1, "ok")
    answer = api("POST", queue_path("small", "/records"), {"priority": 1, "payload": "x"})
    assert answer.status == 422
    assert error_of(answer)["policy"] == "max_queue_size" and error_of(answer)["limits"] == [1]
    api("POST", queue_path("small", "/dequeue"))
    assert error_of(api("POST", queue_path("small", "/records"), {"priority": 11, "payload": "x"}))["policy"] == (
        "priority_range")
    assert error_of(api("POST", queue_path("small", "/records"), {"priority": 1, "payload": "long"}))["policy"] == (
        "max_payload_size")


def test_a_missing_queue_is_404_for_records_and_dequeues(api: Wsgi) -> None:
    assert api("POST", queue_path("ghost", "/records"), {"priority": 1, "payload": "x"}).status == 404
    assert api("POST", queue_path("ghost", "/dequeue")).status == 404
    assert api("POST", queue_path("ghost", "/dequeue"), query="lease=10s").status == 404


# --- dequeue: immediate, waiting, leased -----------------------------------------------------------------


def test_immediate_dequeue_removes_in_priority_order_then_204(api: Wsgi) -> None:
    for priority, payload in ((3, "c"), (1, "a"), (2, "b"), (1, "a2")):
        add(api, "", priority, payload)
    assert [api("POST", queue_path("", "/dequeue")).json["payload"] for _ in range(4)] == ["a", "a2", "b", "c"]
    assert api("POST", queue_path("", "/dequeue")).status == 204
    assert count(api, "") == 0


def test_a_waiting_dequeue_is_woken_by_an_enqueue(api: Wsgi) -> None:
    waiter = gevent.spawn(api, "POST", queue_path("", "/dequeue"), None, None, "wait=5s")
    gevent.sleep(0.1)
    assert not waiter.ready()
    add(api, "", 1, "late")
    answer = waiter.get(timeout=5)
    assert answer.status == 200 and answer.json["payload"] == "late"


def test_a_wait_that_ends_empty_is_204(api: Wsgi) -> None:
    assert api("POST", queue_path("", "/dequeue"), query="wait=50ms").status == 204


@pytest.mark.parametrize("query", ["wait=soon", "wait=301s", "lease=0s", "lease=13h", "lease=-1s"])
def test_invalid_wait_and_lease(api: Wsgi, query: str) -> None:
    answer = api("POST", queue_path("", "/dequeue"), query=query)
    assert answer.status == 400
    assert error_of(answer)["field"] == query.split("=")[0]


def test_a_lease_hides_the_record_until_acked(api: Wsgi) -> None:
    record_id = add(api, "", 1, "work")
    leased = api("POST", queue_path("", "/dequeue"), query="lease=30s").json
    assert leased["id"] == record_id and leased["lease_seconds"] == 30
    assert count(api, "") == 0
    assert api("POST", queue_path("", "/dequeue")).status == 204  # reserved: nobody else gets it
    assert api("POST", f"/api/v1/leases/{leased['lease']}/ack").status == 204
    assert api("POST", f"/api/v1/leases/{leased['lease']}/ack").status == 404  # once only
    assert api("POST", f"/api/v1/leases/{leased['lease']}/nack").status == 404
    assert count(api, "") == 0


def test_a_nack_puts_the_record_back(api: Wsgi) -> None:
    record_id = add(api, "", 1, "retry me")
    token = api("POST", queue_path("", "/dequeue"), query="lease=30s").json["lease"]
    nacked = api("POST", f"/api/v1/leases/{token}/nack")
    assert nacked.status == 200 and nacked.json == {"lease": token, "outcome": "ready"}
    assert count(api, "") == 1
    again = api("POST", queue_path("", "/dequeue")).json
    assert (again["id"], again["payload"]) == (record_id, "retry me")


def test_an_expired_lease_puts_the_record_back(api: Wsgi) -> None:
    record_id = add(api, "", 1, "slow consumer")
    token = api("POST", queue_path("", "/dequeue"), query="lease=100ms").json["lease"]
    wait_until(lambda: count(api, "") == 1)
    assert api("POST", f"/api/v1/leases/{token}/ack").status == 404
    assert api("POST", queue_path("", "/dequeue")).json["id"] == record_id


def test_a_lease_on_a_deleted_queue_acks_as_gone(api: Wsgi) -> None:
    create(api, "brief")
    add(api, "brief", 1, "x")
    token = api("POST", queue_path("brief", "/dequeue"), query="lease=30s").json["lease"]
    assert api("DELETE", queue_path("brief")).status == 204
    assert api("POST", f"/api/v1/leases/{token}/ack").status == 204


def test_unknown_lease_tokens(api: Wsgi) -> None:
    answer = api("POST", "/api/v1/leases/nope/ack")
    assert answer.status == 404 and error_of(answer)["reason"] == "lease_not_found"


def test_stopping_puts_leased_records_back(server: Server, api: Wsgi) -> None:
    add(api, "", 1, "x")
    api("POST", queue_path("", "/dequeue"), query="lease=30s")
    assert len(server.leases) == 1
    server.leases.stop()
    assert len(server.leases) == 0
    assert server.node.manager.get("").count == 1  # type: ignore[union-attr]


# --- cluster, health, documents, framework errors --------------------------------------------------------


def test_cluster_and_health(api: Wsgi, server: Server) -> None:
    cluster = api("GET", "/api/v1/cluster").json
    assert cluster["node_id"] == 0 and cluster["role"] == "leader" and cluster["leader_id"] == 0
    assert cluster["commit_index"] == cluster["applied_index"] >= 1
    assert cluster["nodes"] == [{"id": 0, "role": "leader", "voter": True, "address": server.config.cluster_endpoint,
                                 "client_endpoint": server.config.client_endpoint,
                                 "http_address": server.http.address}]  # type: ignore[union-attr]
    assert api("GET", "/health/live").json == {"status": "live"}
    ready = api("GET", "/health/ready")
    assert ready.status == 200 and ready.json["status"] == "ready"


def test_unknown_routes_and_methods_answer_json(api: Wsgi) -> None:
    missing = api("GET", "/nowhere")
    assert missing.status == 404 and error_of(missing)["reason"] == "no_such_route"
    wrong = api("PATCH", "/api/v1/queues")
    assert wrong.status == 405 and error_of(wrong)["reason"] == "method_not_allowed"


def test_the_openapi_document_lists_exactly_the_routes(api: Wsgi, server: Server) -> None:
    document = api("GET", "/api/v1/openapi.json").json
    assert document == openapi_document()
    documented = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    routed = {(route.method, re.sub(r"<(\w+)(:\w+)?>", r"{\1}", route.rule)) for route in server.rest.app.routes}
    assert documented == routed


# --- the original's routes (spec §5) ---------------------------------------------------------------------


def test_original_enqueue_dequeue_count(api: Wsgi) -> None:
    create(api, "jobs")
    answer = api("POST", "/commands/v1/enqueue", {"queue": "jobs", "key": 5, "payload": "hello"})
    assert answer.status == 200
    assert answer.json == {"success": True, "error": None, "leaderId": None,
                           "payload": {"type": "enqueue", "ok": True}}
    # names are case-insensitive and numbers may be strings (the original's framework rules)
    assert api("POST", "/commands/v1/enqueue", {"QUEUE": "jobs", "Key": "3", "Payload": "first"}).json["success"]
    assert api("POST", "/commands/v1/count", {"queue": "jobs"}).json["payload"] == {"count": 2}
    taken = api("POST", "/commands/v1/dequeue", {"queue": "jobs"}).json["payload"]
    assert taken == {"type": "dequeue", "ok": True, "queue": "jobs", "id": 2, "priority": 3,
                     "data": base64.b64encode(b"first").decode()}
    api("POST", "/commands/v1/dequeue", {"queue": "jobs"})
    assert api("POST", "/commands/v1/dequeue", {"queue": "jobs"}).json["payload"] == {"type": "dequeue", "ok": False}


def test_original_defaults_to_the_default_queue(api: Wsgi) -> None:
    api("POST", "/commands/v1/enqueue", {"queue": "", "payload": "d"})
    assert api("POST", "/commands/v1/count", {}).json["payload"] == {"count": 1}
    assert api("POST", "/commands/v1/dequeue", {}).json["payload"]["priority"] == 0  # key defaults to 0


def test_original_business_errors_and_policy_violations(api: Wsgi) -> None:
    missing = {"type": "error", "subtype": 2, "message": ""}
    assert api("POST", "/commands/v1/enqueue", {"queue": "ghost", "payload": "x"}).json["payload"] == missing
    assert api("POST", "/commands/v1/dequeue", {"queue": "ghost"}).json["payload"] == missing
    assert api("POST", "/commands/v1/count", {"queue": "ghost"}).json["payload"] == missing
    create(api, "tiny", max_queue_size=0)
    refused = api("POST", "/commands/v1/enqueue", {"queue": "tiny", "payload": "x"})
    assert refused.status == 200
    assert refused.json["payload"] == {"type": "policy-violation", "ok": False, "policy": 1, "limits": [0]}


def test_original_validation_answers(api: Wsgi) -> None:
    invalid = api("POST", "/commands/v1/enqueue", {"queue": "bad name", "payload": "x"})
    assert invalid.status == 400
    assert invalid.json == {"success": False, "error": "Передано невалидное название очереди", "leaderId": None,
                            "payload": None}
    assert api("POST", "/commands/v1/count", {"queue": "bad name"}).json["success"] is False
    problem = api("POST", "/commands/v1/enqueue", {"payload": "x"})
    assert problem.status == 400 and "queue" in problem.json["errors"]
    assert "payload" in api("POST", "/commands/v1/enqueue", {"queue": "q"}).json["errors"]
    assert "key" in api("POST", "/commands/v1/enqueue", {"queue": "q", "key": "x", "payload": ""}).json["errors"]
    assert api("POST", "/commands/v1/enqueue", b"queue=q", "application/x-www-form-urlencoded").status == 415
    assert api("POST", "/commands/v1/count", b"{", "application/json").status == 400
    assert api("POST", "/commands/v1/count", b"[]", "application/json").status == 400


# --- answers to the review of failure paths -------------------------------------------------------------


def test_deeply_nested_json_is_a_400(api: Wsgi) -> None:
    nested = b"[" * 60000
    assert api("PUT", queue_path("q"), nested, "application/json").status == 400
    assert api("POST", queue_path("", "/records"), nested, "application/json").status == 400
    assert api("POST", "/commands/v1/count", nested, "application/json").status == 400


def test_an_unconfirmed_immediate_removal_still_hands_the_record_over(
    server: Server, api: Wsgi, monkeypatch: pytest.MonkeyPatch
) -> None:
    add(api, "", 1, "precious")
    add(api, "", 2, "also precious")

    def timed_out(_service: QueueService, deliveries: list[Delivery], _reply: object) -> None:
        from taskflux.server.node import CommitTimeout

        for delivery in deliveries:
            delivery.claim()
            delivery._release()  # what a removal that failed does
        raise CommitTimeout("not committed in time")

    monkeypatch.setattr(QueueService, "start_ack_all", timed_out)
    answer = api("POST", queue_path("", "/dequeue"))
    assert answer.status == 200
    assert answer.json["payload"] == "precious" and answer.json["removal"] == "unconfirmed"
    original = api("POST", "/commands/v1/dequeue", {"queue": ""}).json
    assert original["success"] and original["payload"]["ok"]  # the record, not an "unknown error"
    monkeypatch.undo()
    assert api("POST", queue_path("", "/dequeue")).json["removal"] == "committed"


def test_an_ack_on_a_node_that_lost_leadership_ends_the_lease(
    server: Server, api: Wsgi, monkeypatch: pytest.MonkeyPatch
) -> None:
    add(api, "", 1, "x")
    token = api("POST", queue_path("", "/dequeue"), query="lease=30s").json["lease"]

    def deposed(_service: QueueService, deliveries: list[Delivery], _reply: object) -> None:
        from taskflux.server.node import NotLeader

        for delivery in deliveries:
            delivery.claim()
            delivery._release()
        raise NotLeader(2)

    monkeypatch.setattr(QueueService, "start_ack_all", deposed)
    answer = api("POST", f"/api/v1/leases/{token}/ack")
    assert answer.status == 409 and error_of(answer)["reason"] == "lease_lost"
    assert count(api, "") == 1  # the record is back


def test_original_routes_count_records_and_outcomes(server: Server, api: Wsgi) -> None:
    create(api, "tiny", max_queue_size=1)
    api("POST", "/commands/v1/enqueue", {"queue": "tiny", "payload": "a"})
    api("POST", "/commands/v1/enqueue", {"queue": "tiny", "payload": "b"})  # refused by the policy
    api("POST", "/commands/v1/dequeue", {"queue": "tiny"})
    api("POST", "/commands/v1/dequeue", {"queue": "tiny"})  # empty
    page = api("GET", "/metrics").body.decode()

    def value(line_start: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in page.splitlines() if line.startswith(line_start))

    assert value('taskflux_records_enqueued_total{interface="rest"}') == 1
    assert value('taskflux_records_acked_total{interface="rest"}') == 1
    requests = 'taskflux_requests_total{command="original_enqueue",interface="rest",outcome='
    assert value(requests + '"ok"}') == 1 and value(requests + '"policy_violation"}') == 1
    assert value('taskflux_requests_total{command="original_dequeue",interface="rest",outcome="empty"}') == 1
