"""The operator's kit: the systemd unit, the production config example, the Dockerfile, docker-compose.yaml.

Each file is parsed and checked against what the node really does: configurations are fed to
``taskflux.config.load_config`` exactly as the service or container would see them, the health checks are
run against a local HTTP server, a real node is started with the image's command line and environment (and
must become ready, log JSON lines and stop with status 0 on SIGTERM), the unit is checked by
``systemd-analyze`` when it is installed and the image is built when a Docker daemon answers (``slow``).
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from taskflux.config import OPTIONS, Config, load_config
from taskflux.server import main as server_main
from tests.support.cluster import HeldPorts

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "scripts" / "taskflux.service"
EXAMPLE = REPO / "scripts" / "taskflux.yaml.example"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPOSE = REPO / "docker-compose.yaml"
INSTALLATION = REPO / "docs" / "installation.md"
OPERATIONS = REPO / "docs" / "operations.md"

PORTS = {"client": 2602, "http": 1606, "grpc": 1607, "cluster": 5000}
HEALTH_PATH = "/health/ready"
IN_FLIGHT_GRACE = float(getattr(server_main, "STOP_REQUESTS_SECONDS", 2.0))  # Server.stop: in-flight requests
CONFIG_ERROR_STATUS = 2  # taskflux.server.main.main: a configuration error


# --- parsers ---------------------------------------------------------------------------------------------


def read_unit(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment of a systemd unit, in order (keys may repeat)."""
    entries: list[tuple[str, str, str]] = []
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not an assignment: {raw!r}"
        entries.append((section, key.strip(), value.strip()))
    return entries


def unit_values(entries: list[tuple[str, str, str]], key: str, section: str = "Service") -> list[str]:
    return [value for sect, k, value in entries if sect == section and k == key]


def unit_value(entries: list[tuple[str, str, str]], key: str, section: str = "Service") -> str:
    values = unit_values(entries, key, section)
    assert values, f"{UNIT.name}: [{section}] {key}= is missing"
    return values[-1]


_SYSTEMD_TIME = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|sec|min|m|h)?")
_SYSTEMD_UNITS = {"ms": 0.001, "s": 1.0, "sec": 1.0, None: 1.0, "min": 60.0, "m": 60.0, "h": 3600.0}


def systemd_seconds(text: str) -> float:
    """A systemd time span (``30s``, ``1min 30s``, ``90``) in seconds; also compose's ``30s`` / ``1m30s``."""
    text = text.strip()
    assert re.fullmatch(r"(?:\s*\d+(?:\.\d+)?\s*(?:ms|sec|s|min|m|h)?)+", text), f"not a time span: {text!r}"
    return sum(float(number) * _SYSTEMD_UNITS[unit] for number, unit in _SYSTEMD_TIME.findall(text))


def read_dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) for every instruction, with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        line = pending + stripped
        pending = ""
        if not line.strip():
            continue
        keyword, _, args = line.strip().partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    assert not pending, f"{path.name} ends inside a continued line"
    return instructions


def docker_args(instructions: list[tuple[str, str]], keyword: str) -> list[str]:
    return [args for kw, args in instructions if kw == keyword]


def exec_form(text: str) -> list[str]:
    """The JSON array of an exec-form instruction (``["python", "-c", "..."]``)."""
    value = json.loads(text)
    assert isinstance(value, list) and all(isinstance(item, str) for item in value), text
    return value


