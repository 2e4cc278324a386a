"""Loading: the sources merged with the precedence command line > environment > file > defaults, every value
parsed by its option's parser and the combinations checked by one marshmallow schema built from the table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, validates_schema

from taskflux.config.errors import ConfigError
from taskflux.config.options import DEFAULT_PEER_PORT, OPTIONS, Config, Option, ticks
from taskflux.config.sources import Raw, read_command_line, read_environment, read_file
from taskflux.values import format_endpoint, is_wildcard


def load_config(argv: Sequence[str], environ: Mapping[str, str]) -> Config:
    """Merge defaults < ``-c`` YAML file < ``TASKFLUX_*`` environment < ``--options`` and validate.

    Raises ``HelpRequested`` for ``-h``/``--help`` (print its ``text`` and exit 0) and ``ConfigError`` with a
    one-line message for anything that cannot be used. Unknown ``TASKFLUX_*`` variables are not an error: they
    are named in ``Config.warnings`` for the node to log.
    """
    config_path, cli_values = read_command_line(argv)
    env_values, env_warning = read_environment(environ)
    layers: list[Raw] = [read_file(config_path) if config_path is not None else {}, env_values, cli_values]
    raw: dict[str, Any] = {}
    sources: dict[str, str] = {option.key: "default" for option in OPTIONS}
    for layer in layers:
        for key, (value, source) in layer.items():
            raw[key] = value
            sources[key] = source
    schema = ConfigSchema()
    schema.sources = sources  # type: ignore[attr-defined]
    try:
        data = schema.load(raw)
    except ValidationError as error:
        raise _one_line(error, raw, sources) from None
    return Config(**data, sources=sources, warnings=(env_warning,) if env_warning else ())


def _one_line(error: ValidationError, raw: Mapping[str, Any], sources: Mapping[str, str]) -> ConfigError:
    """The first problem (in table order) as ``key: what is wrong; accepted: ... (from <source>)``."""
    messages = error.messages if isinstance(error.messages, dict) else {"_schema": error.messages}
    order = [option.key for option in OPTIONS]
    key = min(messages, key=lambda k: order.index(k) if k in order else len(order))
    detail = messages[key]
    while isinstance(detail, list | dict):
        detail = detail[0] if isinstance(detail, list) else next(iter(detail.values()))
    text = " ".join(str(detail).split())
    source = sources.get(key, "default")
    where = "" if key not in raw and source == "default" else f" (from {source})"
    if key == "cluster_peers" and key not in raw:
        where = " (set it in the config file, TASKFLUX_CLUSTER_PEERS or --cluster-peers)"
    return ConfigError(f"{key}: {text}{where}")


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
        if option.key == "cluster_peers":  # required unless cluster_join: see _combinations
            result[option.key] = _OptionField(option, load_default=())
        elif option.default is None:
            result[option.key] = _OptionField(option, load_default=None)
        else:
            result[option.key] = _OptionField(option, load_default=option.parse(option.default))
    return result


def _is_tick_multiple(duration: float, tick: float) -> bool:
    count = duration / tick
    return round(count) >= 1 and abs(count - round(count)) < 1e-6


class _ConfigSchemaBase(Schema):
    """Checks between options, and the defaults derived from other options."""

    sources: Mapping[str, str] = {}

    def _other(self, key: str, value: str) -> str:
        """How another key involved in a combination reads in a message: its value and, if set, its source."""
        source = self.sources.get(key, "default")
        return f"{key} ({value})" if source == "default" else f"{key} ({value}, from {source})"

    @validates_schema
    def _combinations(self, data: dict[str, Any], **kwargs: Any) -> None:
        peers = data["cluster_peers"]
        node_id = data["cluster_node_id"]
        if not peers and not data["cluster_join"]:
            raise ValidationError("missing; accepted: one or more host:port entries, this node included",
                                  field_name="cluster_peers")
        if node_id >= len(peers) and not data["cluster_join"]:
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
        if ticks(data["raft_heartbeat_interval"], tick) >= ticks(data["raft_election_timeout"], tick):
            raise ValidationError(
                f"{data['raft_heartbeat_interval']:g}s is not below "
                f"{self._other('raft_election_timeout', format(data['raft_election_timeout'], 'g') + 's')}; "
                f"accepted: a shorter interval",
                field_name="raft_heartbeat_interval",
            )
        for name in ("tcp_adapter_advertise_address", "http_advertise_address"):
            advertised = data[name]
            if advertised is not None and is_wildcard(advertised[0]):
                raise ValidationError(
                    f"{format_endpoint(*advertised)} is a wildcard address clients cannot dial; "
                    f"accepted: a host:port clients can reach",
                    field_name=name,
                )

    @post_load
    def _derive(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        peers, node_id = data["cluster_peers"], data["cluster_node_id"]
        if node_id < len(peers):
            own_host, own_port = peers[node_id]
        else:  # a node joining a running cluster: its own listener says where it is
            listen = data["cluster_listen_host"]
            own_host, own_port = ("localhost" if is_wildcard(listen) else listen), DEFAULT_PEER_PORT
        if data["cluster_listen_port"] is None:
            data["cluster_listen_port"] = own_port
        if data["tcp_adapter_advertise_address"] is None:
            data["tcp_adapter_advertise_address"] = (own_host, data["tcp_adapter_listen_port"])
        if data["http_advertise_address"] is None:
            http_host, http_port = data["http_listen_address"]
            wildcard = http_host in ("", "*") or is_wildcard(http_host)
            data["http_advertise_address"] = (own_host if wildcard else http_host, http_port)
        return data


ConfigSchema: type[Schema] = _ConfigSchemaBase.from_dict(_schema_fields(), name="ConfigSchema")  # type: ignore[arg-type]
