"""Node configuration: a YAML file, ``TASKFLUX_*`` environment variables and ``--kebab-case`` options,
merged with the precedence command line > environment > file > defaults.

Usage::

    try:
        config = load_config(sys.argv[1:], os.environ)
    except HelpRequested as request:
        print(request.text); sys.exit(0)
    except ConfigError as error:
        print(f"taskflux: {error}", file=sys.stderr); sys.exit(2)
    for warning in config.warnings:  # e.g. unknown TASKFLUX_* variables, ignored
        logger.warning("%s", warning)

The package's modules, one job each: ``options`` (the option table: ``Config`` with one field per option, and
``OPTIONS`` derived from it), ``sources`` (the YAML file, the environment, the ``argparse`` command line and
``--help``), ``loading`` (merging and validation). The value formats (durations, sizes, endpoints, ...) live in
``taskflux.values``, shared with REST and the client library.
"""

from taskflux.config.errors import ConfigError, HelpRequested
from taskflux.config.loading import ConfigSchema, load_config
from taskflux.config.options import (
    DEFAULT_CLUSTER_FRAME_BYTES,
    DEFAULT_PEER_PORT,
    ENV_PREFIX,
    MAX_INT64,
    MAX_PAYLOAD_SIZE,
    MAX_REPLICATION_SEND_SIZE,
    OPTIONS,
    REQUIRED,
    Config,
    Option,
    option,
)
from taskflux.config.sources import help_text
from taskflux.values import (
    DURATION_FORMATS,
    ENDPOINT_FORMATS,
    GIB,
    KIB,
    LOG_LEVEL_FORMATS,
    MAX_PORT,
    MIB,
    SIZE_FORMATS,
    VERBOSE,
    format_endpoint,
    parse_duration,
    parse_endpoint,
    parse_size,
)

__all__ = [
    "DEFAULT_CLUSTER_FRAME_BYTES",
    "DEFAULT_PEER_PORT",
    "DURATION_FORMATS",
    "ENDPOINT_FORMATS",
    "ENV_PREFIX",
    "GIB",
    "KIB",
    "LOG_LEVEL_FORMATS",
    "MAX_INT64",
    "MAX_PAYLOAD_SIZE",
    "MAX_PORT",
    "MAX_REPLICATION_SEND_SIZE",
    "MIB",
    "OPTIONS",
    "REQUIRED",
    "SIZE_FORMATS",
    "VERBOSE",
    "Config",
    "ConfigError",
    "ConfigSchema",
    "HelpRequested",
    "Option",
    "format_endpoint",
    "help_text",
    "load_config",
    "option",
    "parse_duration",
    "parse_endpoint",
    "parse_size",
]
