"""Configuration: sources and precedence, every value format, one-line errors, the shipped file, --help."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from taskflux import values
from taskflux.client import TaskFluxClient
from taskflux.client import connection as client_connection
from taskflux.config import (
    OPTIONS,
    Config,
    ConfigError,
    HelpRequested,
    format_endpoint,
    help_text,
    load_config,
    parse_duration,
    parse_endpoint,
    parse_size,
)
from tests.support.cluster import HeldPorts, wait_until

ROOT = Path(__file__).resolve().parent.parent
PEERS = ["--cluster-peers", "10.0.0.1:5000 10.0.0.2:5000 10.0.0.3:5000"]


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "taskflux.yaml"
    path.write_text(text)
    return str(path)


def error_of(argv: list[str], environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(argv, environ or {})
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- sources and precedence ----------------------------------------------------------------------------


def test_defaults_follow_the_original() -> None:
    config = load_config(["--cluster-peers", "a:5000"], {})
    assert config.cluster_node_id == 0
    assert config.cluster_listen_host == "localhost"
    assert config.cluster_listen_port == 5000
    assert config.tcp_adapter_listen_host == "0.0.0.0"
    assert config.tcp_adapter_listen_port == 2602
    assert config.tcp_adapter_backlog_size == 128
    assert config.tcp_adapter_idle_timeout == 60.0
    assert config.tcp_adapter_max_connections == 1024
    assert config.http_enabled and config.grpc_enabled
    assert config.http_listen_address == ("localhost", 1606)
    assert config.grpc_listen_address == ("localhost", 1607)
    assert config.cluster_request_timeout == config.client_request_timeout == 5.0
    assert config.data_directory == "/var/lib/tflux"
    assert (config.log_file_soft_limit, config.log_file_hard_limit) == (16 << 20, 32 << 20)
    assert config.snapshot_creation_segments_threshold == 5
    assert config.replication_max_send_size == 1 << 20
    assert config.max_payload_size == 16 << 20
    assert (config.raft_tick_interval, config.raft_election_timeout, config.raft_heartbeat_interval) == (0.05, 0.5, 0.1)
    assert (config.raft_election_ticks, config.raft_heartbeat_ticks) == (10, 2)
    assert config.log_level == logging.INFO and config.log_format == "json"
    assert config.tcp_adapter_advertise_address == ("a", 2602)
    assert config.client_endpoint == "a:2602"


def test_precedence_command_line_over_environment_over_file_over_default(tmp_path: Path) -> None:
    path = write(
        tmp_path, "cluster_peers: [a, b, c]\ncluster_node_id: 1\ntcp_adapter_listen_port: 3000\nlog_level: Error\n"
    )
    environ = {"TASKFLUX_CLUSTER_NODE_ID": "2", "TASKFLUX_TCP_ADAPTER_LISTEN_PORT": "3001"}
    config = load_config(["-c", path, "--tcp-adapter-listen-port", "3002"], environ)
    assert config.cluster_node_id == 2  # environment over file
    assert config.tcp_adapter_listen_port == 3002  # command line over environment and file
    assert config.log_level == logging.ERROR  # file over default
    assert config.tcp_adapter_backlog_size == 128  # default
    assert config.sources["cluster_node_id"] == "environment variable TASKFLUX_CLUSTER_NODE_ID"
    assert config.sources["tcp_adapter_listen_port"] == "command-line option --tcp-adapter-listen-port"
    assert config.sources["log_level"].startswith("config file")
    assert config.sources["tcp_adapter_backlog_size"] == "default"


def test_every_option_from_every_source(tmp_path: Path) -> None:
    values = {
        "cluster_peers": "h0:6000 h1:6001",
        "cluster_node_id": "1",
        "cluster_join": "true",
        "cluster_id": "prod-eu",
        "cluster_listen_host": "0.0.0.0",
        "cluster_listen_port": "7001",
        "cluster_request_timeout": "2s",
        "client_request_timeout": "3s",
        "http_enabled": "false",
        "http_listen_address": "h1:8080",
        "http_advertise_address": "rest.example:80",
        "grpc_enabled": "false",
        "grpc_listen_address": "h1:8081",
        "tcp_adapter_listen_host": "127.0.0.1",
        "tcp_adapter_listen_port": "9000",
        "tcp_adapter_advertise_address": "public.example:9000",
        "tcp_adapter_backlog_size": "64",
        "tcp_adapter_idle_timeout": "00:02:00",
        "tcp_adapter_handshake_timeout": "3s",
        "tcp_adapter_max_connections": "10",
        "max_payload_size": "1MiB",
        "data_directory": "/tmp/x",
        "log_file_soft_limit": "1KiB",
        "log_file_hard_limit": "2KiB",
        "snapshot_creation_segments_threshold": "0",
        "fsync_inline_min_batch": "16",
        "replication_max_send_size": "0",
        "raft_tick_interval": "10ms",
        "raft_election_timeout": "200ms",
        "raft_heartbeat_interval": "20ms",
        "log_level": "Verbose",
        "log_format": "text",
    }
    assert set(values) == {option.key for option in OPTIONS}
    expected = Config(
        cluster_peers=(("h0", 6000), ("h1", 6001)),
        cluster_node_id=1,
        cluster_join=True,
        cluster_id="prod-eu",
        cluster_listen_host="0.0.0.0",
        cluster_listen_port=7001,
        cluster_request_timeout=2.0,
        client_request_timeout=3.0,
        http_enabled=False,
        http_listen_address=("h1", 8080),
        http_advertise_address=("rest.example", 80),
        grpc_enabled=False,
        grpc_listen_address=("h1", 8081),
        tcp_adapter_listen_host="127.0.0.1",
        tcp_adapter_listen_port=9000,
        tcp_adapter_advertise_address=("public.example", 9000),
        tcp_adapter_backlog_size=64,
        tcp_adapter_idle_timeout=120.0,
        tcp_adapter_handshake_timeout=3.0,
        tcp_adapter_max_connections=10,
        max_payload_size=1 << 20,
        data_directory="/tmp/x",
        log_file_soft_limit=1024,
        log_file_hard_limit=2048,
        snapshot_creation_segments_threshold=0,
        fsync_inline_min_batch=16,
        replication_max_send_size=0,
        raft_tick_interval=0.01,
        raft_election_timeout=0.2,
        raft_heartbeat_interval=0.02,
        log_level=5,
        log_format="text",
    )
    from_cli = load_config([arg for key, value in values.items() for arg in (f"--{key.replace('_', '-')}", value)], {})
    from_cli_eq = load_config([f"--{key.replace('_', '-')}={value}" for key, value in values.items()], {})
    from_env = load_config([], {f"TASKFLUX_{key.upper()}": value for key, value in values.items()})
    path = write(tmp_path, "".join(f"{key}: {value!r}\n" for key, value in values.items()))
    from_file = load_config(["--config", path], {})
    assert from_cli == from_cli_eq == from_env == from_file == expected
    assert from_cli.raft_config().replication_max_send_size == 1  # 0 = one entry per message


def test_environment_and_command_line_names_ignore_case_and_separators() -> None:
    config = load_config(["--ClusterPeers", "a b"], {"TASKFLUX_CLUSTERNODEID": "1", "OTHER": "x"})
    assert config.cluster_node_id == 1
    assert config.cluster_peers == (("a", 5000), ("b", 5000))


def test_last_command_line_value_wins_and_bare_boolean_flag() -> None:
    config = load_config(["--cluster-peers=a", "--log-format", "text", "--log-format=json", "--http-enabled"], {})
    assert config.log_format == "json" and config.http_enabled
    config = load_config(["--grpc-enabled", "False", "--cluster-peers=a"], {})
    assert not config.grpc_enabled


def test_derived_defaults_follow_the_own_peer_entry() -> None:
    config = load_config(["--cluster-peers", "a:5000 [::1]:5001", "--cluster-node-id", "1"], {})
    assert config.cluster_listen_port == 5001
    assert config.tcp_adapter_advertise_address == ("::1", 2602)
    assert config.client_endpoint == "[::1]:2602"
    assert config.cluster_size == 2


def test_peers_as_yaml_list_or_string(tmp_path: Path) -> None:
    listed = load_config(["-c", write(tmp_path, "cluster_peers:\n  - a:1\n  - b\n")], {})
    spaced = load_config(["-c", write(tmp_path, "cluster_peers: 'a:1   b'\n")], {})
    assert listed.cluster_peers == spaced.cluster_peers == (("a", 1), ("b", 5000))


def test_empty_file_and_raft_config(tmp_path: Path) -> None:
    config = load_config(["-c", write(tmp_path, "# nothing\n"), *PEERS, "--cluster-node-id", "2"], {})
    raft = config.raft_config()
    assert (raft.node_id, raft.cluster_size, raft.election_ticks, raft.heartbeat_ticks) == (2, 3, 10, 2)
    assert config.cluster_max_frame_bytes >= config.replication_max_send_size + config.max_payload_size
    biggest = load_config([*PEERS, "--max-payload-size", "512MiB", "--replication-max-send-size", "256MiB"], {})
    assert biggest.cluster_max_frame_bytes < 2**31  # what a cluster frame header can carry


# --- value formats -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5s", 5.0),
        ("500ms", 0.5),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1d", 86400.0),
        ("1.5s", 1.5),
        ("5", 5.0),
        ("0.25", 0.25),
        ("00:00:05", 5.0),
        ("00:01", 60.0),
        ("01:02:03", 3723.0),
        ("1.00:00:00", 86400.0),
        ("00:00:01.5", 1.5),
        ("00:00:00.0000001", 1e-7),
        (" 5S ", 5.0),
        (7, 7.0),
        (0.5, 0.5),
    ],
)
def test_durations(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "5x", "-5s", "-00:00:05", "24:00:00", "00:60:00", "s", "5 s", "1:2:3:4", True, None, []]
)
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError, match="accepted:"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"), [(1, 1), ("1024", 1024), ("1KiB", 1024), ("16MiB", 16 << 20), ("1gib", 1 << 30), ("7B", 7)]
)
def test_sizes(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["1MB", "1.5MiB", "-1", "", "x", True, 1.0])
def test_bad_sizes(text: object) -> None:
    with pytest.raises(ValueError, match="accepted:"):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "endpoint"),
    [
        ("host", ("host", 5000)),
        ("host:1", ("host", 1)),
        ("10.0.0.1:65535", ("10.0.0.1", 65535)),
        ("[::1]:5000", ("::1", 5000)),
        ("[fe80::1]", ("fe80::1", 5000)),
        ("node-1.example.com:7", ("node-1.example.com", 7)),
    ],
)
def test_endpoints(text: str, endpoint: tuple[str, int]) -> None:
    assert parse_endpoint(text, 5000) == endpoint
    assert parse_endpoint(format_endpoint(*endpoint), 1) == endpoint


@pytest.mark.parametrize(
    "text", ["", "host:0", "host:65536", "host:x", "::1", "[::1", "[::1]x", "[nope]:1", "a b:1", "-a"]
)
def test_bad_endpoints(text: str) -> None:
    with pytest.raises(ValueError, match="accepted:"):
        parse_endpoint(text, 5000)


def test_port_is_required_where_there_is_no_default() -> None:
    with pytest.raises(ValueError, match="has no port"):
        parse_endpoint("host", None)


@pytest.mark.parametrize(
    ("text", "level"),
    [
        ("Verbose", 5),
        ("debug", logging.DEBUG),
        ("INFORMATION", logging.INFO),
        ("info", logging.INFO),
        ("Warning", logging.WARNING),
        ("warn", logging.WARNING),
        ("error", logging.ERROR),
        ("Fatal", logging.CRITICAL),
        ("CRITICAL", logging.CRITICAL),
        ("0", 5),
        ("5", logging.CRITICAL),
    ],
)
def test_log_levels(text: str, level: int) -> None:
    assert load_config(["--cluster-peers=a", "--log-level", text], {}).log_level == level


@pytest.mark.parametrize(("text", "value"), [("true", True), ("TRUE", True), ("False", False)])
def test_booleans(text: str, value: bool) -> None:
    assert load_config(["--cluster-peers=a", f"--http-enabled={text}"], {}).http_enabled is value


def test_yaml_colon_durations_are_not_base_60(tmp_path: Path) -> None:
    text = "cluster_peers: [a]\ncluster_request_timeout: 1:30\nclient_request_timeout: 10:00:00\n"
    text += "tcp_adapter_idle_timeout: 00:00:01.5\nraft_election_timeout: 1:00:00.0\n"
    config = load_config(["-c", write(tmp_path, text)], {})
    assert config.cluster_request_timeout == 5400.0
    assert config.client_request_timeout == 36000.0
    assert config.tcp_adapter_idle_timeout == 1.5
    assert config.raft_election_timeout == 3600.0


def test_yaml_native_types(tmp_path: Path) -> None:
    path = write(
        tmp_path, "cluster_peers: [a]\nhttp_enabled: false\ncluster_request_timeout: 2\nmax_payload_size: 10\n"
    )
    config = load_config(["-c", path], {})
    assert (config.http_enabled, config.cluster_request_timeout, config.max_payload_size) == (False, 2.0, 10)


# --- errors: one line, the key, the value, what is accepted, the source --------------------------------


@pytest.mark.parametrize(
    ("argv", "environ", "expected"),
    [
        ([], {}, ["cluster_peers: missing", "accepted:", "TASKFLUX_CLUSTER_PEERS"]),
        (
            [*PEERS, "--cluster-node-id", "3"],
            {},
            [
                "cluster_node_id: 3 is not a valid node id; accepted: 0..2 (the index in cluster_peers)",
                "--cluster-node-id",
            ],
        ),
        (
            PEERS,
            {"TASKFLUX_CLUSTER_NODE_ID": "-1"},
            ["cluster_node_id: '-1'", "accepted: 0 or more", "TASKFLUX_CLUSTER_NODE_ID"],
        ),
        ([*PEERS, "--cluster-listen-port", "abc"], {}, ["cluster_listen_port: 'abc' is not an integer", "accepted:"]),
        (
            [*PEERS, "--cluster-listen-port", "70000"],
            {},
            ["cluster_listen_port: '70000' is out of range; accepted: 1..65535"],
        ),
        (
            [*PEERS, "--log-file-soft-limit", "2MiB", "--log-file-hard-limit", "1MiB"],
            {},
            ["log_file_hard_limit: 1048576 is below log_file_soft_limit", "accepted: at least"],
        ),
        (
            [*PEERS, "--raft-heartbeat-interval", "500ms"],
            {},
            ["raft_heartbeat_interval: 0.5s is not below raft_election_timeout", "accepted:"],
        ),
        (
            [*PEERS, "--raft-election-timeout", "120ms"],
            {},
            ["raft_election_timeout: 0.12s is not a whole multiple of raft_tick_interval", "accepted:"],
        ),
        (
            [*PEERS, "--raft-tick-interval", "0s"],
            {},
            ["raft_tick_interval: '0s' is not a positive duration", "accepted:"],
        ),
        (
            [*PEERS, "--snapshot-creation-segments-threshold", "-1"],
            {},
            ["snapshot_creation_segments_threshold: '-1' is out of range; accepted: 0.."],
        ),
        (
            [*PEERS, "--http-listen-address", "bad host:1"],
            {},
            ["http_listen_address: 'bad host:1' is not an address; accepted:"],
        ),
        (["--cluster-peers", "a:1 a:1"], {}, ["cluster_peers: a:1 is listed twice; accepted:"]),
        (["--cluster-peers", ""], {}, ["cluster_peers: the peer list is empty; accepted:"]),
        ([*PEERS, "--http-enabled=yes"], {}, ["http_enabled: 'yes' is not a boolean; accepted: true, false"]),
        ([*PEERS, "--log-level", "loud"], {}, ["log_level: 'loud' is not a log level; accepted: Verbose"]),
        ([*PEERS, "--log-format", "xml"], {}, ["log_format: 'xml' is not a log format; accepted: json, text"]),
        (
            [*PEERS, "--max-payload-size", "0"],
            {},
            ["max_payload_size: '0' is out of range; accepted: 1 byte..512MiB"],
        ),
        (
            [*PEERS, "--tcp-adapter-idle-timeout", "forever"],
            {},
            ["tcp_adapter_idle_timeout: 'forever' is not a duration; accepted:"],
        ),
        (
            [*PEERS, "--tcp-adapter-advertise-address", "[::]:1"],
            {},
            ["tcp_adapter_advertise_address: [::]:1 is a wildcard"],
        ),
        (
            [*PEERS, "--tcp-adapter-advertise-address", "host"],
            {},
            ["tcp_adapter_advertise_address: 'host' has no port"],
        ),
        ([*PEERS, "--data-directory", ""], {}, ["data_directory: '' is not a directory path; accepted:"]),
        (
            [*PEERS, "--cluster-node-idd", "1"],
            {},
            ["--cluster-node-idd: unknown option in the command line (did you mean cluster_node_id?); accepted:"],
        ),
        ([*PEERS, "--cluster-node-id"], {}, ["--cluster-node-id: missing value; accepted:"]),
        ([*PEERS, "stray"], {}, ["stray: unexpected argument; accepted:"]),
        (["-c"], {}, ["-c: missing value"]),
        (["-x", *PEERS], {}, ["-x: unexpected argument; accepted:"]),
        ([*PEERS, "--log-level", "--log-format", "text"], {}, ["--log-level: missing value; accepted:"]),
    ],
)
def test_errors_are_one_line_naming_key_value_and_accepted(
    argv: list[str], environ: dict[str, str], expected: list[str]
) -> None:
    message = error_of(argv, environ)
    for part in expected:
        assert part in message, message


# --- unknown TASKFLUX_* variables: one warning line, never an exit ---------------------------------------

# What Kubernetes puts into every pod of a namespace with a Service named "taskflux" (ports 2602 and 1606).
KUBERNETES_SERVICE_VARIABLES = {
    "TASKFLUX_SERVICE_HOST": "10.96.0.17",
    "TASKFLUX_SERVICE_PORT": "2602",
    "TASKFLUX_SERVICE_PORT_CLIENT": "2602",
    "TASKFLUX_PORT": "tcp://10.96.0.17:2602",
    "TASKFLUX_PORT_2602_TCP": "tcp://10.96.0.17:2602",
    "TASKFLUX_PORT_2602_TCP_PROTO": "tcp",
    "TASKFLUX_PORT_2602_TCP_PORT": "2602",
    "TASKFLUX_PORT_2602_TCP_ADDR": "10.96.0.17",
    "TASKFLUX_PORT_1606_TCP_ADDR": "10.96.0.17",
}


def test_unknown_environment_variables_are_one_warning_line_not_an_error() -> None:
    environ = {**KUBERNETES_SERVICE_VARIABLES, "TASKFLUX_CLUSTER_NODE_IDD": "secret-7", "TASKFLUX_CLUSTER_NODE_ID": "1"}
    config = load_config(PEERS, environ)
    assert config.cluster_node_id == 1  # the real options still apply
    (warning,) = config.warnings
    assert "\n" not in warning and len(warning) < 1000
    for name in [*KUBERNETES_SERVICE_VARIABLES, "TASKFLUX_CLUSTER_NODE_IDD"]:
        assert name in warning, name
    assert "TASKFLUX_CLUSTER_NODE_IDD (did you mean TASKFLUX_CLUSTER_NODE_ID?)" in warning
    assert warning.count("did you mean") == 1  # no made-up suggestion for Kubernetes' own variables
    assert "Kubernetes" in warning
    assert "secret-7" not in warning and "10.96.0.17" not in warning  # names only: values may be secrets


@pytest.mark.parametrize(
    ("name", "meant"),
    [("TASKFLUX_NODE_ID", "TASKFLUX_CLUSTER_NODE_ID"), ("TASKFLUX_DATA_DIR", "TASKFLUX_DATA_DIRECTORY"),
     ("TASKFLUX_LOG_LEVLE", "TASKFLUX_LOG_LEVEL")],
)
def test_near_misses_in_the_environment_get_a_suggestion(name: str, meant: str) -> None:
    (warning,) = load_config(PEERS, {name: "1"}).warnings
    assert f"{name} (did you mean {meant}?)" in warning


def test_no_warning_when_every_variable_is_an_option() -> None:
    assert load_config(PEERS, {"TASKFLUX_CLUSTERNODEID": "2", "OTHER_PORT": "1"}).warnings == ()


@pytest.mark.timeout(90)
def test_a_node_starts_serves_and_logs_the_warning_beside_kubernetes_variables(tmp_path: Path) -> None:
    """A real node process in an environment like a Kubernetes pod's: it starts, answers /health/ready and
    logs one JSON warning naming the foreign variables, then stops cleanly on SIGTERM."""
    held = HeldPorts(4)
    cluster, client, http, grpc = held.ports
    held.release()
    environ = {key: value for key, value in os.environ.items() if not key.startswith("TASKFLUX_")}
    environ.update(KUBERNETES_SERVICE_VARIABLES, TASKFLUX_NODE_ID="0", TASKFLUX_DATA_DIRECTORY=str(tmp_path / "data"),
                   PYTHONUNBUFFERED="1")
    argv = [sys.executable, str(ROOT / "taskflux.py"), "-c", str(ROOT / "config.yaml"),
            f"--cluster-peers=127.0.0.1:{cluster}", f"--tcp-adapter-listen-port={client}",
            f"--http-listen-address=127.0.0.1:{http}", f"--grpc-listen-address=127.0.0.1:{grpc}"]
    log_path = tmp_path / "node.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, env=environ)
    try:
        wait_until(lambda: _ready(http, process, log_path), 30, "the node to be ready")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    warnings = [line for line in lines if "TASKFLUX_PORT_2602_TCP_ADDR" in line["msg"]]
    assert len(warnings) == 1 and warnings[0]["level"] == "warning", lines
    assert "TASKFLUX_NODE_ID (did you mean TASKFLUX_CLUSTER_NODE_ID?)" in warnings[0]["msg"]
    assert lines[-1]["msg"] == "stopped"


def _ready(http_port: int, process: subprocess.Popen[bytes], log_path: Path) -> bool:
    assert process.poll() is None, f"the node exited with {process.returncode}:\n{log_path.read_text()}"
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/health/ready", timeout=2) as answer:
            return bool(answer.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def test_errors_name_the_source(tmp_path: Path) -> None:
    path = write(tmp_path, "cluster_peers: [a]\ncluster_listen_port: nope\n")
    assert "(from config file" in error_of(["-c", path])
    assert "(from environment variable TASKFLUX_CLUSTER_LISTEN_PORT)" in error_of(
        ["-c", path], {"TASKFLUX_CLUSTER_LISTEN_PORT": "x"}
    )
    assert "(from command-line option --cluster-listen-port)" in error_of(["-c", path, "--cluster-listen-port=y"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cluster_peers: [a]\nclusterNodeId: 1\n", "clusterNodeId: unknown option in config file"),
        ("cluster_peers: [a]\ncluster_node_idd: 1\n", "did you mean cluster_node_id?"),
        ("- a\n- b\n", "the top level is a list; accepted: a mapping"),
        ("cluster_peers: [a\n", "at line"),
        ("cluster_peers: {a: 1}\n", "cluster_peers: {'a': 1} is not a peer list; accepted:"),
        ("cluster_peers: [a]\ncluster_node_id: true\n", "cluster_node_id: True is not an integer"),
        ("cluster_peers: [a]\ncluster_node_id: 1.5\n", "cluster_node_id: 1.5 is not an integer"),
    ],
)
def test_file_errors(tmp_path: Path, text: str, expected: str) -> None:
    message = error_of(["-c", write(tmp_path, text)])
    assert expected in message, message


def test_missing_file() -> None:
    assert "cannot be read" in error_of(["-c", "/nonexistent/taskflux.yaml"])


def test_long_values_are_shortened() -> None:
    message = error_of([*PEERS, "--log-level", "x" * 1000])
    assert len(message) < 300


# --- the shipped file and --help -----------------------------------------------------------------------


def test_shipped_config_yaml_loads() -> None:
    config = load_config(["-c", str(ROOT / "config.yaml")], {})
    assert config.cluster_peers == (("127.0.0.1", 5000),)
    assert config.cluster_node_id == 0
    assert (config.tcp_adapter_listen_host, config.tcp_adapter_listen_port) == ("127.0.0.1", 2602)
    assert config.http_listen_address == ("127.0.0.1", 1606)
    assert config.grpc_listen_address == ("127.0.0.1", 1607)
    assert config.data_directory == "./data"
    assert config.client_endpoint == "127.0.0.1:2602"


def test_help_lists_every_option() -> None:
    with pytest.raises(HelpRequested) as caught:
        load_config([*PEERS, "--help"], {})
    text = caught.value.text
    assert text == help_text()
    for option in OPTIONS:
        assert option.cli in text and option.env in text and f"default: {option.describe_default()}" in text
    with pytest.raises(HelpRequested):
        load_config(["-h", "--bogus"], {})


def test_docs_list_every_option() -> None:
    docs = (ROOT / "docs" / "configuration.md").read_text()
    for option in OPTIONS:
        assert f"`{option.key}`" in docs and f"`{option.env}`" in docs and f"`{option.cli}`" in docs, option.key


@pytest.mark.timeout(90)
def test_help_of_the_node_lists_every_option_with_its_description_and_default() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "taskflux.py"), "--help"], cwd=ROOT, capture_output=True,
                            text=True, check=True, timeout=60)
    assert result.stdout.strip() == help_text().strip()
    flowing = " ".join(result.stdout.split())  # the help of an option is wrapped over several lines
    for option in OPTIONS:
        assert f"{option.cli} " in flowing and " ".join(option.help.split()) in flowing, option.key
        assert f"default: {option.describe_default()}" in flowing and option.env in flowing, option.key
    assert "-c PATH, --config PATH" in result.stdout


def test_client_library_and_configuration_parse_endpoints_with_one_parser() -> None:
    assert client_connection.parse_endpoint is values.parse_endpoint
    with pytest.raises(ValueError, match="bad endpoint: 'a b:1' is not an address"):
        TaskFluxClient(["a b:1"])


def test_help_from_a_process_exits_zero() -> None:
    code = (
        "import sys\nfrom taskflux.config import load_config, HelpRequested\n"
        "try:\n    load_config(sys.argv[1:], {})\nexcept HelpRequested as h:\n    print(h.text)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert "--cluster-node-id" in result.stdout


def test_three_nodes_on_one_machine_from_the_shipped_file() -> None:
    environ = {
        "TASKFLUX_CLUSTER_PEERS": "127.0.0.1:5000 127.0.0.1:5001 127.0.0.1:5002",
        "TASKFLUX_CLUSTER_NODE_ID": "1",
    }
    argv = ["-c", str(ROOT / "config.yaml"), "--tcp-adapter-listen-port", "2612", "--data-directory", "./data/node1"]
    config = load_config(argv, environ)
    assert (config.cluster_listen_host, config.cluster_listen_port) == ("127.0.0.1", 5001)
    assert config.client_endpoint == "127.0.0.1:2612"
    assert config.cluster_size == 3


def test_the_http_advertise_address_defaults_to_a_dialable_listen_address() -> None:
    peers = ["--cluster-peers", "node-a:5000 node-b:5000", "--cluster-node-id", "1"]
    assert load_config([*peers, "--http-listen-address", "0.0.0.0:1616"], {}).http_advertise_address == (
        "node-b", 1616)
    assert load_config([*peers, "--http-listen-address", "10.1.2.3:1606"], {}).http_advertise_address == (
        "10.1.2.3", 1606)
    with pytest.raises(ConfigError, match=r"http_advertise_address: 0\.0\.0\.0:1 is a wildcard"):
        load_config([*peers, "--http-advertise-address", "0.0.0.0:1"], {})


def test_a_joining_node_needs_no_cluster_peers_and_knows_no_membership() -> None:
    config = load_config(["--cluster-join", "true", "--cluster-node-id", "7", "--cluster-listen-host", "10.0.0.7",
                          "--cluster-listen-port", "5007"], {})
    assert config.cluster_peers == () and config.cluster_node_id == 7
    assert config.tcp_adapter_advertise_address == ("10.0.0.7", 2602)
    raft = config.raft_config()
    assert raft.node_id == 7 and raft.bootstrap_members.voters == frozenset()
    with pytest.raises(ConfigError, match="cluster_peers: missing"):
        load_config(["--cluster-node-id", "7"], {})


def test_the_initial_membership_is_cluster_peers_with_their_addresses() -> None:
    members = load_config(["--cluster-peers", "a:5000 b:5001 c"], {}).raft_config().bootstrap_members
    assert members.voters == {0, 1, 2} and members.next_id == 3
    assert [m.address for m in members.members] == ["a:5000", "b:5001", "c:5000"]
