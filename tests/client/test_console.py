"""The console: its grammar (pure parsing), its output, and the command loop against a fake node."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskflux.client.__main__ import main
from taskflux.client.client import QueueSummary
from taskflux.client.console import (
    HELP,
    ConsoleSyntaxError,
    Count,
    Create,
    Delete,
    Dequeue,
    Enqueue,
    Exit,
    Help,
    ListQueues,
    Peek,
    Schedule,
    format_payload,
    format_queues,
    parse,
)
from tests.client.fake_node import FakeCluster, FakeNode

# --- grammar ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("line", "command"),
    [
        ("", None),
        ("   ", None),
        ("enqueue 5 hello world", Enqueue("", 5, b"hello world")),
        ("enqueue jobs 5 hello   world", Enqueue("jobs", 5, b"hello world")),
        ("enqueue jobs -3 x", Enqueue("jobs", -3, b"x")),
        ("enqueue 5", Enqueue("", 5, b"")),
        ("enqueue jobs 5", Enqueue("jobs", 5, b"")),
        ("enqueue 123 5 hi", Enqueue("", 123, b"5 hi")),  # a numeric first argument is the key (as the original)
        ("enqueue q 1 привет", Enqueue("q", 1, "привет".encode())),
        ("ENQUEUE q 1 A", Enqueue("q", 1, b"A")),
        ("enqueue q 9223372036854775807 max", Enqueue("q", 2**63 - 1, b"max")),
        ("dequeue", Dequeue("")),
        ("dequeue jobs", Dequeue("jobs")),
        ("count", Count("")),
        ("count jobs", Count("jobs")),
        ("create jobs", Create("jobs")),
        ("create jobs WITHMAXSIZE 100", Create("jobs", max_queue_size=100)),
        ("create jobs withmaxpayload 65536 withmaxsize 0", Create("jobs", max_queue_size=0, max_payload_size=65536)),
        ("create r WITHPRIORITYRANGE -10 10 TYPE qa", Create("r", "qa", priority_range=(-10, 10))),
        ("create r TYPE QA WITHPRIORITYRANGE 5 5", Create("r", "qa", priority_range=(5, 5))),
        ("create h TYPE h4 WITHPRIORITYRANGE 1 2", Create("h", "h4", priority_range=(1, 2))),
        ("delete jobs", Delete("jobs")),
        ("schedule jobs 30 5 later on", Schedule("jobs", 30.0, 5, b"later on")),
        ("schedule jobs 0.5 -1", Schedule("jobs", 0.5, -1, b"")),
        ("peek", Peek("")),
        ("peek jobs", Peek("jobs")),
        ("peek jobs 3", Peek("jobs", 3)),
        ("peek 7", Peek("", 7)),
        ("create jobs MAXDELIVERIES 5 DEADLETTER dead", Create("jobs", delivery=(
            ("max_deliveries", 5), ("dead_letter_queue", "dead")))),
        ("create jobs RETRYDELAY 1.5 BACKOFF Exponential RETRYMAXDELAY 60 DEDUPWINDOW 0", Create("jobs", delivery=(
            ("retry_delay", 1.5), ("retry_backoff", "exponential"), ("retry_max_delay", 60.0),
            ("dedup_window", 0.0)))),
        ("list", ListQueues()),
        ("help", Help()),
        ("exit", Exit()),
        ("quit", Exit()),
    ],
)
def test_parse(line: str, command: object) -> None:
    assert parse(line) == command


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("frobnicate", "unknown command 'frobnicate'"),
        ("enqueue", "usage: enqueue"),
        ("enqueue jobs", "usage: enqueue"),
        ("enqueue jobs five x", "KEY must be an integer"),
        ("enqueue 9223372036854775808", "usage: enqueue"),  # not an Int64: taken as a queue name, then no key
        ("enqueue q 9223372036854775808 x", "KEY must be an integer"),
        ("dequeue a b", "usage: dequeue"),
        ("count a b", "usage: count"),
        ("delete", "usage: delete QUEUE"),
        ("delete a b", "usage: delete QUEUE"),
        ("list all", "no arguments"),
        ("create", "usage: create"),
        ("create q WITHMAXSIZE", "needs a number"),
        ("create q WITHMAXSIZE -1", "between 0 and"),
        ("create q WITHMAXSIZE 2147483648", "between 0 and"),
        ("create q WITHMAXPAYLOAD lots", "between 0 and"),
        ("create q WITHPRIORITYRANGE 1", "two numbers"),
        ("create q WITHPRIORITYRANGE a b", "two integers"),
        ("create q WITHPRIORITYRANGE 5 1", "max 1 is below min 5"),
        ("create q TYPE heap", "TYPE must be h4 or qa"),
        ("create q TYPE qa", "TYPE qa needs WITHPRIORITYRANGE"),
        ("create q WITHMAXSIZE 1 WITHMAXSIZE 2", "given twice"),
        ("create q SIZE 1", "unknown option 'SIZE'"),
        ("schedule jobs 5", "usage: schedule"),
        ("schedule jobs soon 5 x", "SECONDS must be a number"),
        ("schedule jobs -1 5 x", "SECONDS must be a number"),
        ("schedule jobs 5 five x", "KEY must be an integer"),
        ("peek a b c", "usage: peek"),
        ("peek a b", "N must be a number"),
        ("peek a 0", "N must be between"),
        ("create q MAXDELIVERIES 3", "go together"),
        ("create q MAXDELIVERIES 0 DEADLETTER d", "MAXDELIVERIES needs a number"),
        ("create q BACKOFF linear", "BACKOFF must be"),
        ("create q RETRYDELAY", "needs a value"),
    ],
)
def test_parse_errors(line: str, message: str) -> None:
    with pytest.raises(ConsoleSyntaxError, match=message):
        parse(line)


def test_help_lists_every_command() -> None:
    for verb in ("enqueue", "schedule", "dequeue", "peek", "count", "create", "delete", "list", "help", "exit"):
        assert verb in HELP


def test_output_formats() -> None:
    assert format_payload(b"caf\xc3\xa9") == "café"
    assert format_payload(b"\xff") == "\\xff"
    assert format_queues([]) == "no queues"
    table = format_queues([
        QueueSummary("jobs", 12, 100, None, (-1, 1), {}),
        QueueSummary("", 0, None, None, None, {}),
    ])
    assert table.splitlines() == [
        "QUEUE         COUNT  LIMITS",
        '"" (default)      0  -',
        "jobs             12  max-queue-size=100 priority-range=-1..1",
    ]


# --- the loop against a fake node -------------------------------------------------------------------------------

@pytest.fixture
def node() -> Iterator[FakeNode]:
    cluster = FakeCluster()
    yield cluster.add_node()
    cluster.close()


def console(node: FakeNode, script: str, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    status = main(["-e", node.endpoint, "-t", "3", *argv], stdin=io.StringIO(script), stdout=out)
    return status, out.getvalue()


@pytest.mark.timeout(30)
def test_a_session(node: FakeNode) -> None:
    status, output = console(node, "\n".join([
        "create jobs WITHMAXSIZE 2",
        "enqueue jobs 5 hello world",
        "enqueue jobs 1 first",
        "enqueue jobs 1 third",
        "count jobs",
        "dequeue jobs",
        "list",
        "dequeue",
        "delete jobs",
        "bogus",
        "count nowhere",
        "exit",
        "count",  # never reached
    ]) + "\n")
    assert output.splitlines() == [
        "ok",
        "ok",
        "ok",
        "error: the queue is full (max queue size 2)",
        "2",
        "key 1 (id 2): first",
        "QUEUE         COUNT  LIMITS",
        '"" (default)      0  -',
        "jobs              1  max-queue-size=2",
        'queue "" (default) is empty',
        "ok",
        "error: unknown command 'bogus'; type 'help' for the list of commands",
        "error: the queue does not exist (error 2)",
        ]
    assert status == 1


@pytest.mark.timeout(30)
def test_one_command_from_the_command_line(node: FakeNode) -> None:
    assert console(node, "", "count") == (0, "0\n")
    assert console(node, "", "enqueue", "5", "hi") == (0, "ok\n")
    assert console(node, "", "count", "missing")[0] == 1
    assert console(node, "", "nonsense")[0] == 1


@pytest.mark.timeout(30)
def test_unreachable_cluster_is_one_line() -> None:
    out = io.StringIO()
    status = main(["-e", "127.0.0.1:1", "-t", "0.3", "count"], stdin=io.StringIO(""), stdout=out)
    assert status == 1
    assert out.getvalue().startswith("error: no leader reachable")
    assert len(out.getvalue().splitlines()) == 1


def test_bad_endpoint_is_one_line() -> None:
    out = io.StringIO()
    assert main(["-e", "nohost", "count"], stdin=io.StringIO(""), stdout=out) == 2
    assert out.getvalue() == (
        "error: bad endpoint: 'nohost' has no port; accepted: host:port or [ipv6]:port with port 1..65535\n")


@given(st.lists(st.sampled_from(["enqueue", "dequeue", "count", "create", "delete", "list", "help", "exit",
                                 "WITHMAXSIZE", "WITHMAXPAYLOAD", "WITHPRIORITYRANGE", "TYPE", "qa", "h4", "q",
                                 "-1", "0", "7", "99999999999999999999", "x"]) | st.text(), max_size=8))
def test_parse_never_fails_with_anything_but_a_syntax_error(words: list[str]) -> None:
    try:
        parse(" ".join(words))
    except ConsoleSyntaxError as exc:
        assert str(exc)

