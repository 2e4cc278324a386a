"""The genesis entry: the first leader of a brand-new cluster writes the cluster's identity at index 1.

A leader whose log is empty (no entry, no snapshot) holds every committed entry there is (none), so the
cluster has no history yet: its term's no-op entry, at index 1, carries a random cluster id instead of no
data. Whichever such entry commits at index 1 names the cluster, and every node that applies it learns
the same id. The data starts with a zero byte, which no state-machine command starts with.
"""

from __future__ import annotations

import random

GENESIS_PREFIX = b"\x00taskflux-cluster:"
CLUSTER_ID_HEX_DIGITS = 32


def genesis_data(rng: random.Random) -> bytes:
    """The no-op data of a brand-new cluster's first leader: the prefix and 32 random hex digits."""
    return GENESIS_PREFIX + b"%032x" % rng.getrandbits(4 * CLUSTER_ID_HEX_DIGITS)


def genesis_cluster_id(data: bytes) -> str | None:
    """The cluster id a genesis entry carries, or None when ``data`` is not a genesis entry."""
    if not data.startswith(GENESIS_PREFIX):
        return None
    return data[len(GENESIS_PREFIX) :].decode("ascii", "replace")


def is_no_op(data: bytes) -> bool:
    """An entry of raft's own, no state-machine command: a leader's no-op (empty, or the genesis entry) or a
    membership entry (taskflux.raft.members). All of them start with a zero byte."""
    return not data or data[0] == 0
