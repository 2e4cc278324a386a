"""Bad input on the gRPC port: streams that never send, more idle streams than the worker limit, connections
that never complete the HTTP/2 handshake, oversized and malformed messages, garbage and slow bytes. Real
clients keep being served (the latency bound asserted is loose for a loaded test machine; run with -s for
the numbers)."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import grpc
import pytest

from taskflux.server.grpc_api import admission
from tests.grpc.conftest import CALL_TIMEOUT, Harness, Stream, dequeue, pb, wait_until
from tests.support.attackers import assert_real_clients_served, attacking, idle_connections

pytestmark = pytest.mark.timeout(120)

REAL_ROUNDS = 50


def real_client_latencies(harness: Harness, rounds: int = REAL_ROUNDS) -> list[float]:
    """An enqueue round (data, ack, committed) on a new stream, ``rounds`` times: their latencies in seconds."""
    seconds = []
    for i in range(rounds):
        started = time.perf_counter()
        answer = harness.enqueue("", 1, f"real {i}".encode())
        assert answer.WhichOneof("result") == "data" and not answer.data.HasField("policy_violation"), answer
        seconds.append(time.perf_counter() - started)
    return seconds


def assert_served(harness: Harness, attack: str) -> None:
    assert_real_clients_served(partial(real_client_latencies, harness), attack, "enqueue round")


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path, max_workers=64).start()
    yield harness
    harness.stop()


def test_baseline_without_an_attack(limited: Harness) -> None:
    assert_served(limited, "no attack (baseline)")


def test_more_idle_streams_than_the_worker_limit_do_not_lock_real_clients_out(limited: Harness) -> None:
    idle = [Stream(limited.stub.Dequeue) for _ in range(64 + 20)]  # open, and never a message
    try:
        wait_until(lambda: len(limited.server.admission.table) >= 64, what="the idle streams to take every place")
        assert_served(limited, f"{len(idle)} idle streams (limit 64)")
        assert limited.server.admission.table.evicted >= 20
        evicted = [stream for stream in idle if stream.call.done()]
        assert evicted and all(stream.status()[0] is grpc.StatusCode.CANCELLED for stream in evicted)
    finally:
        for stream in idle:
            stream.call.cancel()


def test_a_thousand_idle_connections_cost_real_clients_nothing(limited: Harness) -> None:
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # + empty SETTINGS
    with idle_connections(limited.server.address, 1000) as idle:
        for sock in idle[:500]:
            sock.sendall(preface)  # half of them complete the handshake, then open no call
        assert_served(limited, "1000 idle connections")


def test_a_stream_that_never_sends_is_cancelled_at_its_deadline(
    limited: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admission, "FIRST_MESSAGE_SECONDS", 0.5)
    silent = Stream(limited.stub.Dequeue)
    wait_until(silent.call.done, what="the silent stream to be cancelled")
    assert silent.status()[0] is grpc.StatusCode.CANCELLED


def test_a_stream_idle_with_a_record_is_cancelled_and_the_record_goes_back(
    limited: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admission, "IDLE_TIMEOUT_SECONDS", 0.5)
    limited.enqueue("", 1, b"held")
    holder = Stream(limited.stub.Dequeue)
    assert holder.exchange(dequeue("")).success.record.payload == b"held"
    wait_until(holder.call.done, what="the idle holder to be cancelled")
    wait_until(lambda: limited.count("") == 1, what="the record to come back")


def test_a_connection_that_never_completes_the_handshake_is_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admission, "HANDSHAKE_TIMEOUT_SECONDS", 1.0)
    harness = Harness(tmp_path).start()
    try:
        host, port = harness.server.address.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as silent:
            started = time.monotonic()
            with contextlib.suppress(OSError):
                while silent.recv(65536):  # the server's own SETTINGS may come first
                    pass
            assert time.monotonic() - started < 8  # gRPC's default would wait 120 s
        assert harness.count("") == 0
    finally:
        harness.stop()


@pytest.mark.parametrize("attack", ["grpc-garbage", "grpc-oversized", "slow-drip"])
def test_real_clients_are_served_during_an_attack(limited: Harness, attack: str) -> None:
    with attacking(attack, limited.server.address):
        assert_served(limited, attack)
    assert limited.stub.GetCount(pb.GetCountRequest(queue=""), timeout=CALL_TIMEOUT).data.count == REAL_ROUNDS