def dockerfile_env(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in docker_args(instructions, "ENV"):
        words = shlex.split(args)
        if words and "=" not in words[0]:  # the legacy form: ENV KEY value with spaces
            env[words[0]] = args.partition(" ")[2].strip()
            continue
        for word in words:
            key, sep, value = word.partition("=")
            assert sep, f"Dockerfile: ENV {args!r}"
            env[key] = value
    return env


def container_command(instructions: list[tuple[str, str]]) -> list[str]:
    """ENTRYPOINT + CMD as the container runs them (both in exec form)."""
    entrypoint = docker_args(instructions, "ENTRYPOINT")
    cmd = docker_args(instructions, "CMD")
    assert entrypoint, "Dockerfile: no ENTRYPOINT"
    return exec_form(entrypoint[-1]) + (exec_form(cmd[-1]) if cmd else [])


def workdir(instructions: list[tuple[str, str]]) -> str:
    return docker_args(instructions, "WORKDIR")[-1]


def node_argv(command: list[str], image_root: str) -> list[str]:
    """The node's own arguments from a container or unit command line, with paths under ``image_root``
    mapped into this checkout (the image's /opt/taskflux holds the same files)."""
    script = next(i for i, word in enumerate(command) if word.endswith("taskflux.py"))
    prefix = image_root.rstrip("/") + "/"
    return [str(REPO / word[len(prefix) :]) if word.startswith(prefix) else word for word in command[script + 1 :]]


def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(document, dict)
    return document


def published(service: Mapping[str, Any]) -> dict[int, int]:
    """container port → host port of a compose service's ``ports`` (short syntax ``HOST:CONTAINER``)."""
    mapping: dict[int, int] = {}
    for entry in service.get("ports", []):
        parts = str(entry).split("/")[0].split(":")
        assert len(parts) in (2, 3), f"publish an explicit host port: {entry!r}"
        mapping[int(parts[-1])] = int(parts[-2])
    return mapping


def stop_bound(config: Config) -> float:
    """How long a graceful stop of this node can take (taskflux/server/main.py: Server.stop): each follower
    tried for the handover gets two waits of 2 x raft_election_timeout, then in-flight requests get 2 s."""
    handover = (config.cluster_size - 1) * 2 * (2 * config.raft_election_timeout)
    return handover + IN_FLIGHT_GRACE


# --- the systemd unit ------------------------------------------------------------------------------------


def test_unit_runs_the_node_as_a_simple_service_of_its_own_user() -> None:
    unit = read_unit(UNIT)
    assert unit_value(unit, "Type") == "simple"  # the node does not speak sd_notify
    assert unit_value(unit, "User") == "taskflux"
    assert unit_value(unit, "Group") == "taskflux"
    command = shlex.split(unit_value(unit, "ExecStart"))
    assert command[0] == "/opt/taskflux/.venv/bin/python"
    assert command[1] == "/opt/taskflux/taskflux.py"
    assert command[2:] == ["-c", "/etc/taskflux/config.yaml"]
    assert unit_value(unit, "ConfigurationDirectory") == "taskflux"
    assert unit_value(unit, "StateDirectory") == "taskflux"
    assert "/var/lib/taskflux" in unit_value(unit, "ReadWritePaths").split()
    assert unit_value(unit, "Restart") == "on-failure"
    # A configuration error exits 2: restarting would only repeat it.
    assert str(CONFIG_ERROR_STATUS) in unit_value(unit, "RestartPreventExitStatus").split()
    assert unit_value(unit, "KillSignal") == "SIGTERM"
    assert int(unit_value(unit, "LimitNOFILE")) >= 4 * 1024  # room above tcp_adapter_max_connections' default
    assert unit_value(unit, "WantedBy", "Install") == "multi-user.target"


def test_unit_is_sandboxed_without_taking_what_the_node_needs() -> None:
    unit = read_unit(UNIT)
    expected = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "RestrictNamespaces": "yes",
        "RestrictSUIDSGID": "yes",
        "LockPersonality": "yes",
        "SystemCallArchitectures": "native",
    }
    for key, value in expected.items():
        assert unit_value(unit, key) == value, key
    assert unit_value(unit, "CapabilityBoundingSet") == ""  # no capability at all (ports are above 1024)
    assert unit_value(unit, "RestrictAddressFamilies").split() == ["AF_INET", "AF_INET6", "AF_UNIX"]
    assert "@system-service" in unit_values(unit, "SystemCallFilter")
    # Options that would break a Python server which fsyncs files and serves TCP:
    assert unit_values(unit, "PrivateNetwork") in ([], ["no"])
    assert unit_values(unit, "ReadOnlyPaths") == []  # ProtectSystem=strict + ReadWritePaths already say it
    assert not any("@sync" in value or "@network-io" in value or "@file-system" in value
                   for value in unit_values(unit, "SystemCallFilter") if value.startswith("~"))


def test_unit_gives_the_graceful_stop_time_to_finish() -> None:
    unit = read_unit(UNIT)
    timeout = systemd_seconds(unit_value(unit, "TimeoutStopSec"))
    for node_id in range(3):
        config = load_config(["-c", str(EXAMPLE)], {"TASKFLUX_CLUSTER_NODE_ID": str(node_id)})
        assert timeout > stop_bound(config) + 5, (timeout, stop_bound(config))


