"""The REST API's work-queue features on a real node: idempotency keys, delays, failed deliveries and dead
letters, lease extension and release, batches and peek."""

from __future__ import annotations

import time

import pytest

from taskflux.server.main import Server
from tests.rest.conftest import Answer, Wsgi, queue_path, wait_until
from tests.rest.test_rest_api import create, error_of

pytestmark = pytest.mark.timeout(60)


def queue_info(api: Wsgi, name: str) -> dict[str, int]:
    return api("GET", queue_path(name)).json  # type: ignore[no-any-return]


def lease_one(api: Wsgi, name: str, lease: str = "30s", wait: str = "0") -> Answer:
    return api("POST", queue_path(name, "/dequeue"), query=f"lease={lease}&wait={wait}")


def test_a_known_key_answers_the_first_id_and_adds_nothing(api: Wsgi) -> None:
    first = api("POST", queue_path("", "/records"), {"priority": 1, "payload": "a", "key": "order-17"})
    assert first.status == 201 and first.json["duplicate"] is False
    again = api("POST", queue_path("", "/records"), {"priority": 1, "payload": "a"},
                headers={"Idempotency-Key": "order-17"})
    assert again.status == 200 and again.json == {"queue": "", "id": first.json["id"], "priority": 1, "duplicate": True}
    raw = api("POST", queue_path("", "/records"), b"a", "application/octet-stream", query="priority=1&key=order-17")
    assert raw.status == 200 and raw.json["id"] == first.json["id"]
    assert queue_info(api, "")["count"] == 1


@pytest.mark.parametrize(("body", "headers", "field"), [
    ({"priority": 1, "payload": "x", "key": ""}, {}, "key"),
    ({"priority": 1, "payload": "x", "key": "k" * 129}, {}, "key"),
    ({"priority": 1, "payload": "x", "key": 5}, {}, "key"),
    ({"priority": 1, "payload": "x", "key": "a"}, {"Idempotency-Key": "b"}, "key"),
    ({"priority": 1, "payload": "x", "delay_ms": -1}, {}, "delay_ms"),
    ({"priority": 1, "payload": "x", "delay_ms": 10**12}, {}, "delay_ms"),
])
def test_bad_keys_and_delays_name_the_field(api: Wsgi, body: dict[str, object], headers: dict[str, str],
                                            field: str) -> None:
    answer = api("POST", queue_path("", "/records"), body, headers=headers)
    assert answer.status == 400 and error_of(answer)["field"] == field


def test_a_not_before_far_in_the_future_is_refused(api: Wsgi) -> None:
    far = int(time.time() * 1000) + 40 * 86_400_000
    answer = api("POST", queue_path("", "/records"), {"priority": 1, "payload": "x", "not_before_ms": far})
    assert answer.status == 400 and error_of(answer)["reason"] == "invalid_record"


def test_a_delayed_record_waits_and_a_long_poll_wakes_when_it_is_due(api: Wsgi) -> None:
    api("POST", queue_path("", "/records"), {"priority": 5, "payload": "later", "delay_ms": 400})
    api("POST", queue_path("", "/records"), {"priority": 9, "payload": "now"})
    info = queue_info(api, "")
    assert (info["count"], info["delayed"]) == (1, 1)
    assert api("POST", queue_path("", "/dequeue")).json["payload"] == "now"
    started = time.monotonic()
    taken = api("POST", queue_path("", "/dequeue"), query="wait=10s")
    assert taken.status == 200 and taken.json["payload"] == "later"
    assert 0.2 < time.monotonic() - started < 5


def test_a_nack_counts_a_failed_delivery_and_its_delay_holds_the_record_back(api: Wsgi) -> None:
    create(api, "jobs", retry_delay_ms=60_000)
    api("POST", queue_path("jobs", "/records"), {"priority": 1, "payload": "job"})
    token = lease_one(api, "jobs").json["lease"]
    assert api("POST", f"/api/v1/leases/{token}/nack").json["outcome"] == "delayed"  # the queue's retry delay
    info = queue_info(api, "jobs")
    assert (info["count"], info["delayed"], info["reserved"]) == (0, 1, 0)


def test_an_explicit_nack_delay_wins_and_the_count_shows(api: Wsgi) -> None:
    create(api, "jobs", retry_delay_ms=60_000)
    api("POST", queue_path("jobs", "/records"), {"priority": 1, "payload": "job"})
    token = lease_one(api, "jobs").json["lease"]
    assert api("POST", f"/api/v1/leases/{token}/nack", query="delay=0s").json["outcome"] == "ready"
    again = lease_one(api, "jobs").json
    assert again["failed_deliveries"] == 1 and again["payload"] == "job"


