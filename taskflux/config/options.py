"""The option table: ``Config`` declares every option once, as a field with its type, format, default, parser
and help. ``OPTIONS`` (help, environment names, command line, validation, docs check) is derived from it.

To add an option, add one field to ``Config`` (in the place it should appear in ``--help``)::

    tcp_adapter_handshake_timeout: float = option(
        "duration", "5s", positive_duration, "A client connection that has not completed its handshake in this "
        "long is closed.")

and a row to the table in ``docs/configuration.md`` (a test checks it is there). Cross-option checks and
derived defaults live in ``taskflux/config/loading.py``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields, replace
from typing import Any

from taskflux.raft.config import RaftConfig
from taskflux.raft.members import Members
from taskflux.values import (
    LOG_LEVEL_FORMATS,
    MIB,
    format_endpoint,
    is_wildcard,
    parse_bool,
    parse_endpoint,
    parse_endpoint_list,
    parse_host,
    parse_int,
    parse_log_format,
    parse_log_level,
    parse_path,
    parse_port,
    parse_size,
    positive_duration,
    ranged,
    show,
)
from taskflux.wire.cluster_protocol import is_valid_cluster_id

ENV_PREFIX = "TASKFLUX_"
MAX_INT64 = 2**63 - 1
# Bounds that keep the cluster frame limit (replication_max_send_size + 2 * max_payload_size + 1 MiB, see
# Config.cluster_max_frame_bytes) below the 2 GiB a frame can carry.
MAX_PAYLOAD_SIZE = 512 * MIB
MAX_REPLICATION_SEND_SIZE = 256 * MIB
# Peers written without a port: the default cluster port (the original assumed the client port 2602).
DEFAULT_PEER_PORT = 5000
DEFAULT_CLUSTER_FRAME_BYTES = 64 * MIB
REQUIRED = None  # the default of an option that has none (and of one derived from others: see default_text)


@dataclass(frozen=True, slots=True)
class Option:
    """One configuration option: its snake_case key, parser, default (in the form users write) and meaning."""

    key: str
    kind: str  # the value format, for help and docs
    default: Any  # None: derived from other options (see ``default_text``) or required
    parse: Callable[[Any], Any]
    help: str
    default_text: str = ""  # how the default reads in help/docs when it is not a plain value

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.upper()

    @property
    def cli(self) -> str:
        return "--" + self.key.replace("_", "-")

    def describe_default(self) -> str:
        if self.default_text:
            return self.default_text
        if isinstance(self.default, bool):
            return str(self.default).lower()
        return str(self.default)


def option(kind: str, default: Any, parse: Callable[[Any], Any], help: str, default_text: str = "") -> Any:
    """A ``Config`` field that is an option (see ``Option``); the field's name is the option's key."""
    return field(metadata={"option": Option("", kind, default, parse, help, default_text)})


def _ranged_int(low: int, high: int, accepted: str) -> Callable[[Any], int]:
    return ranged(parse_int, low, high, accepted)


def _ranged_size(low: int, high: int, accepted: str) -> Callable[[Any], int]:
    return ranged(parse_size, low, high, accepted)


def _parse_cluster_id(value: Any) -> str:
    if value == "" or (isinstance(value, str) and is_valid_cluster_id(value)):
        return value
    raise ValueError(f"{show(value)} is not a cluster id; accepted: 1 to 64 printable ASCII characters, no space")


def _endpoint(default_port: int | None) -> Callable[[Any], tuple[str, int]]:
    return lambda value: parse_endpoint(value, default_port)


@dataclass(frozen=True, slots=True)
class Config:
    """A validated node configuration. Durations are seconds, sizes bytes, addresses ``(host, port)``.

    Each field below is one option: ``option(kind, default, parser, help[, how the default reads])``."""

    cluster_peers: tuple[tuple[str, int], ...] = option(
        "list of host[:port]", REQUIRED, lambda value: parse_endpoint_list(value, DEFAULT_PEER_PORT),
        "The initial membership of a brand-new cluster: the inter-node addresses of ALL its nodes, this one "
        "included; the position is the node id (0-based). A YAML list or a space-separated string; a missing "
        "port means 5000. Later changes of the membership are made at run time (python -m taskflux.admin) and "
        "kept in the log.", "required (unless cluster_join)")
    cluster_node_id: int = option("integer", 0, _ranged_int(0, MAX_INT64, "0 or more"),
                                  "This node's id: its index in cluster_peers, or the id it was added with.")
    cluster_join: bool = option(
        "boolean", False, parse_bool,
        "This node joins an existing cluster that added it (python -m taskflux.admin add): it starts from an "
        "empty data directory, knows no membership until the leader reaches it, and never votes before it has "
        "been promoted. cluster_peers is then not needed.")
    cluster_id: str = option(
        "string", "", _parse_cluster_id,
        "The cluster's identity, checked against the data directory and in every cluster handshake. Empty: "
        "the first leader of a new cluster generates one and every node records it.", "(generated)")
    cluster_listen_host: str = option("host", "localhost", parse_host, "Address the inter-node listener binds.")
    cluster_listen_port: int = option("port", REQUIRED, parse_port, "Port of the inter-node listener.",
                                      "the port of this node's cluster_peers entry")
    cluster_request_timeout: float = option(
        "duration", "5s", positive_duration,
        "Timeout to connect to a peer and for one send to a peer to complete; on expiry the link is "
        "dropped and redialled.")
    client_request_timeout: float = option(
        "duration", "5s", positive_duration,
        "How long a client request waits for its entry to commit before the server stops waiting and "
        "tells the client the outcome is unknown (the binary protocol closes the connection, REST "
        "answers 504, gRPC UNAVAILABLE): the entry may still commit.")
    http_enabled: bool = option("boolean", True, parse_bool, "Serve REST and /metrics.")
    http_listen_address: tuple[str, int] = option(
        "host[:port]", "localhost:1606", _endpoint(1606),
        "Listen address of REST and /metrics; a missing port means 1606.")
    http_advertise_address: tuple[str, int] = option(
        "host[:port]", REQUIRED, _endpoint(None),
        "host:port REST clients use to reach this node; sent to the other nodes in the cluster handshake, "
        "so that a follower's 421 answer and /api/v1/cluster point at it.",
        "http_listen_address, its host replaced by this node's cluster_peers host when it is a wildcard")
    grpc_enabled: bool = option("boolean", True, parse_bool, "Serve gRPC.")
    grpc_listen_address: tuple[str, int] = option(
        "host[:port]", "localhost:1607", _endpoint(1607),
        "Listen address of gRPC (h2c); a missing port means 1607.")
    tcp_adapter_listen_host: str = option(
        "host", "0.0.0.0", parse_host,
        "Address the binary client protocol listener binds (0.0.0.0: all IPv4 interfaces).")
    tcp_adapter_listen_port: int = option("port", 2602, parse_port, "Port of the binary client protocol.")
    tcp_adapter_advertise_address: tuple[str, int] = option(
        "host[:port]", REQUIRED, _endpoint(None),
        "host:port clients use to reach this node's client port; sent to the other nodes in the cluster "
        "handshake and listed by ClusterMetadata.",
        "host of this node's cluster_peers entry + ':' + tcp_adapter_listen_port")
    tcp_adapter_backlog_size: int = option("integer", 128, _ranged_int(1, 65535, "1..65535"),
                                           "Listen backlog of the client port.")
    tcp_adapter_idle_timeout: float = option("duration", "1m", positive_duration,
                                             "A client connection with no request for this long is closed.")
    tcp_adapter_handshake_timeout: float = option(
        "duration", "5s", positive_duration,
        "A client connection that has not completed its handshake (authorization and bootstrap) this long "
        "after connecting is closed.")
    tcp_adapter_max_connections: int = option(
        "integer", 1024, _ranged_int(1, 1_000_000, "1..1000000"),
        "Client connections served at once. At the limit a new connection replaces the oldest one that has "
        "not completed its handshake, or is closed at once if every connection has.")
    max_payload_size: int = option("size", "16MiB", _ranged_size(1, MAX_PAYLOAD_SIZE, "1 byte..512MiB"),
                                   "Largest record payload accepted by any interface (binary, REST, gRPC).")
    data_directory: str = option(
        "path", "/var/lib/tflux", parse_path,
        "Directory of the log, snapshot and metadata; created if missing. Relative to the working directory.")
    log_file_soft_limit: int = option("size", "16MiB", _ranged_size(16, MAX_INT64, "16 bytes or more"),
                                      "A log segment is sealed once past this size and fully committed.")
    log_file_hard_limit: int = option(
        "size", "32MiB", _ranged_size(16, MAX_INT64, "16 bytes or more"),
        "A log segment is sealed once past this size, committed or not; at least log_file_soft_limit.")
    snapshot_creation_segments_threshold: int = option(
        "integer", 5, _ranged_int(0, 1_000_000, "0..1000000"),
        "Take a snapshot once this many sealed, fully committed segments lie behind the last one "
        "(0 behaves like 1).")
    fsync_inline_min_batch: int = option(
        "integer", 0, _ranged_int(0, 1_000_000, "0..1000000"),
        "A batch of at least this many log entries is written and fsynced by the node loop itself instead of "
        "its disk thread, while fsyncs stay fast (0: always the disk thread).")
    replication_max_send_size: int = option(
        "size", "1MiB", _ranged_size(0, MAX_REPLICATION_SEND_SIZE, "0..256MiB"),
        "Soft cap on entry bytes per AppendEntries (one entry always goes; 0: one entry per message).")
    raft_tick_interval: float = option("duration", "50ms", positive_duration,
                                       "The raft clock: timeouts below are whole multiples of it.")
    raft_election_timeout: float = option("duration", "500ms", positive_duration,
                                          "A follower that hears no leader campaigns after a random time in [t, 2t).")
    raft_heartbeat_interval: float = option("duration", "100ms", positive_duration,
                                            "How often a leader heartbeats; below raft_election_timeout.")
    log_level: int = option("log level", "Information", parse_log_level, f"Minimum log level: {LOG_LEVEL_FORMATS}.")
    log_format: str = option("json or text", "json", parse_log_format,
                             "JSON lines or human-readable text on stdout.")

    # Not options: how the configuration was read.
    # key -> where its value came from ("default", "config file ...", "environment variable ...", ...)
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    # Problems that did not stop start-up (unknown TASKFLUX_* variables), one line each, for the node's log.
    warnings: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @property
    def cluster_size(self) -> int:
        return len(self.cluster_peers)

    @property
    def raft_election_ticks(self) -> int:
        """The election timeout in raft ticks (the randomized timeout is drawn from [ticks, 2 * ticks))."""
        return ticks(self.raft_election_timeout, self.raft_tick_interval)

    @property
    def raft_heartbeat_ticks(self) -> int:
        return ticks(self.raft_heartbeat_interval, self.raft_tick_interval)

    @property
    def client_endpoint(self) -> str:
        """This node's advertised client endpoint as ``host:port`` (what the cluster handshake carries)."""
        return format_endpoint(*self.tcp_adapter_advertise_address)

    @property
    def cluster_max_frame_bytes(self) -> int:
        """A bound for inter-node frames: room for a full AppendEntries batch plus one maximal entry."""
        return max(DEFAULT_CLUSTER_FRAME_BYTES, self.replication_max_send_size + 2 * self.max_payload_size + MIB)

    @property
    def cluster_endpoint(self) -> str:
        """Where the other nodes reach this node's cluster port: its ``cluster_peers`` entry, else (a joining node)
        its listener (``localhost`` for a wildcard host) until the membership gives its address."""
        if self.cluster_node_id < len(self.cluster_peers):
            return format_endpoint(*self.cluster_peers[self.cluster_node_id])
        host = self.cluster_listen_host
        return format_endpoint("localhost" if is_wildcard(host) else host, self.cluster_listen_port)

    def initial_members(self) -> Members:
        """The membership in force until the log or a snapshot carries one: ``cluster_peers`` (each node's
        address ``host:port`` of its cluster port), or none for a node that joins a running cluster."""
        if self.cluster_join:
            return Members()
        return Members.initial([format_endpoint(*peer) for peer in self.cluster_peers])

    def raft_config(self) -> RaftConfig:
        """The raft core's settings for this node."""
        return RaftConfig(
            node_id=self.cluster_node_id,
            cluster_size=max(1, self.cluster_size),
            initial_members=self.initial_members(),
            election_ticks=self.raft_election_ticks,
            heartbeat_ticks=self.raft_heartbeat_ticks,
            replication_max_send_size=max(1, self.replication_max_send_size),
        )


