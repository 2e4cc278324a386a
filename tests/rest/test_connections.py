"""The connection table shared by the HTTP and gRPC ports: who is evicted at the limit, who is refused, who is
closed at a deadline, and how often that is logged."""

from __future__ import annotations

import logging

import pytest

from taskflux.server.connections import Connection, ConnectionTable, ThrottledLog

logger = logging.getLogger("tests.connections")


class Closable:
    def __init__(self) -> None:
        self.closed = False

    def __call__(self) -> None:
        self.closed = True


def place(table: ConnectionTable, name: str) -> tuple[Connection, Closable]:
    closed = Closable()
    connection = table.admit(name, closed)
    assert connection is not None
    return connection, closed


def test_at_the_limit_a_connection_that_never_sent_a_request_is_evicted_first() -> None:
    table = ConnectionTable(3, "test", logger)
    used, used_closed = place(table, "used")
    used.requests = 1
    used.wait_for_client(60, "next request")  # waited longest, but it did send a request
    fresh, fresh_closed = place(table, "fresh")
    fresh.wait_for_client(60, "first request")
    busy, busy_closed = place(table, "busy")
    busy.serving()
    newcomer = table.admit("newcomer", Closable())
    assert newcomer is not None and fresh_closed.closed and not used_closed.closed and not busy_closed.closed
    assert len(table) == 3 and table.evicted == 1


def test_a_newcomer_is_refused_only_when_every_place_is_being_served() -> None:
    table = ConnectionTable(2, "test", logger)
    for name in ("a", "b"):
        place(table, name)[0].serving()
    assert table.admit("c", Closable()) is None
    assert table.refused == 1 and len(table) == 2


def test_the_sweep_closes_only_places_past_their_deadline() -> None:
    table = ConnectionTable(10, "test", logger)
    late, late_closed = place(table, "late")
    late.wait_for_client(1.0, "first request")
    patient, patient_closed = place(table, "patient")
    patient.wait_for_client(60.0, "next request")
    served, served_closed = place(table, "served")
    served.serving()
    table.sweep(now=lambda: late.deadline + 0.1)
    assert late_closed.closed and not patient_closed.closed and not served_closed.closed
    assert len(table) == 2 and table.expired == 1


def test_a_flood_of_events_is_logged_once_per_interval_with_its_count(caplog: pytest.LogCaptureFixture) -> None:
    log = ThrottledLog(logger, logging.WARNING, interval=3600)
    with caplog.at_level(logging.WARNING, logger.name):
        for i in range(100):
            log("closed %d", i)
    assert [record.getMessage() for record in caplog.records] == ["closed 0"]
    log._next = 0.0  # the interval is over
    with caplog.at_level(logging.WARNING, logger.name):
        log("closed %d", 100)
    assert caplog.records[-1].getMessage() == "closed 100 (and 99 more like it in the last 3600 s)"
