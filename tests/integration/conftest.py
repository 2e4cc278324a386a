"""Fixtures that start real node processes on loopback (free ports, temp directories)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.cluster import LocalCluster, NodeProcess


@pytest.fixture(scope="module")
def single_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """One single-node cluster shared by a module's tests (each test uses its own queue names)."""
    cluster = LocalCluster(1, tmp_path_factory.mktemp("single"), tcp_adapter_idle_timeout="2s")
    try:
        cluster.start()
        cluster.wait_for_leader()
        yield cluster.nodes[0]
    finally:
        cluster.stop()


@pytest.fixture
def fresh_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(1, tmp_path_factory.mktemp("fresh"))
    try:
        cluster.start()
        cluster.wait_for_leader()
        yield cluster
    finally:
        cluster.stop()
