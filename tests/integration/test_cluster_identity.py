"""Identity rules with real node processes: a node whose data directory was emptied does not vote until it
has caught up (so an acknowledged record survives the loss of another copy), twins and nodes of another
cluster are refused, a data directory refuses a node of another id, and a flood of connections that never
handshake does not keep peers out of the cluster port."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from taskflux.storage.identity import IDENTITY_NAME, Identity, decode_identity
from taskflux.wire import client_protocol as wire
from tests.support.cluster import LocalCluster, NodeProcess, free_port, rest_status, wait_until
from tests.support.raw_client import RawConnection

pytestmark = pytest.mark.timeout(240)


def identity(node: NodeProcess) -> Identity | None:
    path = node.data_dir / IDENTITY_NAME
    return decode_identity(str(path), path.read_bytes()) if path.exists() else None


def drain(conn: RawConnection) -> list[bytes]:
    payloads = []
    while (record := conn.dequeue("").response.record) is not None:  # type: ignore[union-attr]
        payloads.append(record.payload)
    return payloads


def test_an_emptied_node_does_not_vote_until_caught_up_so_an_acknowledged_record_survives(tmp_path: Path) -> None:
    """A, B, C; X acknowledged while C is cut off (so X is on A and B only); B's data directory is wiped and B
    restarted empty under its id; A dies; C comes back. C lacks X: with the empty B's vote it would lead and
    X would be gone. B abstains, so nobody leads until A is back, and X survives."""
    cluster = LocalCluster(3, tmp_path, proxied=True, client_request_timeout="2s")
    with cluster.running():
        a = cluster.wait_for_leader()
        b, c = (i for i in range(3) if i != a)
        A, B, C = (cluster.nodes[i] for i in (a, b, c))
        assert RawConnection(A.client_address).enqueue("", 0, b"before") == wire.Ok()

        def everyone_applied() -> bool:
            views = [rest_status(node) for node in cluster.nodes]
            return all(view is not None for view in views) and len(
                {view["applied_index"] for view in views}) == 1  # type: ignore[index]

        wait_until(everyone_applied, 30, "every node to apply the first entries")
        wait_until(lambda: all((i := identity(node)) and i.caught_up and i.cluster_id for node in cluster.nodes),
                   30, "every node to record the cluster id and that it caught up")
        assert len({identity(node).cluster_id for node in cluster.nodes}) == 1  # type: ignore[union-attr]

        cluster.isolate(c)
        assert RawConnection(A.client_address).enqueue("", 0, b"X") == wire.Ok()  # on A and B, not on C
        B.kill()
        shutil.rmtree(B.data_dir)
        A.kill()
        B.start()  # empty, same id
        cluster.heal()

        wait_until(lambda: "will not vote until it has caught up" in B.log(), 30, "B to learn the cluster exists")
        quiet_until = time.monotonic() + 6  # twelve election timeouts
        while time.monotonic() < quiet_until:
            for node in (B, C):
                view = rest_status(node)
                assert view is None or view["role"] != "leader", f"{view}\n{cluster.logs()}"
            time.sleep(0.1)

        A.start()
        leader = cluster.wait_for_leader(timeout=30)
        assert leader != c  # C lacks X: it cannot win A's vote, and B's does not count yet
        assert sorted(drain(RawConnection(cluster.nodes[leader].client_address))) == [b"X", b"before"]
        wait_until(lambda: (i := identity(B)) and i.caught_up, 30, "B to catch up")
        assert "caught up from the leader: this node votes again" in B.log()


def test_a_twin_and_a_node_of_another_cluster_are_refused(tmp_path: Path) -> None:
    cluster = LocalCluster(3, tmp_path, cluster_id="blue")
    with cluster.running():
        real = cluster.nodes[1]

        def stranger(name: str, **extra: str) -> NodeProcess:
            root = tmp_path / name
            root.mkdir()
            options = {**real.extra, "cluster-listen-port": str(free_port()), **extra}
            return NodeProcess(1, root, real.peers, free_port(), free_port(), options)

        twin = stranger("twin")  # same id, same cluster, its own data directory
        other = stranger("other", **{"cluster-id": "green"})
        for process in (twin, other):
            process.start()
        try:
            wait_until(lambda: "which is already connected from" in cluster.nodes[0].log()
                       and "which is already connected from" in cluster.nodes[2].log(), 30,
                       "the twin to be refused")
            wait_until(lambda: "peer node 1 belongs to cluster green, this node 0 to cluster blue"
                       in cluster.nodes[0].log(), 30, "the other cluster's node to be refused")
            leader = cluster.wait_for_leader(among=[0, 1, 2])
            assert RawConnection(cluster.nodes[leader].client_address).enqueue("", 0, b"ok") == wire.Ok()
            assert twin.running and other.running
            for process in (twin, other):
                view = rest_status(process)
                assert view is not None and view["role"] != "leader" and view["commit_index"] == 0
        finally:
            twin.kill()
            other.kill()


def test_a_data_directory_refuses_a_node_of_another_id_or_cluster(tmp_path: Path) -> None:
    cluster = LocalCluster(3, tmp_path, cluster_id="blue")
    with cluster.running():
        leader = cluster.wait_for_leader()
        assert RawConnection(cluster.nodes[leader].client_address).enqueue("", 0, b"x") == wire.Ok()
    node0, node1 = cluster.nodes[0], cluster.nodes[1]
    node0.data_dir.rename(tmp_path / "moved")
    node1.data_dir.rename(node0.data_dir)  # node 1's volume mounted on node 0
    with pytest.raises(AssertionError, match="belongs to node 1, but this node is configured as node 0"):
        node0.start()
    assert node0.process is not None and node0.process.returncode == 1
    node0.data_dir.rename(node1.data_dir)
    (tmp_path / "moved").rename(node0.data_dir)
    node1.extra["cluster-id"] = "green"
    with pytest.raises(AssertionError, match="belongs to cluster blue, but this node is configured for cluster green"):
        node1.start()


def test_a_flood_of_connections_that_never_handshake_does_not_keep_a_restarted_peer_out(tmp_path: Path) -> None:
    cluster = LocalCluster(3, tmp_path, client_request_timeout="2s")
    with cluster.running():
        leader = cluster.wait_for_leader()
        follower = next(i for i in range(3) if i != leader)
        target = ("127.0.0.1", cluster.nodes[leader].cluster_port)
        stop = threading.Event()
        opened = []

        def flood() -> None:
            junk = [b"", b"\x00" * 9, b"GET / HTTP/1.1\r\n", b"\x00\x00\x00\x05\x00\x00\x00\x00\x01TF"]
            while not stop.is_set() and len(opened) < 3000:
                try:
                    sock = socket.create_connection(target, timeout=2)
                    sock.sendall(junk[len(opened) % len(junk)])
                    opened.append(sock)
                except OSError:
                    time.sleep(0.01)

        flooders = [threading.Thread(target=flood, daemon=True) for _ in range(4)]
        for thread in flooders:
            thread.start()
        try:
            wait_until(lambda: len(opened) > 300, 30, "the flood to get going")
            cluster.nodes[follower].kill()  # its links go; it must get back in while the flood goes on
            cluster.nodes[follower].start()
            started = time.monotonic()
            wait_until(lambda: (view := rest_status(cluster.nodes[follower])) is not None
                       and view["leader_id"] is not None, 30, "the restarted follower to hear from the leader")
            rejoin_seconds = time.monotonic() - started
            conn = RawConnection(cluster.nodes[leader].client_address)
            assert conn.enqueue("", 0, b"during the flood") == wire.Ok()
        finally:
            stop.set()
            for thread in flooders:
                thread.join(10)
            for sock in opened:
                sock.close()
        assert "which was the oldest waiting for its Hello" in cluster.nodes[leader].log()
        print(f"{len(opened)} junk connections; the restarted follower rejoined in {rejoin_seconds:.2f} s")