def test_a_poison_record_ends_in_the_dead_letter_queue(api: Wsgi) -> None:
    create(api, "dead")
    create(api, "jobs", max_deliveries=3, dead_letter_queue="dead")
    record_id = api("POST", queue_path("jobs", "/records"), {"priority": -2, "payload": "poison"}).json["id"]
    outcomes = []
    for _ in range(3):
        token = lease_one(api, "jobs").json["lease"]
        outcomes.append(api("POST", f"/api/v1/leases/{token}/nack").json["outcome"])
    assert outcomes == ["ready", "ready", "dead_lettered"]
    assert queue_info(api, "jobs")["count"] == 0
    [dead] = api("GET", queue_path("dead", "/records")).json["records"]
    assert (dead["payload"], dead["priority"], dead["failed_deliveries"]) == ("poison", -2, 3)
    assert dead["origin"] == {"queue": "jobs", "id": record_id}


def test_invalid_delivery_policies_are_400(api: Wsgi) -> None:
    for body in ({"max_deliveries": 3}, {"max_deliveries": 3, "dead_letter_queue": "missing"},
                 {"retry_backoff": "linear"}, {"dedup_window_ms": -1}, {"retry_delay_ms": "5s"}):
        answer = api("PUT", queue_path("q"), body)
        assert answer.status == 400, (body, answer.body)


def test_an_expired_lease_is_a_failed_delivery(api: Wsgi) -> None:
    api("POST", queue_path("", "/records"), {"priority": 1, "payload": "slow"})
    token = lease_one(api, "", lease="0.1s").json["lease"]
    wait_until(lambda: queue_info(api, "")["count"] == 1)
    assert api("POST", f"/api/v1/leases/{token}/ack").status == 404
    assert lease_one(api, "").json["failed_deliveries"] == 1


def test_an_extended_lease_outlives_its_first_deadline_and_a_release_is_not_counted(api: Wsgi) -> None:
    api("POST", queue_path("", "/records"), {"priority": 1, "payload": "long job"})
    token = lease_one(api, "", lease="0.3s").json["lease"]
    extended = api("POST", f"/api/v1/leases/{token}/extend", query="lease=30s")
    assert extended.status == 200 and extended.json["seconds_left"] > 20
    time.sleep(0.6)  # past the first deadline (and two sweeps of the lease table)
    assert queue_info(api, "")["reserved"] == 1
    assert api("POST", f"/api/v1/leases/{token}/release").status == 204
    again = lease_one(api, "").json
    assert again["failed_deliveries"] == 0 and again["payload"] == "long job"
    assert api("POST", f"/api/v1/leases/{token}/extend", query="lease=30s").status == 404
    assert api("POST", f"/api/v1/leases/{again['lease']}/extend").status == 400  # no new duration


def test_a_batch_is_added_at_once_or_not_at_all(api: Wsgi) -> None:
    create(api, "small", max_queue_size=3)
    records = [{"priority": p, "payload": str(p)} for p in (3, 1, 2)]
    added = api("POST", queue_path("small", "/records/batch"), {"records": records})
    assert added.status == 201 and [r["id"] for r in added.json["records"]] == [1, 2, 3]
    refused = api("POST", queue_path("small", "/records/batch"), {"records": records[:1]})
    assert refused.status == 422
    assert queue_info(api, "small")["count"] == 3
    peeked = api("GET", queue_path("small", "/records"), query="limit=2").json["records"]
    assert [r["payload"] for r in peeked] == ["1", "2"]
    assert queue_info(api, "small")["count"] == 3  # peek takes nothing


def test_a_batch_with_keys_reports_duplicates(api: Wsgi) -> None:
    records = [{"priority": 1, "payload": "a", "key": "k1"}, {"priority": 1, "payload": "b", "key": "k1"},
               {"priority": 1, "payload": "c"}]
    answer = api("POST", queue_path("", "/records/batch"), {"records": records}).json["records"]
    assert [(r["id"], r["duplicate"]) for r in answer] == [(1, False), (1, True), (2, False)]


