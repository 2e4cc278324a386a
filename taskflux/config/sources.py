"""The three sources of option values: a YAML file, ``TASKFLUX_*`` environment variables and the command line
(an ``argparse`` parser built from the option table). Each returns raw values (as written) keyed by option,
with where each came from; parsing and validation happen in ``loading``."""

from __future__ import annotations

import argparse
import re
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

import yaml

from taskflux.config.errors import ConfigError, HelpRequested
from taskflux.config.options import BY_KEY, ENV_PREFIX, OPTIONS, Option, find_option, suggest

Raw = dict[str, tuple[Any, str]]  # key -> (the value as written, where it came from)


def unknown_option(name: str, where: str) -> ConfigError:
    """The error for a key or option name that is no option, with the likeliest one it meant."""
    guess = suggest(name)
    hint = f" (did you mean {guess.key}?)" if guess else ""
    return ConfigError(f"{name}: unknown option in {where}{hint}; accepted: {', '.join(BY_KEY)}")


# --- the YAML file -------------------------------------------------------------------------------------


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


def read_file(path: str) -> Raw:
    """The options of a YAML file: one flat mapping of snake_case keys. An unknown key is an error."""
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
        if not isinstance(key, str) or key not in BY_KEY:
            raise unknown_option(str(key), f"config file {path!r}")
    return {key: (value, f"config file {path!r}") for key, value in document.items()}


# --- the environment -----------------------------------------------------------------------------------

# What Kubernetes sets in every pod for a Service named "taskflux" (TASKFLUX_SERVICE_HOST, TASKFLUX_PORT, ...).
_SERVICE_VARIABLE = re.compile(r"SERVICE_HOST|SERVICE_PORT(_\w+)?|PORT(_\d+_(TCP|UDP|SCTP)(_ADDR|_PORT|_PROTO)?)?")


def read_environment(environ: Mapping[str, str]) -> tuple[Raw, str | None]:
    """The options set as ``TASKFLUX_*`` variables, and one warning line naming the ``TASKFLUX_*`` variables
    that are no option (None if there are none): they are ignored, as etcd ignores unknown ``ETCD_*``."""
    values: Raw = {}
    typos: list[str] = []
    services: list[str] = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX):
            continue
        option = find_option(name[len(ENV_PREFIX) :])
        if option is not None:
            values[option.key] = (environ[name], f"environment variable {name}")
        elif _SERVICE_VARIABLE.fullmatch(name[len(ENV_PREFIX) :]):
            services.append(name)
        else:
            guess = suggest(name[len(ENV_PREFIX) :])
            typos.append(f"{name} (did you mean {guess.env}?)" if guess else name)
    if not typos and not services:
        return values, None
    parts = [", ".join(typos)] if typos else []
    if services:
        parts.append(f"set by Kubernetes for a Service named taskflux: {', '.join(services)}")
    return values, f"ignoring {ENV_PREFIX}* environment variables that are not options (see --help): {'; '.join(parts)}"


# --- the command line ----------------------------------------------------------------------------------

USAGE = "taskflux.py [-h] [-c CONFIG.yaml] [--option VALUE | --option=VALUE ...]"
_DESCRIPTION = (
    "Start a TaskFlux node.\n\n"
    "Precedence: command line > environment (TASKFLUX_*) > config file > defaults.\n"
    "Durations: 5s, 500ms, 2m, 1h, 00:00:05, 1.00:00:00 (a bare number is seconds). Sizes: 1048576, 1MiB.\n"
    "Option names match ignoring case, '-' and '_'; a boolean option without a value means true."
)
_MISSING = object()  # the value of an option given last on the command line without one
_TRUE = "true"  # the value of a boolean option given without one


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message}; accepted: -c PATH and --option VALUE pairs (see --help)")


class _Formatter(argparse.RawTextHelpFormatter):
    """Shows an option's value as required (``--port PORT``): every option takes an optional value only so that
    a missing one is reported by name, and a boolean's may be left out. The same width on every terminal."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=100)

    def _format_args(self, action: argparse.Action, default_metavar: str) -> str:
        if action.nargs == argparse.OPTIONAL and action.const is _MISSING:
            return str(self._metavar_formatter(action, default_metavar)(1)[0])
        return super()._format_args(action, default_metavar)


class _Help(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        raise HelpRequested(parser.format_help())


class _Store(argparse.Action):
    """Records ``(value, "command-line option --name")`` in ``namespace.given`` under the option's key."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if values is _MISSING:
            raise ConfigError(f"{option_string}: missing value; accepted: {option_string} {self.metavar}")
        namespace.given[self.dest] = (values, f"command-line option {option_string}")


def _metavar(option: Option) -> str:
    return option.kind.upper().replace(" ", "_")


def _help(option: Option) -> str:
    lines = textwrap.wrap(option.help, 76)
    lines.append(f"default: {option.describe_default()}")
    lines.append(f"env: {option.env}; yaml: {option.key}")
    return "\n".join(lines)


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="taskflux.py", usage=USAGE, description=_DESCRIPTION, add_help=False, allow_abbrev=False,
                     exit_on_error=False, formatter_class=_Formatter)
    parser.add_argument("-h", "--help", action=_Help, nargs=0, help="show this help and exit")
    parser.add_argument("-c", "--config", action=_Store, dest="config", nargs="?", const=_MISSING, metavar="PATH",
                        help="YAML file of options (keys as below, in snake_case)")
    group = parser.add_argument_group("node options (each also a TASKFLUX_* environment variable and a YAML key)")
    for option in OPTIONS:
        boolean = option.kind == "boolean"
        group.add_argument(option.cli, action=_Store, dest=option.key, nargs="?", const=_TRUE if boolean else _MISSING,
                           metavar="true|false" if boolean else _metavar(option), help=_help(option))
    return parser


_PARSER = _build_parser()


def help_text() -> str:
    """The ``--help`` text: every option with its format, default, environment variable and command-line name."""
    return _PARSER.format_help()


def _canonical(arg: str) -> str:
    """``--ClusterNodeId=1`` → ``--cluster-node-id=1``: option names match ignoring case, '-' and '_'."""
    if not arg.startswith("--") or len(arg) == 2:
        return arg
    name, eq, value = arg.partition("=")
    option = find_option(name[2:])
    return option.cli + eq + value if option is not None else arg


def read_command_line(argv: Sequence[str]) -> tuple[str | None, Raw]:
    """The ``-c`` file (if any) and the options given as ``--kebab-case VALUE`` or ``--kebab-case=VALUE``
    (the last one of an option wins). Raises ``HelpRequested`` for ``-h``/``--help``."""
    namespace = argparse.Namespace(given={})
    try:
        _, rest = _PARSER.parse_known_args([_canonical(arg) for arg in argv], namespace)
    except argparse.ArgumentError as error:
        raise ConfigError(f"{error}; accepted: -c PATH and --option VALUE pairs (see --help)") from None
    if rest:
        first = rest[0]
        if first.startswith("--") and len(first) > 2:
            raise unknown_option(first.partition("=")[0], "the command line")
        raise ConfigError(f"{first}: unexpected argument; accepted: -c PATH and --option VALUE pairs (see --help)")
    given: Raw = namespace.given
    config = given.pop("config", None)
    return (config[0] if config else None), given
