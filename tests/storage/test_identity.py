"""The identity file: checked against the configuration at start-up, replaced atomically, corruption found."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskflux.raft.types import Entry, HardState
from taskflux.storage.disk import DiskStorage
from taskflux.storage.errors import StorageCorrupted
from taskflux.storage.identity import IDENTITY_NAME, Identity, IdentityFile, IdentityMismatch, holds_nothing


def open_identity(path: Path, node_id: int = 1, cluster_id: str = "", empty: bool = True) -> IdentityFile:
    with DiskStorage(path):  # creates tmp/ like a node start does
        return IdentityFile(str(path), node_id, cluster_id, empty=empty)


def test_a_new_directory_records_the_node_and_what_it_learns(tmp_path: Path) -> None:
    identity = open_identity(tmp_path)
    assert identity.identity == Identity(1, "", caught_up=False)
    assert identity.record_cluster_id("c0ffee")
    assert not identity.record_cluster_id("other")  # the first id known stays
    identity.record_caught_up()
    assert open_identity(tmp_path).identity == Identity(1, "c0ffee", caught_up=True)


def test_another_node_id_refuses_naming_both(tmp_path: Path) -> None:
    open_identity(tmp_path, node_id=1)
    with pytest.raises(IdentityMismatch, match="belongs to node 1, but this node is configured as node 2"):
        open_identity(tmp_path, node_id=2)


def test_another_configured_cluster_id_refuses_naming_both(tmp_path: Path) -> None:
    open_identity(tmp_path, cluster_id="blue")
    with pytest.raises(IdentityMismatch, match="belongs to cluster blue, but this node is configured for cluster gr"):
        open_identity(tmp_path, cluster_id="green")
    assert open_identity(tmp_path).cluster_id == "blue"  # no cluster_id configured: the recorded one


def test_a_configured_cluster_id_is_recorded_when_none_was(tmp_path: Path) -> None:
    open_identity(tmp_path)
    assert open_identity(tmp_path, cluster_id="blue").cluster_id == "blue"
    assert open_identity(tmp_path).cluster_id == "blue"


def test_data_from_before_identity_files_counts_as_caught_up(tmp_path: Path) -> None:
    with DiskStorage(tmp_path) as storage:
        assert holds_nothing(storage)
        storage.set_hard_state(HardState(3, 0))
        storage.append([Entry(1, 3, b"")])
        assert not holds_nothing(storage)
        assert IdentityFile(str(tmp_path), 0, "", empty=holds_nothing(storage)).caught_up


@pytest.mark.parametrize("damage", ["truncate", "flip", "magic"])
def test_a_damaged_identity_file_stops_start_up(tmp_path: Path, damage: str) -> None:
    open_identity(tmp_path, cluster_id="blue")
    path = tmp_path / IDENTITY_NAME
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[:-3]
    elif damage == "flip":
        raw[9] ^= 1
    else:
        raw[0:4] = b"XXXX"
    path.write_bytes(bytes(raw))
    with pytest.raises(StorageCorrupted, match=IDENTITY_NAME):
        open_identity(tmp_path)
