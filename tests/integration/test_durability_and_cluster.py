"""Durability under kill -9, and a 3-node cluster: elections, NotLeader, failover, catch-up (also through a
snapshot), partitions through the fault-injecting proxy. Nothing acknowledged may be lost."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskflux.domain.entry_codec import decode_command
from taskflux.raft.genesis import is_no_op
from taskflux.raft.types import Entry
from taskflux.storage.disk import DiskStorage
from taskflux.wire import client_protocol as wire
from tests.support.cluster import LocalCluster, wait_until
from tests.support.raw_client import RawConnection

pytestmark = pytest.mark.timeout(180)

COUNT = wire.CountCommand("")


def count_of(conn: RawConnection, queue: str = "") -> int:
    answer = conn.command(wire.CountCommand(queue))
    assert isinstance(answer, wire.CommandResponse) and isinstance(answer.response, wire.CountResponse), answer
    return answer.response.count


def drain(conn: RawConnection, queue: str = "") -> list[bytes]:
    payloads = []
    while True:
        answer = conn.dequeue(queue)
        record = answer.response.record  # type: ignore[union-attr]
        if record is None:
            return payloads
        payloads.append(record.payload)


def committed_logs(cluster: LocalCluster) -> list[list[Entry]]:
    """Every node's log as its data directory holds it (the nodes must be stopped)."""
    logs = []
    for node in cluster.nodes:
        with DiskStorage(node.data_dir) as storage:
            first, last = storage.first_index(), storage.last_index()
            logs.append(storage.entries(first, last + 1, 1 << 40) if last >= first else [])
    return logs


def assert_logs_agree(cluster: LocalCluster) -> None:
    logs = committed_logs(cluster)
    by_index = [{entry.index: entry for entry in log} for log in logs]
    shortest = min(max(log, default=0) for log in by_index)
    for index in range(1, shortest + 1):
        entries = {(entry.term, entry.data) for log in by_index if (entry := log.get(index)) is not None}
        assert len(entries) <= 1, f"logs disagree at index {index}: {entries}"


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    options = getattr(request, "param", {})
    cluster = LocalCluster(3, tmp_path, proxied=options.pop("proxied", False), client_request_timeout="2s",
                           **options)
    cluster.start()
    yield cluster
    cluster.stop()


def test_acked_writes_survive_kill_9_and_acked_dequeues_stay_gone(fresh_node: LocalCluster) -> None:
    node = fresh_node.nodes[0]
    conn = RawConnection(node.client_address)
    assert conn.command(wire.CreateQueueCommand("kept", 1, 1000, None, None)) == wire.Ok()
    assert conn.command(wire.CreateQueueCommand("dropped")) == wire.Ok()
    for i in range(40):
        assert conn.enqueue("kept", i % 5, b"k%d" % i) == wire.Ok()
    taken = [conn.dequeue("kept").response.record.payload for _ in range(10)]  # type: ignore[union-attr]
    assert conn.command(wire.DeleteQueueCommand("dropped")) == wire.Ok()
    node.kill()
    node.start()
    fresh_node.wait_for_leader()
    conn = RawConnection(node.client_address)
    remaining = drain(conn, "kept")
    assert sorted(remaining + taken) == sorted(b"k%d" % i for i in range(40))
    assert not set(remaining) & set(taken)
    assert conn.command(wire.CountCommand("dropped")) == wire.CommandResponse(wire.CommandErrorResponse(2))
    listed = conn.command(wire.ListQueuesCommand())
    assert [q.name for q in listed.response.queues] == ["", "kept"]  # type: ignore[union-attr]


