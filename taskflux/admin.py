"""Cluster membership from the command line: ``python -m taskflux.admin [--server URL ...] COMMAND``.

Commands (each change waits until it has committed, then prints the membership in force):

    members                       the membership: every node, voter or learner, its addresses and role
    add HOST:CLIENTPORT/CLUSTERPORT
                                  add a new node as a learner; prints its id and how to start it
    promote ID [--wait SECONDS]   make learner ID a voter once it has caught up (waits for that, 60 s by default)
    remove ID [--force]           remove node ID (the leader included); refused when the voters left that answer
                                  would not make a quorum, unless --force
    transfer-leadership ID        hand leadership to voter ID

It speaks the REST API (``/api/v1/cluster/members``) of any node given with ``--server`` (default
``http://127.0.0.1:1606``, or ``TASKFLUX_ADMIN_SERVER``; several may be given, space-separated in the variable)
and follows a follower's answer to the leader. Exit status: 0 done, 1 refused or failed (the reason is printed),
2 a usage error or no node reachable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any, TextIO

DEFAULT_SERVER = "http://127.0.0.1:1606"
MAX_REDIRECTS = 5


class AdminError(Exception):
    """A refusal or failure worth one line; ``reason`` is the API's (or ``unreachable``)."""

    def __init__(self, message: str, reason: str = "failed", status: int = 1) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


class AdminClient:
    """Calls the membership routes of the first reachable node, following 421 answers to the leader."""

    def __init__(self, servers: Sequence[str], timeout: float = 30.0) -> None:
        self.servers = [s if "://" in s else f"http://{s}" for s in servers]
        self.timeout = timeout

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        last = ""
        for server in self.servers:
            try:
                return self._follow(method, server.rstrip("/") + path, body)
            except urllib.error.URLError as unreachable:
                last = f"{server}: {unreachable.reason}"
            except (TimeoutError, ConnectionError) as unreachable:
                last = f"{server}: {unreachable}"
        raise AdminError(f"no node answered ({last})", "unreachable", 2)

    def _follow(self, method: str, url: str, body: dict[str, Any] | None) -> dict[str, Any]:
        for _ in range(MAX_REDIRECTS):
            data = None if body is None else json.dumps(body).encode()
            request = urllib.request.Request(url, data, method=method)
            if data is not None:
                request.add_header("Content-Type", "application/json")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read() or b"{}")  # type: ignore[no-any-return]
            except urllib.error.HTTPError as answer:
                payload = _json(answer.read())
                problem = payload.get("error", {}) if isinstance(payload, dict) else {}
                location = answer.headers.get("Location")
                if answer.code == 421 and location:
                    url = urllib.parse.urljoin(url, location)
                    continue
                message = problem.get("message", f"HTTP {answer.code}")
                raise AdminError(message, problem.get("reason", "failed")) from None
        raise AdminError("too many redirects between nodes (the leader is changing): try again", "no_leader")


def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return {}


def format_members(view: dict[str, Any]) -> str:
    """The membership as a small table."""
    lines = [f"{'ID':>4}  {'ROLE':<9} {'VOTES':<5}  {'ADDRESS':<28} {'CLIENT':<22} {'HTTP':<22} LAG"]
    for node in view.get("members", []):
        lag = node.get("lag")
        lines.append(
            f"{node['id']:>4}  {node['role']:<9} {'yes' if node['voter'] else 'no':<5}  "
            f"{node.get('address') or '-':<28} {node.get('client_endpoint') or '-':<22} "
            f"{node.get('http_address') or '-':<22} {'-' if lag is None else lag}"
        )
    leader = view.get("leader_id")
    lines.append(f"leader: {'none known' if leader is None else leader}; next id: {view.get('next_id')}")
    return "\n".join(lines)


def _arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m taskflux.admin", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", action="append", default=None,
                        help="a node's REST address (repeatable); default $TASKFLUX_ADMIN_SERVER or " + DEFAULT_SERVER)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for one answer (default 30)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("members", help="show the membership")
    add = commands.add_parser("add", help="add a new node as a learner")
    add.add_argument("address", help="HOST:CLIENTPORT/CLUSTERPORT of the new node")
    promote = commands.add_parser("promote", help="make a caught-up learner a voter")
    promote.add_argument("id", type=int)
    promote.add_argument("--wait", type=float, default=60.0, help="seconds to wait for it to catch up (default 60)")
    remove = commands.add_parser("remove", help="remove a node")
    remove.add_argument("id", type=int)
    remove.add_argument("--force", action="store_true", help="even if the voters left could not make a quorum")
    transfer = commands.add_parser("transfer-leadership", help="hand leadership to a voter")
    transfer.add_argument("id", type=int)
    return parser


def _retrying(call: Any, wait: float, out: TextIO, *retry_on: str) -> dict[str, Any]:
    """``call()`` again while it is refused for one of ``retry_on``, for up to ``wait`` seconds."""
    deadline = time.monotonic() + wait
    said = ""
    while True:
        try:
            return call()  # type: ignore[no-any-return]
        except AdminError as refused:
            if refused.reason not in retry_on or time.monotonic() >= deadline:
                raise
            if str(refused) != said:
                said = str(refused)
                print(f"waiting: {said}", file=out)
            time.sleep(0.5)


def run(args: argparse.Namespace, client: AdminClient, out: TextIO) -> None:
    """Carry out one command, printing what it did."""
    if args.command == "members":
        view = client.call("GET", "/api/v1/cluster/members")
    elif args.command == "add":
        view = _retrying(lambda: client.call("POST", "/api/v1/cluster/members", {"address": args.address}), 10.0,
                         out, "change_in_progress")
        added = view["added"]
        host, _, ports = args.address.rpartition(":")
        client_port, _, cluster_port = ports.partition("/")
        print(f"node {added} added as a learner at {args.address}. Start it with an empty data directory and:\n"
              f"  python taskflux.py -c config.yaml --cluster-join true --cluster-node-id {added} "
              f"--data-directory taskflux-node{added}-data "
              f"--cluster-listen-host 0.0.0.0 --cluster-listen-port {cluster_port} "
              f"--tcp-adapter-listen-port {client_port} --tcp-adapter-advertise-address {host}:{client_port}\n"
              f"then, once it has caught up: python -m taskflux.admin promote {added}", file=out)
    elif args.command == "promote":
        view = _retrying(lambda: client.call("POST", f"/api/v1/cluster/members/{args.id}/promote"), args.wait, out,
                         "not_caught_up", "change_in_progress")
        print(f"node {args.id} votes now", file=out)
    elif args.command == "remove":
        query = "?force=true" if args.force else ""
        view = _retrying(lambda: client.call("DELETE", f"/api/v1/cluster/members/{args.id}{query}"), 10.0, out,
                         "change_in_progress", "no_leader")
        print(f"node {args.id} removed: stop its process; its id is never used again", file=out)
    else:
        view = client.call("POST", "/api/v1/cluster/leader", {"node_id": args.id})
        print(f"node {args.id} leads now", file=out)
    print(format_members(view), file=out)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """The command line; returns the exit status."""
    out = out or sys.stdout
    args = _arguments().parse_args(argv)
    servers = args.server or os.environ.get("TASKFLUX_ADMIN_SERVER", DEFAULT_SERVER).split()
    try:
        run(args, AdminClient(servers, args.timeout), out)
    except AdminError as failed:
        print(f"error ({failed.reason}): {failed}", file=sys.stderr)
        return failed.status
    return 0


if __name__ == "__main__":
    sys.exit(main())
