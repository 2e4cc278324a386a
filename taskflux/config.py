"""Node configuration: a YAML file, ``TASKFLUX_*`` environment variables and ``--kebab-case`` options,
merged with the precedence command line > environment > file > defaults and validated by one marshmallow
schema. Every option is declared once, in ``OPTIONS``; the help text, the environment names and
``docs/configuration.md`` are derived from (or checked against) that table.

Usage::

    try:
        config = load_config(sys.argv[1:], os.environ)
    except HelpRequested as request:
        print(request.text); sys.exit(0)
    except ConfigError as error:
        print(f"taskflux: {error}", file=sys.stderr); sys.exit(2)
"""

from __future__ import annotations

import difflib
import ipaddress
import logging
import math
import re
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from marshmallow import Schema, ValidationError, fields, post_load, validates_schema

from taskflux.raft.config import RaftConfig
from taskflux.wire.cluster_protocol import is_valid_cluster_id

__all__ = [
    "OPTIONS",
    "Config",
    "ConfigError",
    "HelpRequested",
    "Option",
    "format_endpoint",
    "help_text",
    "load_config",
    "parse_duration",
    "parse_endpoint",
    "parse_size",
]

ENV_PREFIX = "TASKFLUX_"
KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
MAX_PORT = 65535
MAX_INT64 = 2**63 - 1
# Bounds that keep the cluster frame limit (replication_max_send_size + 2 * max_payload_size + 1 MiB, see
# Config.cluster_max_frame_bytes) below the 2 GiB a frame can carry.
MAX_PAYLOAD_SIZE = 512 * MIB
MAX_REPLICATION_SEND_SIZE = 256 * MIB
# Peers written without a port: the default cluster port (the original assumed the client port 2602).
DEFAULT_PEER_PORT = 5000
DEFAULT_CLUSTER_FRAME_BYTES = 64 * MIB
VERBOSE = 5  # the original's "Verbose" level, below Python's DEBUG


class ConfigError(Exception):
    """The configuration cannot be used; the message is one line naming the key, the value and what is accepted."""


class HelpRequested(Exception):
    """``-h``/``--help`` was given: ``text`` is the help to print before exiting with status 0."""

    def __init__(self, text: str) -> None:
        super().__init__("help requested")
        self.text = text


# --- value parsers: each raises ValueError("<why>; accepted: <what>") ---------------------------------


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_UNIT_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_TIMESPAN_RE = re.compile(r"(?:(\d+)\.)?(\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:\.(\d{1,7}))?)?")
DURATION_FORMATS = "'5s', '500ms', '2m', '1h', '1h30m', a number of seconds, or hh:mm:ss / d.hh:mm:ss[.fffffff]"


