"""Work-queue promises with real node processes and SIGKILL: an enqueue whose leader dies mid-flight is retried
with its key and added exactly once; a poison record whose consumer dies on it every time ends in the
dead-letter queue after max_deliveries; delayed records come out in priority order once due, across a restart."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from taskflux.client.client import TaskFluxClient
from tests.support.cluster import REPO, LocalCluster, NodeProcess, wait_until

pytestmark = pytest.mark.timeout(240)


def last_index(node: NodeProcess) -> int:
    """The node's last log index (committed or not), from its metrics."""
    with urllib.request.urlopen(f"http://{node.http_address}/metrics", timeout=2) as answer:
        text = answer.read().decode()
    match = re.search(r"^taskflux_raft_last_index (\S+)$", text, re.MULTILINE)
    assert match is not None
    return int(float(match.group(1)))


def drain(client: TaskFluxClient, queue: str) -> list[bytes]:
    taken = []
    while (record := client.dequeue(queue)) is not None:
        taken.append(record.payload)
        record.ack()
    return taken


def test_an_enqueue_whose_leader_is_killed_mid_flight_is_added_exactly_once(tmp_path: Path) -> None:
    """The followers get the entry but their acknowledgements never reach the leader (those links are cut), so
    the client cannot have its answer; the leader is killed; a follower becomes leader and commits the entry;
    the client's retry carries the same key and is answered with the first enqueue's id."""
    cluster = LocalCluster(3, tmp_path, proxied=True, client_request_timeout="10s")
    with cluster.running():
        leader = cluster.wait_for_leader()
        followers = [i for i in range(3) if i != leader]
        before = {f: last_index(cluster.nodes[f]) for f in followers}
        for follower in followers:
            cluster.proxies[(follower, leader)].cut()  # follower -> leader: no acknowledgement comes back
        outcome: list[object] = []
        client = TaskFluxClient(cluster.client_addresses, timeout=60)

        def produce() -> None:
            try:
                outcome.append(client.enqueue("", 7, b"exactly once", key="order-42"))
            except Exception as error:  # reported by the assertion below
                outcome.append(error)

        producer = threading.Thread(target=produce, daemon=True)
        producer.start()
        wait_until(lambda: all(last_index(cluster.nodes[f]) > before[f] for f in followers), 20,
                   "the entry on both followers")
        assert not outcome, "answered before anything could commit"
        cluster.nodes[leader].kill()
        cluster.heal()
        producer.join(90)
        assert len(outcome) == 1 and isinstance(outcome[0], int), outcome
        assert client.enqueue("", 7, b"exactly once", key="order-42") == outcome[0]  # and again: still one
        assert drain(client, "") == [b"exactly once"], cluster.logs()
        client.close()


CONSUMER = """
import sys, time
from taskflux.client.client import TaskFluxClient
client = TaskFluxClient([sys.argv[1]], timeout=30)
record = client.dequeue("jobs", wait=30)
print(record.id, record.failed_deliveries, flush=True)
time.sleep(600)  # working on it... until SIGKILL
"""


def test_a_poison_record_whose_consumer_dies_each_time_ends_in_the_dead_letter_queue(tmp_path: Path) -> None:
    cluster = LocalCluster(1, tmp_path)
    with cluster.running():
        node = cluster.nodes[0]
        client = TaskFluxClient([node.client_address], timeout=10)
        client.create_queue("dead")
        client.create_queue("jobs", max_deliveries=3, dead_letter_queue="dead")
        record_id = client.enqueue("jobs", 5, b"poison")
        seen = []
        for _ in range(3):
            consumer = subprocess.Popen([sys.executable, "-c", CONSUMER, node.client_address], cwd=REPO,
                                        stdout=subprocess.PIPE, text=True)
            try:
                assert consumer.stdout is not None
                seen.append(consumer.stdout.readline().split())
            finally:
                consumer.kill()  # SIGKILL, mid-job
                consumer.wait(10)
            # the server notices the connection gone and logs the failed delivery
            wait_until(lambda: client.count("jobs") == 1 or client.count("dead") == 1, 20, "the record back")
        assert seen == [[str(record_id), "0"], [str(record_id), "1"], [str(record_id), "2"]]
        assert client.count("jobs") == 0
        [dead] = client.peek("dead")
        assert (dead.payload, dead.priority, dead.failed_deliveries) == (b"poison", 5, 3)
        client.close()


def test_delayed_records_come_out_in_priority_order_once_due_across_a_restart(tmp_path: Path) -> None:
    cluster = LocalCluster(1, tmp_path)
    with cluster.running():
        node = cluster.nodes[0]
        client = TaskFluxClient([node.client_address], timeout=10)
        due = time.time() + 4.0
        for priority in (3, 1, 2):
            client.enqueue("", priority, b"%d" % priority, not_before=due)
        client.enqueue("", 9, b"now")
        client.close()
        node.kill()
        node.start()
        cluster.wait_for_leader()
        client = TaskFluxClient([node.client_address], timeout=10)
        first = client.dequeue("", wait=1)
        assert first is not None and first.payload == b"now"
        first.ack()
        [summary] = client.list_queues()
        assert (summary.count, summary.delayed) == (0, 3)
        taken = []
        while len(taken) < 3:
            record = client.dequeue("", wait=30)
            assert record is not None
            assert time.time() >= due - 0.05, "handed out before it was due"
            taken.append(record.payload)
            record.ack()
        assert taken == [b"1", b"2", b"3"]  # due together: then by priority
        client.close()
