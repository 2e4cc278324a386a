"""The connection table shared by the HTTP, gRPC, binary client and cluster ports: who is evicted at the limit
(under each port's policy), who is refused, who is closed at a deadline, and how often that is logged."""

from __future__ import annotations

import logging

import pytest

from taskflux.server.connections import Connection, ConnectionTable, ThrottledLog
from taskflux.server.tcp import IN_HANDSHAKE_ONLY

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
    clock = [1000.0]
    log = ThrottledLog(logger, logging.WARNING, interval=3600, clock=lambda: clock[0])
    with caplog.at_level(logging.WARNING, logger.name):
        for i in range(100):
            log("closed %d", i)
    assert [record.getMessage() for record in caplog.records] == ["closed 0"]
    clock[0] += 3600  # the interval is over
    with caplog.at_level(logging.WARNING, logger.name):
        log("closed %d", 100)
    assert caplog.records[-1].getMessage() == "closed 100 (and 99 more like it in the last 3600 s)"


def test_lines_with_a_key_are_throttled_per_key(caplog: pytest.LogCaptureFixture) -> None:
    log = ThrottledLog(logger, logging.WARNING, interval=3600)
    with caplog.at_level(logging.WARNING, logger.name):
        for reason in ("twin", "other cluster", "twin", "other cluster", "own id"):
            log("refused: %s", reason, key=reason)
    assert [record.getMessage() for record in caplog.records] == [
        "refused: twin", "refused: other cluster", "refused: own id"]


def test_under_the_handshake_policy_only_the_oldest_unused_place_is_evicted_whatever_it_does(
    caplog: pytest.LogCaptureFixture,
) -> None:
    table = ConnectionTable(3, "test", logger, policy=IN_HANDSHAKE_ONLY, limit_name="max_connections")
    idle_client, idle_closed = place(table, "idle client")
    idle_client.requests = 1  # completed its handshake long ago, idle since: kept
    idle_client.wait_for_client(60, "activity")
    writing, writing_closed = place(table, "writing its handshake answer")
    writing.serving()  # between two reads of its handshake: still evictable
    younger, younger_closed = place(table, "younger")
    with caplog.at_level(logging.WARNING, logger.name):
        assert table.admit("newcomer", Closable()) is not None
    assert writing_closed.closed and writing.closed and not younger_closed.closed and not idle_closed.closed
    assert "closed writing its handshake answer, which had not completed its handshake (no wait yet;" in caplog.text
    younger.requests = 1
    newcomer = table.admit("second newcomer", Closable())  # the first newcomer, still in its handshake, made room
    assert newcomer is not None and table.evicted == 2 and not younger_closed.closed
    newcomer.requests = 1
    with caplog.at_level(logging.WARNING, logger.name):
        assert table.admit("third newcomer", Closable()) is None
    assert "3 connections (max_connections), all have completed their handshake: refused a new one" in caplog.text


def test_a_deadline_for_a_whole_phase_is_not_extended_by_each_wait() -> None:
    table = ConnectionTable(10, "test", logger)
    handshaking, closed = place(table, "handshaking")
    for _ in range(3):  # a trickle: a read, an answer, a read...
        handshaking.wait_for_client(5.0, "handshake", since=handshaking.admitted_at)
        handshaking.serving()
    handshaking.wait_for_client(5.0, "handshake", since=handshaking.admitted_at)
    table.sweep(now=lambda: handshaking.admitted_at + 5.0)
    assert closed.closed and handshaking.closed and table.expired == 1
