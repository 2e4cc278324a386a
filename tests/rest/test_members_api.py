"""The membership routes on one node in this process, and ``python -m taskflux.admin`` against them: every
answer, every refusal with its reason, bad input."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from gevent.pywsgi import WSGIServer

from taskflux import admin
from taskflux.server.main import Server
from tests.rest.conftest import Wsgi


def error_of(answer: object) -> dict[str, object]:
    return answer.json["error"]  # type: ignore[attr-defined, no-any-return]


def test_the_membership_of_a_single_node(api: Wsgi, server: Server) -> None:
    view = api("GET", "/api/v1/cluster/members").json
    assert view["voters"] == [0] and view["learners"] == [] and view["next_id"] == 1
    assert view["leader_id"] == view["node_id"] == 0
    assert view["members"][0]["id"] == 0 and view["members"][0]["role"] == "leader"


def test_add_promote_remove_and_their_refusals(api: Wsgi) -> None:
    added = api("POST", "/api/v1/cluster/members", {"address": "127.0.0.1:1/2"})
    assert added.status == 201, added.body
    assert added.json["added"] == 1 and added.json["learners"] == [1] and added.json["next_id"] == 2
    learner = next(m for m in added.json["members"] if m["id"] == 1)
    assert learner["role"] == "learner" and learner["voter"] is False and learner["address"] == "127.0.0.1:1/2"
    # Nothing listens at its address: it never catches up, so it is not promoted.
    refused = api("POST", "/api/v1/cluster/members/1/promote")
    assert refused.status == 409 and error_of(refused)["reason"] == "not_caught_up"
    same_address = api("POST", "/api/v1/cluster/members", {"address": "127.0.0.1:1/2"})
    assert same_address.status == 400 and "already belongs" in str(error_of(same_address)["message"])
    removed = api("DELETE", "/api/v1/cluster/members/1")
    assert removed.status == 200 and removed.json["learners"] == [] and removed.json["next_id"] == 2
    for method, path in (("DELETE", "/api/v1/cluster/members/1"), ("POST", "/api/v1/cluster/members/1/promote"),
                         ("DELETE", "/api/v1/cluster/members/7"), ("DELETE", "/api/v1/cluster/members/x")):
        gone = api(method, path)
        assert gone.status == 404 and error_of(gone)["reason"] == "no_such_member", (method, path)
    last = api("DELETE", "/api/v1/cluster/members/0")
    assert last.status == 400 and "last voter" in str(error_of(last)["message"])
    again = api("POST", "/api/v1/cluster/members", {"address": "10.0.0.9:2602/5000"})
    assert again.status == 201 and again.json["added"] == 2  # ids are never reused


@pytest.mark.parametrize(("body", "content_type", "status", "reason"), [
    ({"address": "no-ports"}, None, 400, "invalid_field"),
    ({"address": "h:1/99999"}, None, 400, "invalid_field"),
    ({"address": "h:x/5000"}, None, 400, "invalid_field"),
    ({"address": 5}, None, 400, "invalid_field"),
    ({}, None, 400, "invalid_field"),
    ({"address": "h:1/2", "voter": True}, None, 400, "unknown_field"),
    ("address=h:1/2", "text/plain", 415, "unsupported_media_type"),
])
def test_a_bad_add_is_refused_in_words(api: Wsgi, body: object, content_type: str | None, status: int,
                                       reason: str) -> None:
    answer = api("POST", "/api/v1/cluster/members", body, content_type=content_type)  # type: ignore[arg-type]
    assert answer.status == status and error_of(answer)["reason"] == reason, answer.body
    assert api("GET", "/api/v1/cluster/members").json["next_id"] == 1  # nothing was added


def test_remove_force_must_be_a_boolean_and_transfer_needs_a_voter(api: Wsgi) -> None:
    bad = api("DELETE", "/api/v1/cluster/members/0", query="force=maybe")
    assert bad.status == 400 and error_of(bad)["field"] == "force"
    assert api("POST", "/api/v1/cluster/leader", {"node_id": 0}).status == 200  # already the leader
    missing = api("POST", "/api/v1/cluster/leader", {"node_id": 5})
    assert missing.status == 404 and error_of(missing)["reason"] == "no_such_member"
    assert api("POST", "/api/v1/cluster/leader", {"node_id": "zero"}).status == 400


@pytest.fixture
def http_server(server: Server) -> Iterator[str]:
    """The node's REST app on a real socket (the admin command speaks HTTP)."""
    listener = WSGIServer(("127.0.0.1", 0), server.rest.app, log=None)
    listener.start()
    yield f"127.0.0.1:{listener.server_port}"
    listener.stop()


def run_admin(server: str, *args: str) -> tuple[int, str]:
    """The command in this process: its HTTP calls are cooperative (the test run is monkey-patched), so the node
    serves them meanwhile."""
    out = io.StringIO()
    return admin.main(["--server", server, *args], out), out.getvalue()


def test_the_admin_command_adds_lists_and_removes(http_server: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out = run_admin(http_server, "add", "127.0.0.1:7/8")
    assert status == 0 and "node 1 added as a learner at 127.0.0.1:7/8" in out
    assert "--cluster-join true --cluster-node-id 1" in out and "--cluster-listen-port 8" in out
    status, out = run_admin(http_server, "members")
    assert status == 0 and "learner" in out and "leader: 0; next id: 2" in out
    status, out = run_admin(http_server, "promote", "1", "--wait", "0.5")
    assert status == 1 and "not_caught_up" in capsys.readouterr().err
    status, out = run_admin(http_server, "remove", "1")
    assert status == 0 and "node 1 removed" in out
    status, _ = run_admin(http_server, "remove", "1")
    assert status == 1 and "no_such_member" in capsys.readouterr().err


def test_the_admin_command_says_when_no_node_answers(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.support.cluster import free_port

    assert admin.main(["--server", f"127.0.0.1:{free_port()}", "members"]) == 2
    assert "unreachable" in capsys.readouterr().err


def test_two_adds_at_once_get_distinct_ids(http_server: str) -> None:
    """The id is handed out when the change is made (one change at a time: the second add waits and retries)."""
    import gevent

    runs = [gevent.spawn(run_admin, http_server, "add", f"127.0.0.1:{port}/{port + 1}") for port in (11, 21)]
    gevent.joinall(runs, timeout=30)
    assert [run.value[0] for run in runs] == [0, 0]
    status, out = run_admin(http_server, "members")
    assert status == 0 and "127.0.0.1:11/12" in out and "127.0.0.1:21/22" in out and "next id: 3" in out
