"""This node's membership of its cluster: the identity it records and shows in handshakes, what it learns
from its peers' handshakes and from its own log (docs/operations.md, "Identity rules")."""

from __future__ import annotations

import logging
from collections.abc import Callable

from taskflux.raft.members import Members
from taskflux.storage.identity import IdentityFile
from taskflux.wire.cluster_protocol import Hello

logger = logging.getLogger("taskflux.peers")


class Membership:
    """Ties the data directory's identity file to the peer links (what a Hello says and learns) and to the
    node (the genesis entry it applies, the moment it has caught up). Every call runs on the hub; the
    identity file changes at most twice in a data directory's life, so its fsyncs are not worth a thread."""

    def __init__(self, identity: IdentityFile) -> None:
        self._identity = identity
        self._abstain: Callable[[], None] | None = None
        self._abstaining = False
        # The membership in force and the last committed one, as the node last reported them.
        self.members: Members | None = None
        self.committed_members: Members | None = None

    def was_removed(self, node_id: int) -> bool:
        """Whether ``node_id`` was removed from the cluster by a committed change that is in force (its id is
        never used again: a handshake that claims it is refused). Until the change commits, the removed node
        may still be the leader that must hear the acknowledgements of its own removal."""
        return (self.members is not None and self.members.was_removed(node_id)
                and self.committed_members is not None and self.committed_members.was_removed(node_id))

    def attach(self, abstain: Callable[[], None]) -> None:
        """``abstain``: tells the node to stop voting until it has caught up (``Raft.abstain``)."""
        self._abstain = abstain

    @property
    def cluster_id(self) -> str:
        """The cluster id this node shows and checks in handshakes ("" while unknown)."""
        return self._identity.cluster_id

    @property
    def caught_up(self) -> bool:
        """False while the data directory started empty and has not caught up from a leader."""
        return self._identity.caught_up

    @property
    def established(self) -> bool:
        """What this node's Hello says: it holds the cluster's committed history."""
        return self._identity.caught_up

    def heard(self, hello: Hello) -> None:
        """A peer's Hello passed ``check_hello``: learn the cluster id if we have none, and abstain when the
        peer holds a history that this node, started empty, has not caught up with."""
        if hello.cluster_id and self._identity.record_cluster_id(hello.cluster_id):
            logger.info("cluster id %s learned from node %d's handshake", hello.cluster_id, hello.node_id)
        if hello.established and not self._identity.caught_up and not self._abstaining:
            self._abstaining = True
            logger.warning(
                "node %d holds the cluster's history and this node's data directory started empty: it will not "
                "vote until it has caught up from a leader", hello.node_id,
            )
            if self._abstain is not None:
                self._abstain()

    def genesis_applied(self, cluster_id: str) -> None:
        """The cluster's genesis entry was applied: the id its first leader generated."""
        if self._identity.record_cluster_id(cluster_id):
            logger.info("cluster id %s recorded from the cluster's first entry", cluster_id)
        elif self._identity.cluster_id != cluster_id:  # cluster_id is configured (or was, when it was recorded)
            logger.info("the cluster's first entry names cluster %s; this node keeps cluster %s", cluster_id,
                        self._identity.cluster_id)

    def caught_up_now(self) -> None:
        """The raft core reported that this node has caught up from a leader."""
        if not self._identity.caught_up:
            self._identity.record_caught_up()
            logger.info("caught up from the leader: this node votes again")