@pytest.mark.parametrize(("body", "field"), [
    ({}, "records"), ({"records": []}, "records"), ({"records": [{"priority": 1}]}, "records[0].payload"),
    ({"records": [{"priority": 1, "payload": "x", "bad": 1}]}, "records[0].bad"),
    ({"records": [5]}, "records[0]"), ({"records": [{"priority": 1, "payload": "x"}] * 1001}, "records"),
])
def test_bad_batches_name_the_field(api: Wsgi, body: dict[str, object], field: str) -> None:
    answer = api("POST", queue_path("", "/records/batch"), body)
    assert answer.status == 400 and error_of(answer)["field"] == field


def test_a_batch_dequeue_takes_up_to_max_records(api: Wsgi, server: Server) -> None:
    api("POST", queue_path("", "/records/batch"),
        {"records": [{"priority": p, "payload": str(p)} for p in range(5)]})
    taken = api("POST", queue_path("", "/dequeue"), query="max=3").json
    assert [r["payload"] for r in taken["records"]] == ["0", "1", "2"]
    assert {r["removal"] for r in taken["records"]} == {"committed"}
    leased = api("POST", queue_path("", "/dequeue"), query="max=10&lease=30s").json["records"]
    assert [r["payload"] for r in leased] == ["3", "4"] and len({r["lease"] for r in leased}) == 2
    assert api("POST", queue_path("", "/dequeue"), query="max=10").status == 204
    for record in leased:
        assert api("POST", f"/api/v1/leases/{record['lease']}/ack").status == 204
    assert queue_info(api, "") | {"policies": None, "rates": None} == {
        "name": "", "implementation": "H4", "count": 0, "delayed": 0, "reserved": 0, "policies": None, "rates": None}
    rest = server.metrics.interface("rest")
    assert (rest.enqueued_count, rest.dequeued_count, rest.acked_count) == (5, 5, 5)


def test_peek_limits(api: Wsgi) -> None:
    assert api("GET", queue_path("", "/records"), query="limit=0").status == 400
    assert api("GET", queue_path("", "/records"), query="limit=1001").status == 400
    assert api("GET", queue_path("missing", "/records")).status == 404


def test_dead_letters_are_moved_back_to_their_queue(api: Wsgi) -> None:
    create(api, "dead")
    create(api, "jobs", max_deliveries=1, dead_letter_queue="dead")
    api("POST", queue_path("jobs", "/records/batch"), {"records": [{"priority": p, "payload": str(p)} for p in (2, 1)]})
    for _ in range(2):
        token = lease_one(api, "jobs").json["lease"]
        assert api("POST", f"/api/v1/leases/{token}/nack").json["outcome"] == "dead_lettered"
    assert queue_info(api, "dead")["count"] == 2
    moved = api("POST", queue_path("dead", "/redrive"), query="max=1")
    assert moved.status == 200 and moved.json == {"queue": "dead", "moved": 1}
    [back] = api("GET", queue_path("jobs", "/records")).json["records"]
    assert (back["payload"], back["failed_deliveries"]) == ("1", 0) and "origin" not in back
    assert api("POST", queue_path("jobs", "/redrive")).json["moved"] == 0  # no dead letter there
    assert api("POST", queue_path("missing", "/redrive")).status == 404
    assert api("POST", queue_path("dead", "/redrive"), query="max=0").status == 400


def test_the_console_is_served_from_the_node(api: Wsgi) -> None:
    assert api("GET", "/ui").status == 301
    page = api("GET", "/ui/")
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    assert b'src="/ui/console.js"' in page.body and b"http" not in page.body.replace(b'name="viewport"', b"")
    assert api("GET", "/ui/console.js").headers["Content-Type"].startswith("text/javascript")
    assert api("GET", "/ui/console.css").status == 200
    assert api("GET", "/ui/../config.yaml").status == 404
    cluster = api("GET", "/api/v1/cluster")
    assert cluster.headers["Access-Control-Allow-Origin"] == "*" and cluster.json["leader_changes"] >= 1


def test_queues_report_their_recent_rates(api: Wsgi, server: Server) -> None:
    api("POST", queue_path("", "/records"), {"priority": 1, "payload": "x"})
    server.rates.sample()
    api("POST", queue_path("", "/records"), {"priority": 1, "payload": "y"})
    api("POST", queue_path("", "/dequeue"))
    server.rates.sample()
    rates = queue_info(api, "")["rates"]
    assert rates["interval_seconds"] == 10 and rates["enqueued"][-1] == 1 and rates["dequeued"][-1] == 1