def parse_duration(value: Any) -> float:
    """A duration in seconds from ``5s``, ``500ms``, ``1h30m``, ``00:00:05``, ``1.00:00:00`` or a bare number
    of seconds (the original read a bare number as days). Negative durations are refused."""
    if isinstance(value, bool):
        raise ValueError(f"{_show(value)} is not a duration; accepted: {DURATION_FORMATS}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        seconds = math.nan
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        elif re.fullmatch(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+", text):
            seconds = sum(float(number) * _UNITS[unit] for number, unit in _UNIT_RE.findall(text))
        elif match := _TIMESPAN_RE.fullmatch(text):
            days, hours, minutes, secs, fraction = match.groups()
            if int(hours) < 24 and int(minutes) < 60 and int(secs or 0) < 60:
                seconds = int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + int(secs or 0)
                seconds += int(fraction) / 10 ** len(fraction) if fraction else 0.0
        if math.isnan(seconds):
            raise ValueError(f"{_show(value)} is not a duration; accepted: {DURATION_FORMATS}")
    else:
        raise ValueError(f"{_show(value)} is not a duration; accepted: {DURATION_FORMATS}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{_show(value)} is not a duration; accepted: {DURATION_FORMATS}")
    return seconds


_SIZE_RE = re.compile(r"(\d+)\s*(b|kib|mib|gib)?", re.IGNORECASE)
_SIZE_UNITS = {None: 1, "b": 1, "kib": KIB, "mib": MIB, "gib": GIB}
SIZE_FORMATS = "a number of bytes, or with a suffix B, KiB, MiB, GiB (e.g. 16MiB)"


def parse_size(value: Any) -> int:
    """A size in bytes from an integer or ``<n>B``/``KiB``/``MiB``/``GiB``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and (match := _SIZE_RE.fullmatch(value.strip())):
        number, unit = match.groups()
        return int(number) * _SIZE_UNITS[unit.lower() if unit else None]
    raise ValueError(f"{_show(value)} is not a size; accepted: {SIZE_FORMATS}")


def _parse_int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
        return int(value)
    raise ValueError(f"{_show(value)} is not an integer; accepted: a decimal integer")


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"{_show(value)} is not a boolean; accepted: true, false (any case)")


_HOSTNAME_RE = re.compile(r"(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?")
ENDPOINT_FORMATS = "host[:port], a.b.c.d[:port] or [ipv6][:port] with port 1..65535"


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(_HOSTNAME_RE.fullmatch(host))


def parse_endpoint(value: Any, default_port: int | None) -> tuple[str, int]:
    """``(host, port)`` from ``host[:port]``, ``a.b.c.d[:port]`` or ``[v6addr][:port]`` (the brackets are dropped).
    A missing port is ``default_port``; with ``default_port=None`` the port is required."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{_show(value)} is not an address; accepted: {ENDPOINT_FORMATS}")
    text = value.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{_show(value)} is not an address; accepted: {ENDPOINT_FORMATS}")
        port_text = rest[1:] if rest else None
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{_show(value)} is not an address; accepted: {ENDPOINT_FORMATS}") from None
    else:
        if text.count(":") > 1:
            raise ValueError(f"{_show(value)} is not an address (put IPv6 in brackets); accepted: {ENDPOINT_FORMATS}")
        host, sep, port_text_raw = text.partition(":")
        port_text = port_text_raw if sep else None
        if not _valid_host(host):
            raise ValueError(f"{_show(value)} is not an address; accepted: {ENDPOINT_FORMATS}")
    if port_text is None:
        if default_port is None:
            raise ValueError(f"{_show(value)} has no port; accepted: host:port or [ipv6]:port with port 1..65535")
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= MAX_PORT:
        raise ValueError(f"{_show(value)} has a bad port; accepted: {ENDPOINT_FORMATS}")
    return host, int(port_text)


def format_endpoint(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _parse_peers(value: Any) -> tuple[tuple[str, int], ...]:
    if isinstance(value, str):
        items: list[Any] = [item for item in re.split(r"[\s,]+", value) if item]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ValueError(f"{_show(value)} is not a peer list; accepted: a YAML list or a space-separated string")
    if not items:
        raise ValueError("the peer list is empty; accepted: one or more host:port entries, this node included")
    peers = tuple(parse_endpoint(item, DEFAULT_PEER_PORT) for item in items)
    for i, peer in enumerate(peers):
        if peer in peers[:i]:
            raise ValueError(f"{format_endpoint(*peer)} is listed twice; accepted: distinct host:port entries")
    return peers


_LOG_LEVELS = {
    "verbose": VERBOSE,
    "debug": logging.DEBUG,
    "information": logging.INFO,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
    "critical": logging.CRITICAL,
}
_LOG_LEVEL_NUMBERS = [VERBOSE, logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL]
LOG_LEVEL_FORMATS = "Verbose, Debug, Information, Warning, Error, Fatal (or INFO, WARN, CRITICAL; 0..5), any case"


def _parse_log_level(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 5:
        return _LOG_LEVEL_NUMBERS[value]
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _LOG_LEVELS:
            return _LOG_LEVELS[text]
        if text.isdigit() and int(text) <= 5:
            return _LOG_LEVEL_NUMBERS[int(text)]
    raise ValueError(f"{_show(value)} is not a log level; accepted: {LOG_LEVEL_FORMATS}")


def _parse_log_format(value: Any) -> str:
    if isinstance(value, str) and value.strip().lower() in ("json", "text"):
        return value.strip().lower()
    raise ValueError(f"{_show(value)} is not a log format; accepted: json, text")


def _parse_host(value: Any) -> str:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        if _valid_host(text):
            return text
    raise ValueError(f"{_show(value)} is not a host; accepted: an IPv4/IPv6 address or a DNS name, without port")


def _parse_cluster_id(value: Any) -> str:
    if value == "" or (isinstance(value, str) and is_valid_cluster_id(value)):
        return value
    raise ValueError(f"{_show(value)} is not a cluster id; accepted: 1 to 64 printable ASCII characters, no space")


def _parse_path(value: Any) -> str:
    if isinstance(value, str) and value.strip() and "\0" not in value:
        return value
    raise ValueError(f"{_show(value)} is not a directory path; accepted: a non-empty path")


def _ranged(parse: Callable[[Any], int], low: int, high: int, accepted: str) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        number = parse(value)
        if not low <= number <= high:
            raise ValueError(f"{_show(value)} is out of range; accepted: {accepted}")
        return number

    return check


def _positive_duration(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"{_show(value)} is not a positive duration; accepted: more than 0, {DURATION_FORMATS}")
    return seconds


_port = _ranged(_parse_int, 1, MAX_PORT, "1..65535")


# --- the option table ----------------------------------------------------------------------------------


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


OPTIONS: tuple[Option, ...] = (
    Option("cluster_peers", "list of host[:port]", None, _parse_peers,
           "Inter-node addresses of ALL nodes, this one included; the position is the node id (0-based). "
           "A YAML list or a space-separated string; a missing port means 5000.", "required"),
    Option("cluster_node_id", "integer", 0, _ranged(_parse_int, 0, MAX_INT64, "0 or more"),
           "This node's index in cluster_peers."),
    Option("cluster_id", "string", "", _parse_cluster_id,
           "The cluster's identity, checked against the data directory and in every cluster handshake. Empty: "
           "the first leader of a new cluster generates one and every node records it.", "(generated)"),
    Option("cluster_listen_host", "host", "localhost", _parse_host,
           "Address the inter-node listener binds."),
    Option("cluster_listen_port", "port", None, _port,
           "Port of the inter-node listener.", "the port of this node's cluster_peers entry"),
    Option("cluster_request_timeout", "duration", "5s", _positive_duration,
           "Timeout to connect to a peer and for one send to a peer to complete; on expiry the link is "
           "dropped and redialled."),
    Option("client_request_timeout", "duration", "5s", _positive_duration,
           "How long a client request waits for its entry to commit before the server stops waiting and "
           "tells the client the outcome is unknown (the binary protocol closes the connection, REST "
           "answers 504, gRPC UNAVAILABLE): the entry may still commit."),
    Option("http_enabled", "boolean", True, _parse_bool, "Serve REST and /metrics."),
    Option("http_listen_address", "host[:port]", "localhost:1606", lambda v: parse_endpoint(v, 1606),
           "Listen address of REST and /metrics; a missing port means 1606."),
    Option("http_advertise_address", "host[:port]", None, lambda v: parse_endpoint(v, None),
           "host:port REST clients use to reach this node; sent to the other nodes in the cluster handshake, "
           "so that a follower's 421 answer and /api/v1/cluster point at it.",
           "http_listen_address, its host replaced by this node's cluster_peers host when it is a wildcard"),
    Option("grpc_enabled", "boolean", True, _parse_bool, "Serve gRPC."),
    Option("grpc_listen_address", "host[:port]", "localhost:1607", lambda v: parse_endpoint(v, 1607),
           "Listen address of gRPC (h2c); a missing port means 1607."),
    Option("tcp_adapter_listen_host", "host", "0.0.0.0", _parse_host,
           "Address the binary client protocol listener binds (0.0.0.0: all IPv4 interfaces)."),
    Option("tcp_adapter_listen_port", "port", 2602, _port, "Port of the binary client protocol."),
    Option("tcp_adapter_advertise_address", "host[:port]", None, lambda v: parse_endpoint(v, None),
           "host:port clients use to reach this node's client port; sent to the other nodes in the cluster "
           "handshake and listed by ClusterMetadata.",
           "host of this node's cluster_peers entry + ':' + tcp_adapter_listen_port"),
    Option("tcp_adapter_backlog_size", "integer", 128, _ranged(_parse_int, 1, 65535, "1..65535"),
           "Listen backlog of the client port."),
    Option("tcp_adapter_idle_timeout", "duration", "1m", _positive_duration,
           "A client connection with no request for this long is closed."),
    Option("tcp_adapter_max_connections", "integer", 1024, _ranged(_parse_int, 1, 1_000_000, "1..1000000"),
           "Client connections served at once; further ones wait to be accepted."),
    Option("max_payload_size", "size", "16MiB", _ranged(parse_size, 1, MAX_PAYLOAD_SIZE, "1 byte..512MiB"),
           "Largest record payload accepted by any interface (binary, REST, gRPC)."),
    Option("data_directory", "path", "/var/lib/tflux", _parse_path,
           "Directory of the log, snapshot and metadata; created if missing. Relative to the working directory."),
    Option("log_file_soft_limit", "size", "16MiB", _ranged(parse_size, 16, MAX_INT64, "16 bytes or more"),
           "A log segment is sealed once past this size and fully committed."),
    Option("log_file_hard_limit", "size", "32MiB", _ranged(parse_size, 16, MAX_INT64, "16 bytes or more"),
           "A log segment is sealed once past this size, committed or not; at least log_file_soft_limit."),
    Option("snapshot_creation_segments_threshold", "integer", 5, _ranged(_parse_int, 0, 1_000_000, "0..1000000"),
           "Take a snapshot once this many sealed, fully committed segments lie behind the last one "
           "(0 behaves like 1)."),
    Option("replication_max_send_size", "size", "1MiB", _ranged(parse_size, 0, MAX_REPLICATION_SEND_SIZE, "0..256MiB"),
           "Soft cap on entry bytes per AppendEntries (one entry always goes; 0: one entry per message)."),
    Option("raft_tick_interval", "duration", "50ms", _positive_duration,
           "The raft clock: timeouts below are whole multiples of it."),
    Option("raft_election_timeout", "duration", "500ms", _positive_duration,
           "A follower that hears no leader campaigns after a random time in [t, 2t)."),
    Option("raft_heartbeat_interval", "duration", "100ms", _positive_duration,
           "How often a leader heartbeats; below raft_election_timeout."),
    Option("log_level", "log level", "Information", _parse_log_level, f"Minimum log level: {LOG_LEVEL_FORMATS}."),
    Option("log_format", "json or text", "json", _parse_log_format, "JSON lines or human-readable text on stdout."),
)  # fmt: skip

_BY_KEY = {option.key: option for option in OPTIONS}
# Environment and command-line names match ignoring case, '_' and '-', as the original did.
_BY_FOLDED = {option.key.replace("_", ""): option for option in OPTIONS}


def _fold(name: str) -> str:
    return name.replace("_", "").replace("-", "").lower()


# --- the result ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Config:
    """A validated node configuration. Durations are seconds, sizes bytes, addresses ``(host, port)``."""

    cluster_peers: tuple[tuple[str, int], ...]
    cluster_node_id: int
    cluster_listen_host: str
    cluster_listen_port: int
    cluster_request_timeout: float
    client_request_timeout: float
    http_enabled: bool
    http_listen_address: tuple[str, int]
    http_advertise_address: tuple[str, int]
    grpc_enabled: bool
    grpc_listen_address: tuple[str, int]
    tcp_adapter_listen_host: str
    tcp_adapter_listen_port: int
    tcp_adapter_advertise_address: tuple[str, int]
    tcp_adapter_backlog_size: int
    tcp_adapter_idle_timeout: float
    tcp_adapter_max_connections: int
    max_payload_size: int
    data_directory: str
    log_file_soft_limit: int
    log_file_hard_limit: int
    snapshot_creation_segments_threshold: int
    replication_max_send_size: int
    raft_tick_interval: float
    raft_election_timeout: float
    raft_heartbeat_interval: float
    log_level: int
    log_format: str
    cluster_id: str = ""
    # key -> where its value came from ("default", "config file ...", "environment variable ...", ...)
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def cluster_size(self) -> int:
        return len(self.cluster_peers)

    @property
    def raft_election_ticks(self) -> int:
        """The election timeout in raft ticks (the randomized timeout is drawn from [ticks, 2 * ticks))."""
        return _ticks(self.raft_election_timeout, self.raft_tick_interval)

    @property
    def raft_heartbeat_ticks(self) -> int:
        return _ticks(self.raft_heartbeat_interval, self.raft_tick_interval)

    @property
    def client_endpoint(self) -> str:
        """This node's advertised client endpoint as ``host:port`` (what the cluster handshake carries)."""
        return format_endpoint(*self.tcp_adapter_advertise_address)

    @property
    def cluster_max_frame_bytes(self) -> int:
        """A bound for inter-node frames: room for a full AppendEntries batch plus one maximal entry."""
        return max(DEFAULT_CLUSTER_FRAME_BYTES, self.replication_max_send_size + 2 * self.max_payload_size + MIB)

    def raft_config(self) -> RaftConfig:
        """The raft core's settings for this node."""
        return RaftConfig(
            node_id=self.cluster_node_id,
            cluster_size=self.cluster_size,
            election_ticks=self.raft_election_ticks,
            heartbeat_ticks=self.raft_heartbeat_ticks,
            replication_max_send_size=max(1, self.replication_max_send_size),
        )


def _is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _ticks(duration: float, tick: float) -> int:
    return round(duration / tick)


def _is_tick_multiple(duration: float, tick: float) -> bool:
    ticks = duration / tick
    return round(ticks) >= 1 and abs(ticks - round(ticks)) < 1e-6


# --- the schema ----------------------------------------------------------------------------------------


class _OptionField(fields.Field):
    """A field that parses a raw value (YAML scalar/list or string) with an option's parser."""

    def __init__(self, option: Option, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.option = option

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> Any:
        try:
            return self.option.parse(value)
        except ValueError as error:
            raise ValidationError(str(error)) from None


def _schema_fields() -> dict[str, fields.Field]:
    result: dict[str, fields.Field] = {}
    for option in OPTIONS:
        if option.key == "cluster_peers":
            result[option.key] = _OptionField(
                option,
                required=True,
                error_messages={"required": "missing; accepted: one or more host:port entries, this node included"},
            )
        elif option.default is None:
            result[option.key] = _OptionField(option, load_default=None)
        else:
            result[option.key] = _OptionField(option, load_default=option.parse(option.default))
    return result


class _ConfigSchemaBase(Schema):
    sources: Mapping[str, str] = {}

    def _other(self, key: str, value: str) -> str:
        """How another key involved in a combination reads in a message: its value and, if set, its source."""
        source = self.sources.get(key, "default")
        return f"{key} ({value})" if source == "default" else f"{key} ({value}, from {source})"

    @validates_schema
    def _combinations(self, data: dict[str, Any], **kwargs: Any) -> None:
        peers = data["cluster_peers"]
        node_id = data["cluster_node_id"]
        if node_id >= len(peers):
            raise ValidationError(
                f"{node_id} is not a valid node id; accepted: 0..{len(peers) - 1} (the index in cluster_peers)",
                field_name="cluster_node_id",
            )
        if data["log_file_hard_limit"] < data["log_file_soft_limit"]:
            raise ValidationError(
                f"{data['log_file_hard_limit']} is below "
                f"{self._other('log_file_soft_limit', str(data['log_file_soft_limit']))}; "
                f"accepted: at least log_file_soft_limit",
                field_name="log_file_hard_limit",
            )
        tick = data["raft_tick_interval"]
        for key in ("raft_heartbeat_interval", "raft_election_timeout"):
            if not _is_tick_multiple(data[key], tick):
                raise ValidationError(
                    f"{data[key]:g}s is not a whole multiple of {self._other('raft_tick_interval', f'{tick:g}s')}; "
                    f"accepted: 1, 2, 3... times raft_tick_interval",
                    field_name=key,
                )
        if _ticks(data["raft_heartbeat_interval"], tick) >= _ticks(data["raft_election_timeout"], tick):
            raise ValidationError(
                f"{data['raft_heartbeat_interval']:g}s is not below "
                f"{self._other('raft_election_timeout', format(data['raft_election_timeout'], 'g') + 's')}; "
                f"accepted: a shorter interval",
                field_name="raft_heartbeat_interval",
            )

        for name in ("tcp_adapter_advertise_address", "http_advertise_address"):
            advertised = data[name]
            if advertised is not None and _is_unspecified(advertised[0]):
                raise ValidationError(
                    f"{format_endpoint(*advertised)} is a wildcard address clients cannot dial; "
                    f"accepted: a host:port clients can reach",
                    field_name=name,
                )

    @post_load
    def _derive(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        own_host, own_port = data["cluster_peers"][data["cluster_node_id"]]
        if data["cluster_listen_port"] is None:
            data["cluster_listen_port"] = own_port
        if data["tcp_adapter_advertise_address"] is None:
            data["tcp_adapter_advertise_address"] = (own_host, data["tcp_adapter_listen_port"])
        if data["http_advertise_address"] is None:
            http_host, http_port = data["http_listen_address"]
            wildcard = http_host in ("", "*") or _is_unspecified(http_host)
            data["http_advertise_address"] = (own_host if wildcard else http_host, http_port)
        return data


ConfigSchema: type[Schema] = _ConfigSchemaBase.from_dict(_schema_fields(), name="ConfigSchema")  # type: ignore[arg-type]


# --- sources -------------------------------------------------------------------------------------------


def _unknown(name: str, where: str) -> ConfigError:
    candidates = [option.key for option in OPTIONS]
    folded = _BY_FOLDED.get(_fold(name))
    guess = [folded.key] if folded else difflib.get_close_matches(name.lower(), candidates, n=1)
    hint = f" (did you mean {guess[0]}?)" if guess else ""
    return ConfigError(f"{name}: unknown option in {where}{hint}; accepted: {', '.join(candidates)}")


class _YamlLoader(yaml.SafeLoader):
    """YAML 1.1 reads an unquoted ``1:30`` as the base-60 number 90; TaskFlux reads it as a duration (1 h 30 min)."""

    def construct_yaml_int(self, node: yaml.ScalarNode) -> Any:  # type: ignore[override]
        text = self.construct_scalar(node)
        return text if ":" in text else super().construct_yaml_int(node)

    def construct_yaml_float(self, node: yaml.ScalarNode) -> Any:  # type: ignore[override]
        text = self.construct_scalar(node)
        return text if ":" in text else super().construct_yaml_float(node)


_YamlLoader.add_constructor("tag:yaml.org,2002:int", _YamlLoader.construct_yaml_int)
_YamlLoader.add_constructor("tag:yaml.org,2002:float", _YamlLoader.construct_yaml_float)


def _read_file(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as stream:
            document = yaml.load(stream, Loader=_YamlLoader)  # a SafeLoader: no arbitrary objects
    except OSError as error:
        raise ConfigError(
            f"config file {path!r}: cannot be read ({error.strerror or error}); accepted: a readable YAML file"
        ) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise ConfigError(f"config file {path!r}: {problem}{where}; accepted: a YAML mapping of options") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(
            f"config file {path!r}: the top level is a {type(document).__name__}; accepted: a mapping of option: value"
        )
    for key in document:
        if not isinstance(key, str) or key not in _BY_KEY:
            raise _unknown(str(key), f"config file {path!r}")
    return document


def _read_environment(environ: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    values: dict[str, tuple[str, str]] = {}
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX):
            continue
        option = _BY_FOLDED.get(_fold(name[len(ENV_PREFIX) :]))
        if option is None:
            raise _unknown(name, "the environment")
        values[option.key] = (environ[name], f"environment variable {name}")
    return values


def _read_command_line(argv: Sequence[str]) -> tuple[str | None, dict[str, tuple[str, str]]]:
    config_path: str | None = None
    values: dict[str, tuple[str, str]] = {}
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg in ("-h", "--help"):
            raise HelpRequested(help_text())
        name, eq, inline = arg.partition("=")
        if name in ("-c", "--config"):
            if eq:
                config_path = inline
            elif i < len(args):
                config_path = args[i]
                i += 1
            else:
                raise ConfigError(f"{name}: missing value; accepted: {name} PATH to a YAML file")
            continue
        if not name.startswith("--") or len(name) == 2:
            raise ConfigError(f"{arg}: unexpected argument; accepted: -c PATH and --option VALUE pairs (see --help)")
        option = _BY_FOLDED.get(_fold(name[2:]))
        if option is None:
            raise _unknown(name, "the command line")
        if eq:
            value = inline
        elif option.parse is _parse_bool and (i >= len(args) or args[i].lower() not in ("true", "false")):
            value = "true"  # a bare boolean flag switches it on
        elif i < len(args):
            value = args[i]
            i += 1
        else:
            raise ConfigError(f"{name}: missing value; accepted: {name} {option.kind.upper()}")
        values[option.key] = (value, f"command-line option {name}")
    return config_path, values


# --- loading -------------------------------------------------------------------------------------------


def load_config(argv: Sequence[str], environ: Mapping[str, str]) -> Config:
    """Merge defaults < ``-c`` YAML file < ``TASKFLUX_*`` environment < ``--options`` and validate.

    Raises ``HelpRequested`` for ``-h``/``--help`` (print its ``text`` and exit 0) and ``ConfigError`` with a
    one-line message for anything that cannot be used.
    """
    config_path, cli_values = _read_command_line(argv)
    env_values = _read_environment(environ)
    raw: dict[str, Any] = {}
    sources: dict[str, str] = {option.key: "default" for option in OPTIONS}
    if config_path is not None:
        for key, value in _read_file(config_path).items():
            raw[key] = value
            sources[key] = f"config file {config_path!r}"
    for layer in (env_values, cli_values):
        for key, (value, source) in layer.items():
            raw[key] = value
            sources[key] = source
    schema = ConfigSchema()
    schema.sources = sources  # type: ignore[attr-defined]
    try:
        data = schema.load(raw)
    except ValidationError as error:
        raise _one_line(error, raw, sources) from None
    return Config(**data, sources=sources)


def _one_line(error: ValidationError, raw: Mapping[str, Any], sources: Mapping[str, str]) -> ConfigError:
    messages = error.messages if isinstance(error.messages, dict) else {"_schema": error.messages}
    order = [option.key for option in OPTIONS]
    keys = sorted(messages, key=lambda k: order.index(k) if k in order else len(order))
    key = keys[0]
    detail = messages[key]
    while isinstance(detail, list | dict):
        detail = detail[0] if isinstance(detail, list) else next(iter(detail.values()))
    text = " ".join(str(detail).split())
    source = sources.get(key, "default")
    where = "" if key not in raw and source == "default" else f" (from {source})"
    if key == "cluster_peers" and key not in raw:
        where = " (set it in the config file, TASKFLUX_CLUSTER_PEERS or --cluster-peers)"
    return ConfigError(f"{key}: {text}{where}")


def help_text() -> str:
    """The ``--help`` text: every option with its format, default, environment variable and command-line name."""
    lines = [
        "usage: taskflux.py [-c CONFIG.yaml] [--option VALUE | --option=VALUE ...]",
        "",
        "Precedence: command line > environment (TASKFLUX_*) > config file > defaults.",
        "Durations: 5s, 500ms, 2m, 1h, 00:00:05, 1.00:00:00 (a bare number is seconds). Sizes: 1048576, 1MiB.",
        "",
        "  -h, --help            show this help and exit",
        "  -c, --config PATH     YAML file of options (keys as below, in snake_case)",
        "",
        "options:",
    ]
    for option in OPTIONS:
        lines.append(f"  {option.cli} {option.kind.upper().replace(' ', '_')}")
        lines.extend(textwrap.wrap(option.help, 100, initial_indent=" " * 6, subsequent_indent=" " * 6))
        lines.append(f"      default: {option.describe_default()}; env: {option.env}; yaml: {option.key}")
    return "\n".join(lines)