def test_production_example_is_accepted_for_every_node_and_matches_the_unit() -> None:
    unit = read_unit(UNIT)
    state = "/var/lib/" + unit_value(unit, "StateDirectory")
    configs = [load_config(["-c", str(EXAMPLE)], {"TASKFLUX_CLUSTER_NODE_ID": str(i)}) for i in range(3)]
    assert [config.cluster_node_id for config in configs] == [0, 1, 2]
    assert len({config.cluster_peers for config in configs}) == 1
    for config in configs:
        assert config.cluster_size == 3
        assert config.data_directory == state
        assert config.data_directory in unit_value(unit, "ReadWritePaths").split()
        assert config.cluster_listen_host == "0.0.0.0"
        assert config.tcp_adapter_listen_host == "0.0.0.0"
        assert config.http_enabled and config.http_listen_address == ("0.0.0.0", PORTS["http"])
        assert config.grpc_enabled and config.grpc_listen_address == ("0.0.0.0", PORTS["grpc"])
        assert config.tcp_adapter_listen_port == PORTS["client"]
        assert config.cluster_listen_port == PORTS["cluster"]
        assert config.log_format == "json"
        # What clients are told must be dialable: a peer's host, never the wildcard it listens on.
        assert config.tcp_adapter_advertise_address[0] == config.cluster_peers[config.cluster_node_id][0]


def _verifiable_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at an interpreter and script that exist here, so that
    ``systemd-analyze verify`` judges the unit itself rather than this machine's layout."""
    text = UNIT.read_text()
    assert "ExecStart=/opt/taskflux/.venv/bin/python /opt/taskflux/taskflux.py" in text
    text = text.replace(
        "ExecStart=/opt/taskflux/.venv/bin/python /opt/taskflux/taskflux.py",
        f"ExecStart={sys.executable} {REPO / 'taskflux.py'}",
    )
    copy = tmp_path / "taskflux.service"
    copy.write_text(text)
    return copy


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    copy = _verifiable_copy(tmp_path)
    result = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=30)
    output = result.stdout + result.stderr
    # Unknown or unparsable keys are only warnings for systemd (the key is ignored): fail on them too.
    # Lines about other units (e.g. targets missing in a container) are not this unit's problem.
    ours = [line for line in output.splitlines() if "taskflux.service" in line]
    assert result.returncode == 0 and not ours, output


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_systemd_analyze_security_rates_the_unit_well_sandboxed(tmp_path: Path) -> None:
    copy = _verifiable_copy(tmp_path)
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(copy)],
        capture_output=True, text=True, timeout=30,
    )
    match = re.search(r"Overall exposure level for taskflux\.service:\s*([\d.]+)", result.stdout)
    if match is None:
        pytest.skip(f"this systemd-analyze cannot rate a unit file offline (systemd < 250?): {result.stderr.strip()}")
    assert float(match.group(1)) < 3.0, result.stdout


# --- the Dockerfile --------------------------------------------------------------------------------------


def test_dockerfile_builds_a_slim_non_root_image_with_a_volume_and_the_four_ports() -> None:
    instructions = read_dockerfile(DOCKERFILE)
    assert docker_args(instructions, "FROM") == ["python:3.11-slim"]
    runs = docker_args(instructions, "RUN")
    assert any("pip install --no-cache-dir -r requirements.txt" in run for run in runs)

    users = docker_args(instructions, "USER")
    assert users, "the image must not run the node as root"
    final_user = users[-1].split(":")[0]
    assert final_user not in ("root", "0")
    keywords = [keyword for keyword, _ in instructions]
    assert keywords.index("USER") > max(i for i, keyword in enumerate(keywords) if keyword == "RUN")
    # The numeric user is the one created (and given the data directory) in the image.
    assert any(f"--uid {final_user}" in run for run in runs)

    volumes = [word for args in docker_args(instructions, "VOLUME") for word in args.split()]
    assert volumes == ["/var/lib/taskflux"]
    assert any(f"chown taskflux:taskflux {volumes[0]}" in run for run in runs)  # before VOLUME: volumes inherit it

    exposed = {int(port.split("/")[0]) for args in docker_args(instructions, "EXPOSE") for port in args.split()}
    assert exposed == set(PORTS.values())

    command = container_command(instructions)
    assert command[0] == "python" and command[1].endswith("taskflux.py")
    assert command[2:4] == ["-c", f"{workdir(instructions)}/config.yaml"]