def test_election_not_leader_failover_and_catch_up(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader()
    follower = (leader + 1) % 3
    conn = RawConnection(cluster.nodes[follower].client_address)
    conn.send(bytes.fromhex("43 43 00"))
    assert conn.read_bytes(5) == bytes([0x6C]) + leader.to_bytes(4, "big")  # NotLeader with the leader's id

    writer = RawConnection(cluster.nodes[leader].client_address)
    acked = [b"a%d" % i for i in range(30)]
    for payload in acked:
        assert writer.enqueue("", 1, payload) == wire.Ok()
    cluster.nodes[leader].kill()
    survivors = [n for n in range(3) if n != leader]
    new_leader = cluster.wait_for_leader(survivors)
    assert new_leader in survivors
    writer = RawConnection(cluster.nodes[new_leader].client_address)
    assert count_of(writer) == len(acked)
    more = [b"b%d" % i for i in range(20)]
    for payload in more:
        assert writer.enqueue("", 1, payload) == wire.Ok()

    cluster.nodes[leader].start()  # the old leader comes back and catches up
    wait_until(lambda: cluster.leader() is not None, 20, "all three to agree on a leader")
    current = cluster.wait_for_leader()
    cluster.nodes[current].kill()  # whoever leads next must hold everything
    rest = [n for n in range(3) if n != current]
    final = RawConnection(cluster.nodes[cluster.wait_for_leader(rest)].client_address)
    assert sorted(drain(final)) == sorted(acked + more)
    cluster.stop()
    assert_logs_agree(cluster)


@pytest.mark.parametrize("cluster", [{"log_file_soft_limit": "4096", "log_file_hard_limit": "8192",
                                      "snapshot_creation_segments_threshold": "1"}], indirect=True)
def test_a_restarted_follower_catches_up_through_a_snapshot(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader()
    lagging = (leader + 1) % 3
    cluster.nodes[lagging].kill()
    writer = RawConnection(cluster.nodes[leader].client_address)
    acked = [b"s%03d" % i + b"." * 200 for i in range(150)]  # ~35 KiB: several segments, several snapshots
    for payload in acked:
        assert writer.enqueue("", 0, payload) == wire.Ok()
    wait_until(lambda: (cluster.nodes[leader].data_dir / "snapshot").exists(), 20, "the leader's snapshot")
    cluster.nodes[lagging].start()
    wait_until(lambda: (cluster.nodes[lagging].data_dir / "snapshot").exists(), 30,
               "the lagging follower to install a snapshot")
    third = 3 - leader - lagging
    cluster.nodes[third].kill()  # now the lagging node's copy is needed for any quorum
    assert sorted(drain(writer)) == sorted(acked)
    cluster.stop()
    assert_logs_agree(cluster)


@pytest.mark.parametrize("cluster", [{"proxied": True}], indirect=True)
def test_a_partitioned_leader_stops_acknowledging_and_the_logs_agree_after_healing(cluster: LocalCluster) -> None:
    old = cluster.wait_for_leader()
    writer = RawConnection(cluster.nodes[old].client_address)
    assert writer.enqueue("", 0, b"before") == wire.Ok()
    cluster.isolate(old)
    answers: list[object] = []

    def strand() -> None:
        try:
            answers.append(writer.enqueue("", 0, b"stranded"))
        except ConnectionError as closed:  # the server gave up waiting: outcome unknown, never "Ok"
            answers.append(closed)

    stranded = threading.Thread(target=strand)
    stranded.start()
    majority = [n for n in range(3) if n != old]
    new = cluster.wait_for_leader(majority)
    assert new != old
    conn = RawConnection(cluster.nodes[new].client_address)
    assert conn.enqueue("", 0, b"after") == wire.Ok()
    stranded.join(30)
    assert answers and answers[0] != wire.Ok(), f"the cut-off leader acknowledged: {answers}"
    assert isinstance(answers[0], wire.NotLeader | ConnectionError)
    cluster.heal()
    wait_until(lambda: cluster.leader() == new, 30, "the old leader to rejoin as a follower")
    third = 3 - old - new
    cluster.nodes[third].kill()
    # With the third node gone, this write commits only once the old leader has accepted it, i.e. once its
    # log matches the new leader's up to here: the stranded entry is gone from it.
    assert RawConnection(cluster.nodes[new].client_address, timeout=30).enqueue("", 0, b"healed") == wire.Ok()
    payloads = drain(conn)
    assert sorted(payloads) == [b"after", b"before", b"healed"]
    cluster.stop()
    assert_logs_agree(cluster)
    for log in committed_logs(cluster):
        for entry in log:
            if not is_no_op(entry.data):
                assert decode_command(entry.data) is not None


def test_sigterm_on_the_leader_hands_leadership_over_and_exits_0(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader()
    writer = RawConnection(cluster.nodes[leader].client_address)
    acked = [b"t%d" % i for i in range(20)]
    for payload in acked:
        assert writer.enqueue("", 2, payload) == wire.Ok()
    assert cluster.nodes[leader].terminate() == 0
    assert "no longer the leader" in cluster.nodes[leader].log()
    rest = [n for n in range(3) if n != leader]
    successor = RawConnection(cluster.nodes[cluster.wait_for_leader(rest)].client_address)
    assert sorted(drain(successor)) == sorted(acked)


def test_sigterm_while_clients_write_loses_no_acknowledged_write(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader()
    acked: list[bytes] = []
    stop = threading.Event()

    def write(worker: int) -> None:
        try:
            conn = RawConnection(cluster.nodes[leader].client_address, timeout=5)
            for i in range(100_000):
                if stop.is_set():
                    return
                payload = b"w%d-%d" % (worker, i)
                if conn.enqueue("", 1, payload) != wire.Ok():
                    return
                acked.append(payload)
        except (OSError, ConnectionError, AssertionError):
            # The leader went away under this writer or answered NotLeader to a new request (the raw
            # client asserts Ok before the Ack): what it acked so far is what counts.
            return

    writers = [threading.Thread(target=write, args=(w,)) for w in range(3)]
    for thread in writers:
        thread.start()
    wait_until(lambda: len(acked) >= 30, 20, "writes before the stop")
    assert all(thread.is_alive() for thread in writers)
    assert cluster.nodes[leader].terminate() == 0  # while the writers keep writing
    stop.set()
    for thread in writers:
        thread.join(timeout=20)
    rest = [n for n in range(3) if n != leader]
    successor = RawConnection(cluster.nodes[cluster.wait_for_leader(rest)].client_address)
    stored = drain(successor)
    assert set(acked) <= set(stored), f"lost {len(set(acked) - set(stored))} acknowledged writes"
