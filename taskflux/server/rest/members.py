"""REST routes for cluster membership (``/api/v1/cluster/members…``, ``/api/v1/cluster/leader``).

Every change is made by the leader (a follower answers 421 with the leader's address in ``Location``) and
answered once it has committed, with the membership then in force. Refusals are 409 with a reason a script
can act on: ``change_in_progress`` (retry shortly), ``not_caught_up`` (the learner is still copying the log),
``would_lose_quorum`` (add ``?force=true`` to remove anyway).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import bottle
import gevent

from taskflux.raft.members import NEXT_ID, ChangeKind, ConfChange, MembershipError
from taskflux.server.node import NotLeader
from taskflux.server.peers import parse_member_address
from taskflux.server.rest.requests import JSON_SLACK_BYTES, error, int_field, json_response, read_json_object

if TYPE_CHECKING:
    from taskflux.server.node import Node
    from taskflux.server.rest.app import RestApi

TRANSFER_TIMEOUT = 10.0
_REFUSALS = {  # MembershipError.reason -> HTTP status
    "invalid": 400,
    "no_such_member": 404,
    "change_in_progress": 409,
    "not_caught_up": 409,
    "would_lose_quorum": 409,
}


class MembersApi:
    """The membership routes, registered on a RestApi; ``cluster`` is the node's view of the cluster (the
    ``/api/v1/cluster`` document), whose ``nodes`` list every member."""

    def __init__(self, node: Node, cluster: Callable[[], dict[str, Any]]) -> None:
        self.node = node
        self.cluster = cluster

    def register(self, rest: RestApi) -> None:
        rest.add_route("GET", "/api/v1/cluster/members", self.list_members)
        rest.add_route("POST", "/api/v1/cluster/members", self.add_member)
        rest.add_route("POST", "/api/v1/cluster/members/<node_id>/promote", self.promote_member)
        rest.add_route("DELETE", "/api/v1/cluster/members/<node_id>", self.remove_member)
        rest.add_route("POST", "/api/v1/cluster/leader", self.transfer_leadership)

    def _members(self, status: int = 200, **extra: Any) -> bottle.HTTPResponse:
        view = self.cluster()
        members = self.node.members
        body = {"members": view["nodes"], "voters": sorted(members.voters), "learners": sorted(members.learners),
                "next_id": members.next_id, "leader_id": view["leader_id"], "node_id": view["node_id"], **extra}
        return json_response(status, body)

    def _change(self, change: ConfChange, force: bool = False) -> None:
        try:
            self.node.change_membership(change, force)
        except MembershipError as refused:
            if refused.reason == "not_leader":  # leadership moved while the change waited for the loop
                raise error(503, "no_leader", str(refused)) from None
            problem = error(_REFUSALS.get(refused.reason, 409), refused.reason, str(refused))
            if refused.reason == "change_in_progress":
                problem.headers["Retry-After"] = "1"
            raise problem from None

    def list_members(self) -> bottle.HTTPResponse:
        return self._members()

    def add_member(self) -> bottle.HTTPResponse:
        body = read_json_object(JSON_SLACK_BYTES)
        unknown = sorted(set(body) - {"address"})
        if unknown:
            raise error(400, "unknown_field", f"unknown field {unknown[0]!r}", unknown[0])
        raw = body.get("address")
        if not isinstance(raw, str):
            raise error(400, "invalid_field", "address must be a string HOST:CLIENTPORT/CLUSTERPORT", "address")
        try:
            address = parse_member_address(raw)
        except ValueError as bad:
            raise error(400, "invalid_field", str(bad), "address") from None
        self._change(ConfChange(ChangeKind.ADD_LEARNER, NEXT_ID, address))  # the id is handed out in the loop
        added = next(m.id for m in self.node.members.members if m.address == address)  # addresses are unique
        return self._members(201, added=added)

    def promote_member(self, node_id: str) -> bottle.HTTPResponse:
        member = _member_id(node_id)
        self._change(ConfChange(ChangeKind.PROMOTE, member))
        return self._members()

    def remove_member(self, node_id: str) -> bottle.HTTPResponse:
        member = _member_id(node_id)
        force = bottle.request.query.get("force", "false").lower()
        if force not in ("true", "false"):
            raise error(400, "invalid_parameter", "force must be true or false", "force")
        if member == self.node.id:
            self._hand_over_first()
        self._change(ConfChange(ChangeKind.REMOVE, member), force == "true")
        return self._members()

    def _hand_over_first(self) -> None:
        """The leader is asked to remove itself: hand leadership to the most up-to-date voter first, and send the
        request there (421). The new leader removes this node as a follower: no election, no lost acknowledgement.
        With no voter to take over (or none taking over in time), this leader removes itself: it leads until
        the change commits, then hands over (docs/raft.md, "Membership")."""
        node = self.node
        for candidate in node.transfer_candidates()[:1]:
            if node.transfer_leadership(candidate, TRANSFER_TIMEOUT):
                deadline = time.monotonic() + TRANSFER_TIMEOUT
                while node.leader_id < 0 and time.monotonic() < deadline:
                    gevent.sleep(0.01)
                raise NotLeader(node.leader_id)

    def transfer_leadership(self) -> bottle.HTTPResponse:
        body = read_json_object(JSON_SLACK_BYTES)
        to = int_field(body.get("node_id"), "node_id", 0, 2**31 - 1)
        node = self.node
        node.ensure_serving()
        if to == node.id:
            return self._members()
        if not node.members.is_voter(to):
            raise error(404, "no_such_member", f"node {to} is not a voter of the cluster")
        if not node.transfer_leadership(to, TRANSFER_TIMEOUT):
            raise error(503, "transfer_failed", f"node {to} did not take over within {TRANSFER_TIMEOUT:g} s")
        return self._members()


def _member_id(text: str) -> int:
    if not text.isdigit() or len(text) > 10:
        raise error(404, "no_such_member", f"no member {text!r}: a node id is a number")
    return int(text)