def test_dockerfile_health_check_asks_for_readiness_with_urllib() -> None:
    checks = docker_args(read_dockerfile(DOCKERFILE), "HEALTHCHECK")
    assert len(checks) == 1
    options, _, command = checks[0].partition("CMD ")
    assert "--start-period=" in options and "--interval=" in options and "--timeout=" in options
    argv = exec_form(command)
    assert argv[:2] == ["python", "-c"]
    assert f"http://127.0.0.1:{PORTS['http']}{HEALTH_PATH}" in argv[2]
    assert "urllib" in argv[2] and "curl" not in command and "wget" not in command


def test_dockerfile_environment_makes_the_shipped_config_listen_everywhere_and_keep_data_in_the_volume() -> None:
    instructions = read_dockerfile(DOCKERFILE)
    env = dockerfile_env(instructions)
    assert env.get("PYTHONUNBUFFERED") == "1"
    options = {option.env for option in OPTIONS}
    taskflux_env = {key: value for key, value in env.items() if key.startswith("TASKFLUX_")}
    assert set(taskflux_env) <= options
    config = load_config(node_argv(container_command(instructions), workdir(instructions)), taskflux_env)
    volume = docker_args(instructions, "VOLUME")[0]
    assert config.data_directory == volume
    assert config.cluster_listen_host == "0.0.0.0"
    assert config.tcp_adapter_listen_host == "0.0.0.0"
    assert config.http_listen_address == ("0.0.0.0", PORTS["http"])
    assert config.grpc_listen_address == ("0.0.0.0", PORTS["grpc"])
    assert (config.tcp_adapter_listen_port, config.cluster_listen_port) == (PORTS["client"], PORTS["cluster"])


def test_dockerfile_copies_files_that_exist_and_are_not_ignored() -> None:
    ignored = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for must_ignore in (".git", ".venv", "data", "**/__pycache__", ".pytest_cache"):
        assert must_ignore in ignored
    for args in docker_args(read_dockerfile(DOCKERFILE), "COPY"):
        sources = [word for word in args.split() if not word.startswith("--")][:-1]
        for source in sources:
            assert (REPO / source).exists(), source
            assert source.rstrip("/") not in ignored, f"{source} is copied but excluded by .dockerignore"


# --- the health check, run for real ---------------------------------------------------------------------


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200
    paths: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).paths.append(self.path)
        body = b'{"ready": true}' if type(self).status == 200 else b'{"ready": false}'
        self.send_response(type(self).status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[int, type[_Health]]]:
    handler = type("Health", (_Health,), {"status": 200, "paths": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()


def _health_commands() -> dict[str, list[str]]:
    (check,) = docker_args(read_dockerfile(DOCKERFILE), "HEALTHCHECK")
    commands = {"Dockerfile": exec_form(check.partition("CMD ")[2])}
    for name, service in compose()["services"].items():
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD", f"{name}: exec form (no shell in the check)"
        commands[name] = test[1:]
    return commands


def _run_check(argv: list[str], port: int) -> int:
    assert argv[0] == "python"
    script = argv[2].replace(f"127.0.0.1:{PORTS['http']}", f"127.0.0.1:{port}")
    return subprocess.run([sys.executable, *argv[1:2], script], capture_output=True, timeout=20).returncode


def test_health_checks_pass_on_200_and_fail_on_503_or_no_answer(health_server: tuple[int, type[_Health]]) -> None:
    port, handler = health_server
    for name, argv in _health_commands().items():
        handler.status = 200
        assert _run_check(argv, port) == 0, name
        handler.status = 503
        assert _run_check(argv, port) != 0, name
    assert set(handler.paths) == {HEALTH_PATH}
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    assert _run_check(_health_commands()["Dockerfile"], closed) != 0


def test_a_node_with_the_image_configuration_becomes_ready_and_stops_gracefully(tmp_path: Path) -> None:
    """The image's command line and environment, run here as a process (ports and data directory moved so
    that nothing collides): the health check turns healthy, logs are JSON lines, SIGTERM exits 0 in time."""
    instructions = read_dockerfile(DOCKERFILE)
    held = HeldPorts(4)
    ports = dict(zip(("cluster", "client", "http", "grpc"), held.ports, strict=True))
    held.release()
    command = [
        sys.executable, str(REPO / "taskflux.py"), *node_argv(container_command(instructions), workdir(instructions)),
        f"--cluster-peers=127.0.0.1:{ports['cluster']}",
        f"--tcp-adapter-listen-port={ports['client']}",
        f"--http-listen-address=0.0.0.0:{ports['http']}",
        f"--grpc-listen-address=0.0.0.0:{ports['grpc']}",
        f"--data-directory={tmp_path / 'data'}",
    ]
    env = {key: value for key, value in os.environ.items() if not key.startswith("TASKFLUX_")}
    env.update(dockerfile_env(instructions))
    log_path = tmp_path / "node.log"
    (check,) = docker_args(instructions, "HEALTHCHECK")
    health = exec_form(check.partition("CMD ")[2])
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, env=env)
    try:
        deadline = time.monotonic() + 30
        while _run_check(health, ports["http"]) != 0:
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, f"never ready:\n{log_path.read_text()}"
            time.sleep(0.2)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        config = load_config(command[2:], {k: v for k, v in env.items() if k.startswith("TASKFLUX_")})
        assert process.wait(timeout=stop_bound(config) + 10) == 0, log_path.read_text()
        assert time.monotonic() - started < stop_bound(config) + 5
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    assert lines and all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)
    assert lines[-1]["msg"] == "stopped"


