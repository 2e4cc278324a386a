"""The identity file of a data directory: which node of which cluster its data belongs to.

Layout (big-endian, 4 + 4 + 4 + 1 + 1 + n + 4 bytes)::

    "TFID" | u32 format version (1) | i32 node id | u8 flags (bit 0: caught up) | u8 n | cluster id (n bytes)
    | u32 CRC-32 of everything before it

``caught up`` is clear while the data directory is one that started empty and has not yet caught up from
a leader (such a node does not vote once it knows the cluster has a history: ``Raft.abstain``). The file is
replaced atomically (temporary file, fsync, rename, directory fsync) and changes at most twice in a data
directory's life: when the cluster id becomes known and when the node has caught up.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, replace
from zlib import crc32

from taskflux.raft.storage import LogStorage, StorageError
from taskflux.raft.types import HardState
from taskflux.storage.errors import StorageCorrupted
from taskflux.storage.fileops import REAL_FILE_OPS, FileOps
from taskflux.storage.fsutil import write_new_file

IDENTITY_NAME = "identity"
IDENTITY_MAGIC = b"TFID"
IDENTITY_VERSION = 1
_HEAD = struct.Struct(">4sIiBB")  # magic, version, node id, flags, cluster id length
_CRC = struct.Struct(">I")
_CAUGHT_UP = 1


class IdentityMismatch(StorageError):
    """The data directory belongs to another node or another cluster than the configuration says."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a data directory belongs to. ``cluster_id`` is "" while not known yet."""

    node_id: int
    cluster_id: str = ""
    caught_up: bool = True


def encode_identity(identity: Identity) -> bytes:
    cluster_id = identity.cluster_id.encode("ascii")
    flags = _CAUGHT_UP if identity.caught_up else 0
    body = _HEAD.pack(IDENTITY_MAGIC, IDENTITY_VERSION, identity.node_id, flags, len(cluster_id)) + cluster_id
    return body + _CRC.pack(crc32(body))


def decode_identity(path: str, raw: bytes) -> Identity:
    """The identity in ``raw`` (the bytes of the file at ``path``); StorageCorrupted when it is not one."""
    if len(raw) < _HEAD.size + _CRC.size:
        raise StorageCorrupted(path, 0, f"identity file is {len(raw)} bytes, too short")
    magic, version, node_id, flags, length = _HEAD.unpack_from(raw)
    if magic != IDENTITY_MAGIC:
        raise StorageCorrupted(path, 0, f"bad identity magic {magic!r}")
    if len(raw) != _HEAD.size + length + _CRC.size:
        raise StorageCorrupted(path, _HEAD.size - 1, f"identity file is {len(raw)} bytes, its cluster id "
                               f"length {length} says {_HEAD.size + length + _CRC.size}")
    (checksum,) = _CRC.unpack_from(raw, len(raw) - _CRC.size)
    if crc32(raw[: -_CRC.size]) != checksum:
        raise StorageCorrupted(path, len(raw) - _CRC.size, "identity checksum mismatch")
    if version != IDENTITY_VERSION:
        raise StorageCorrupted(path, 4, f"unsupported identity format version {version}")
    if node_id < 0 or flags & ~_CAUGHT_UP:
        raise StorageCorrupted(path, 8, f"invalid node id {node_id} or flags {flags:#x}")
    cluster_id = raw[_HEAD.size : _HEAD.size + length].decode("ascii", "replace")
    return Identity(node_id, cluster_id, bool(flags & _CAUGHT_UP))


def holds_nothing(storage: LogStorage) -> bool:
    """No term, no vote, no entry, no snapshot: a data directory that has never taken part in a cluster."""
    return storage.hard_state() == HardState() and storage.last_index() == 0 and storage.snapshot_meta().index == 0


class IdentityFile:
    """The identity of an open data directory, checked against the configuration and kept durable.

    Open it after the storage (which holds the directory lock and empties ``tmp/``). ``empty``: the storage
    holds nothing at all (no term, no entry, no snapshot); a directory without an identity file that holds
    data comes from before identity files existed, and its node counts as caught up.
    """

    def __init__(
        self, data_dir: str, node_id: int, configured_cluster_id: str, *, empty: bool,
        file_ops: FileOps = REAL_FILE_OPS,
    ) -> None:
        self._ops = file_ops
        self.path = os.path.join(data_dir, IDENTITY_NAME)
        self._tmp_path = os.path.join(data_dir, "tmp", IDENTITY_NAME + ".tmp")
        recorded = self._load()
        if recorded is None:
            self.identity = Identity(node_id, configured_cluster_id, caught_up=not empty)
            self._save()
            return
        if recorded.node_id != node_id:
            raise IdentityMismatch(
                f"the data directory {data_dir} belongs to node {recorded.node_id}, but this node is configured "
                f"as node {node_id} (cluster_node_id): start it with cluster_node_id {recorded.node_id}, or give "
                f"node {node_id} its own data directory (an empty one joins the cluster as a replacement)"
            )
        if configured_cluster_id and recorded.cluster_id and configured_cluster_id != recorded.cluster_id:
            raise IdentityMismatch(
                f"the data directory {data_dir} belongs to cluster {recorded.cluster_id}, but this node is "
                f"configured for cluster {configured_cluster_id} (cluster_id)"
            )
        self.identity = recorded
        if configured_cluster_id and not recorded.cluster_id:
            self.identity = replace(recorded, cluster_id=configured_cluster_id)
            self._save()

    @property
    def cluster_id(self) -> str:
        return self.identity.cluster_id

    @property
    def caught_up(self) -> bool:
        return self.identity.caught_up

    def record_cluster_id(self, cluster_id: str) -> bool:
        """Record the cluster id when none is known yet; True if it was recorded."""
        if self.identity.cluster_id:
            return False
        self.identity = replace(self.identity, cluster_id=cluster_id)
        self._save()
        return True

    def record_caught_up(self) -> None:
        """The node has caught up from a leader: it votes again, also after a restart."""
        if not self.identity.caught_up:
            self.identity = replace(self.identity, caught_up=True)
            self._save()

    def _load(self) -> Identity | None:
        try:
            with open(self.path, "rb") as f:
                raw = f.read(4096)
        except FileNotFoundError:
            return None
        return decode_identity(self.path, raw)

    def _save(self) -> None:
        write_new_file(self._ops, self._tmp_path, self.path, [encode_identity(self.identity)])
