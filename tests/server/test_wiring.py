"""Each component is handed the settings it reads, built from the node's configuration in ``main.py``."""

from __future__ import annotations

from taskflux.config import load_config
from taskflux.server.main import client_port_settings
from taskflux.server.tcp import ClientPortSettings


def test_the_client_port_gets_each_of_its_options() -> None:
    config = load_config(
        ["--cluster-peers", "127.0.0.1:5000", "--tcp-adapter-listen-host", "127.0.0.2",
         "--tcp-adapter-listen-port", "3002", "--tcp-adapter-backlog-size", "7",
         "--tcp-adapter-max-connections", "11", "--tcp-adapter-idle-timeout", "13s",
         "--tcp-adapter-handshake-timeout", "3s", "--max-payload-size", "1KiB"],
        {},
    )
    assert client_port_settings(config) == ClientPortSettings(
        listen_host="127.0.0.2", listen_port=3002, backlog=7, max_connections=11, idle_timeout=13.0,
        handshake_timeout=3.0, max_payload_size=1024,
    )


def test_the_client_port_defaults_are_the_options_defaults() -> None:
    config = load_config(["--cluster-peers", "127.0.0.1:5000"], {})
    assert client_port_settings(config) == ClientPortSettings(config.tcp_adapter_listen_host,
                                                              config.tcp_adapter_listen_port)