# --- docker-compose.yaml ---------------------------------------------------------------------------------


def _service_configs() -> dict[str, tuple[dict[str, Any], Config]]:
    """Every compose service with the configuration its container gets: the image's ENV defaults overlaid
    with the service's environment, and the image's command line (-c config.yaml)."""
    instructions = read_dockerfile(DOCKERFILE)
    image_env = {key: value for key, value in dockerfile_env(instructions).items() if key.startswith("TASKFLUX_")}
    argv = node_argv(container_command(instructions), workdir(instructions))
    result = {}
    for name, service in compose()["services"].items():
        environment = service.get("environment") or {}
        assert isinstance(environment, dict), f"{name}: environment as a mapping"
        env = {**image_env, **{key: str(value) for key, value in environment.items()}}
        result[name] = (service, load_config(argv, env))
    return result


def _initial(services: dict[str, Any]) -> dict[str, Any]:
    """The services started by ``docker compose up`` (the first membership), not the ``grow`` profile's."""
    return {name: service for name, service in services.items() if "grow" not in service.get("profiles", [])}


def test_compose_runs_three_nodes_configured_only_through_taskflux_variables() -> None:
    document = compose()
    services = document["services"]
    assert len(_initial(services)) == 3 and len(services) == 5
    options = {option.env for option in OPTIONS}
    for name, service in services.items():
        environment = service["environment"]
        assert set(environment) <= options, f"{name}: {sorted(set(environment) - options)}"
        first = name in _initial(services)
        for must_set in ("TASKFLUX_CLUSTER_PEERS" if first else "TASKFLUX_CLUSTER_JOIN", "TASKFLUX_CLUSTER_NODE_ID",
                         "TASKFLUX_DATA_DIRECTORY", "TASKFLUX_HTTP_LISTEN_ADDRESS", "TASKFLUX_CLUSTER_LISTEN_HOST"):
            assert must_set in environment, f"{name}: {must_set}"
        assert "command" not in service and "entrypoint" not in service, f"{name}: configure through the environment"
        assert "depends_on" not in service, f"{name}: a node is ready only with a majority up; do not wait on health"


def test_compose_nodes_have_distinct_ids_the_same_peers_and_their_own_entry() -> None:
    every = _service_configs()
    assert sorted(config.cluster_node_id for _, config in every.values()) == [0, 1, 2, 3, 4]
    configs = {name: every[name] for name in _initial(compose()["services"])}
    for name in set(every) - set(configs):
        service, config = every[name]
        assert config.cluster_join and config.cluster_node_id >= 3, f"{name}: joins the running cluster"
        assert config.cluster_listen_port == PORTS["cluster"] and config.cluster_listen_host == "0.0.0.0"
    peers = {config.cluster_peers for _, config in configs.values()}
    assert len(peers) == 1
    (peer_list,) = peers
    assert {host for host, _ in peer_list} == set(configs)  # service names, resolvable on the compose network
    for name, (service, config) in configs.items():
        own_host, own_port = peer_list[config.cluster_node_id]
        assert own_host == name == service.get("hostname", name)
        assert config.cluster_listen_port == own_port == PORTS["cluster"]
        assert config.cluster_listen_host == "0.0.0.0"
        assert config.tcp_adapter_listen_host == "0.0.0.0"
        assert config.http_enabled and config.http_listen_address[0] == "0.0.0.0"
        assert config.grpc_enabled and config.grpc_listen_address[0] == "0.0.0.0"