def ticks(duration: float, tick: float) -> int:
    """``duration`` in whole ticks of ``tick`` seconds (rounded)."""
    return round(duration / tick)


def _option_of(config_field: Field[Any]) -> Option | None:
    spec = config_field.metadata.get("option")
    return replace(spec, key=config_field.name) if spec is not None else None


OPTIONS: tuple[Option, ...] = tuple(spec for spec in map(_option_of, fields(Config)) if spec is not None)
BY_KEY: dict[str, Option] = {spec.key: spec for spec in OPTIONS}
# Environment and command-line names match ignoring case, '_' and '-', as the original did.
_BY_FOLDED = {spec.key.replace("_", ""): spec for spec in OPTIONS}


def fold(name: str) -> str:
    """``name`` without case, '_' and '-': how environment and command-line names are matched."""
    return name.replace("_", "").replace("-", "").lower()


def find_option(name: str) -> Option | None:
    """The option an environment (without the prefix) or command-line (without ``--``) name means, if any."""
    return _BY_FOLDED.get(fold(name))


def suggest(name: str) -> Option | None:
    """The option ``name`` (a key, or an environment/command-line name without its prefix) most likely meant."""
    text = name.strip("-")
    close = difflib.get_close_matches(text.lower().replace("-", "_"), list(BY_KEY), n=1)
    return find_option(text) or (BY_KEY[close[0]] if close else None)
