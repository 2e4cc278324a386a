"""Fixtures that start real node processes on loopback (free ports, temp directories)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.cluster import LocalCluster, NodeProcess


@pytest.fixture(scope="module")
def single_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """One single-node cluster shared by a module's tests (each test uses its own queue names)."""
    with LocalCluster(1, tmp_path_factory.mktemp("single"), tcp_adapter_idle_timeout="2s").running() as cluster:
        yield cluster.nodes[0]


@pytest.fixture
def fresh_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(1, tmp_path_factory.mktemp("fresh")).running() as cluster:
        yield cluster