def test_compose_publishes_each_node_on_its_own_host_ports_and_advertises_them() -> None:
    configs = _service_configs()
    host_ports: list[int] = []
    for name, (service, config) in configs.items():
        ports = published(service)
        container = {
            "client": config.tcp_adapter_listen_port,
            "http": config.http_listen_address[1],
            "grpc": config.grpc_listen_address[1],
        }
        assert set(ports) == set(container.values()), f"{name}: publish client, HTTP and gRPC (not the cluster port)"
        host_ports.extend(ports.values())
        # Clients on the Docker host follow the leader through ClusterMetadata: what a node advertises is
        # the address the host reaches its client port at.
        assert config.tcp_adapter_advertise_address == ("127.0.0.1", ports[container["client"]]), name
        # ... and REST clients follow a follower's 421 to the leader's published HTTP port.
        assert config.http_advertise_address == ("127.0.0.1", ports[container["http"]]), name
    assert len(host_ports) == len(set(host_ports)) == 15


def test_compose_gives_each_node_its_own_named_volume_on_the_image_volume() -> None:
    document = compose()
    (image_volume,) = docker_args(read_dockerfile(DOCKERFILE), "VOLUME")
    seen = set()
    for name, (service, config) in _service_configs().items():
        mounts = [str(volume).split(":") for volume in service["volumes"]]
        targets = {target: source for source, target, *_ in mounts}
        assert config.data_directory == image_volume
        assert image_volume in targets, f"{name}: mount a volume on {image_volume}"
        source = targets[image_volume]
        assert source in (document.get("volumes") or {}), f"{name}: {source} is not a named volume"
        assert source not in seen, f"{name}: shares {source} with another node"
        seen.add(source)


def test_compose_health_checks_and_stop_grace_cover_the_node() -> None:
    for name, (service, config) in _service_configs().items():
        check = service["healthcheck"]
        assert HEALTH_PATH in " ".join(check["test"]), name
        assert f":{config.http_listen_address[1]}/" in " ".join(check["test"]), name
        assert systemd_seconds(check["start_period"]) >= 10, name
        assert systemd_seconds(service["stop_grace_period"]) > stop_bound(config) + 5, name
        assert service.get("restart") in ("unless-stopped", "always", "on-failure"), name


# --- documentation ---------------------------------------------------------------------------------------


def test_every_taskflux_variable_in_the_kit_and_its_docs_is_a_real_option() -> None:
    options = {option.env for option in OPTIONS}
    for path in (DOCKERFILE, COMPOSE, UNIT, INSTALLATION, OPERATIONS):
        names = set(re.findall(r"\bTASKFLUX_[A-Z0-9_]*[A-Z0-9]", path.read_text()))
        assert names <= options, f"{path.name}: {sorted(names - options)}"


def test_operations_guide_has_a_metrics_section_with_a_prometheus_scrape_config() -> None:
    text = OPERATIONS.read_text()
    match = re.search(r"^## Metrics\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, "docs/operations.md: a '## Metrics' section"
    section = match.group(1)
    assert "scrape_configs" in section and "/metrics" in section and f":{PORTS['http']}" in section


# --- building the image (needs a Docker daemon) -------------------------------------------------------------


def _docker_missing() -> str:
    """Why the image cannot be built here ("" when a Docker daemon answers)."""
    if shutil.which("docker") is None:
        return "docker is not installed here"
    try:
        if subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0:
            return ""
    except (OSError, subprocess.TimeoutExpired):
        pass
    return "the docker client is installed but no Docker daemon answers (docker info fails)"


DOCKER_MISSING = _docker_missing()


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.skipif(bool(DOCKER_MISSING), reason=DOCKER_MISSING or "-")
def test_image_builds_and_runs_as_configured() -> None:
    tag = "taskflux:ops-kit-test"
    subprocess.run(["docker", "build", "-t", tag, str(REPO)], check=True, timeout=1100)
    try:
        inspect = subprocess.run(["docker", "image", "inspect", tag], check=True, capture_output=True, text=True)
        image = json.loads(inspect.stdout)[0]["Config"]
        assert image["User"].split(":")[0] not in ("", "root", "0")
        assert set(image["Volumes"]) == {"/var/lib/taskflux"}
        assert {int(port.split("/")[0]) for port in image["ExposedPorts"]} == set(PORTS.values())
        assert HEALTH_PATH in " ".join(image["Healthcheck"]["Test"])
        # Every dependency imports and the configuration loads inside the image: --help goes through both.
        run = subprocess.run(["docker", "run", "--rm", tag, "--help"], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0 and "TASKFLUX_CLUSTER_PEERS" in run.stdout, run.stderr
    finally:
        subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True, timeout=120)
