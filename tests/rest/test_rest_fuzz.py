"""Hostile and random input on the REST routes that take it (hypothesis): whatever comes, the answer is a clear
JSON error or a success — never a 500 — and the node goes on serving."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.rest.conftest import Answer, Wsgi, queue_path

pytestmark = pytest.mark.timeout(300)

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ANSWERED = {200, 201, 204, 400, 404, 409, 413, 415, 422}

scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=12)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=8), inner, max_size=3), max_leaves=8)
plausible = {
    "priority": st.integers(-(2**64), 2**64) | json_values,
    "payload": st.text(max_size=20) | json_values,
    "payload_base64": st.sampled_from(["aGk=", "not base64!", ""]) | json_values,
    "key": st.text(max_size=140) | json_values,
    "delay_ms": st.integers(-5, 10**13) | json_values,
    "not_before_ms": st.integers(-5, 2**64) | json_values,
    "surprise": json_values,
}
records = st.fixed_dictionaries({}, optional=plausible)
queue_bodies = st.fixed_dictionaries({}, optional={
    "implementation": st.sampled_from(["H4", "QA", "x"]) | json_values,
    "max_queue_size": st.integers(-2, 2**32) | json_values,
    "priority_range": st.tuples(st.integers(), st.integers()).map(list) | json_values,
    "max_deliveries": st.integers(-1, 2**32) | json_values,
    "dead_letter_queue": st.sampled_from(["", "dead", "nope", "a b"]) | json_values,
    "retry_delay_ms": st.integers(-1, 10**13) | json_values,
    "retry_backoff": st.sampled_from(["fixed", "exponential", "linear"]) | json_values,
    "retry_max_delay_ms": st.integers(-1, 10**13) | json_values,
    "dedup_window_ms": st.integers(-1, 10**13) | json_values,
    "dedup_max_keys": st.integers(-1, 10**9) | json_values,
})


def clear(answer: Answer) -> None:
    """A success, or a JSON error naming its reason."""
    assert answer.status in ANSWERED, (answer.status, answer.body[:300])
    if answer.status >= 400:
        assert json.loads(answer.body)["error"]["reason"]


def still_serving(api: Wsgi) -> None:
    assert api("GET", "/api/v1/queues").status == 200


@FUZZ
@given(body=records | json_values, key=st.none() | st.text(max_size=140))
def test_a_record(api: Wsgi, body: Any, key: str | None) -> None:
    headers = {} if key is None or not key.isascii() or any(c in key for c in "\r\n") else {"Idempotency-Key": key}
    clear(api("POST", queue_path("", "/records"), json.dumps(body).encode(), "application/json", headers=headers))
    still_serving(api)


@FUZZ
@given(body=st.fixed_dictionaries({"records": st.lists(records | json_values, max_size=4)}) | json_values)
def test_a_batch(api: Wsgi, body: Any) -> None:
    clear(api("POST", queue_path("", "/records/batch"), json.dumps(body).encode(), "application/json"))
    still_serving(api)


@FUZZ
@given(body=queue_bodies | json_values, name=st.sampled_from(["q", "dead", "", "a b"]))
def test_a_queue_definition(api: Wsgi, body: Any, name: str) -> None:
    api("PUT", queue_path("dead"))
    clear(api("PUT", queue_path(name), json.dumps(body).encode(), "application/json"))
    still_serving(api)


@FUZZ
@given(query=st.dictionaries(st.sampled_from(["wait", "lease", "max", "limit", "delay", "priority", "key"]),
                             st.text(max_size=12), max_size=3))
def test_query_parameters(api: Wsgi, query: dict[str, str]) -> None:
    from urllib.parse import urlencode

    encoded = urlencode(query)
    api("POST", queue_path("", "/records"), b"x", "text/plain", query="priority=1")
    for method, path in (("POST", queue_path("", "/dequeue")), ("GET", queue_path("", "/records")),
                         ("POST", queue_path("", "/redrive")), ("POST", "/api/v1/leases/nope/nack"),
                         ("POST", "/api/v1/leases/nope/extend"), ("POST", queue_path("", "/records"))):
        clear(api(method, path, b"y" if path.endswith("/records") and method == "POST" else None,
                  "text/plain" if method == "POST" and path.endswith("/records") else None, query=encoded))
    still_serving(api)
