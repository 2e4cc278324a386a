"""Value formats shared by the node's configuration, REST and the client library: durations, sizes, integers,
booleans, hosts and ``host:port`` endpoints.

Every parser takes what a user wrote (a string, or a YAML scalar) and returns the value, or raises
``ValueError("<value> is not a ...; accepted: <what is>")``. This module imports nothing but the standard
library, so that the client library can use it without the server's dependencies.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import re
from collections.abc import Callable
from typing import Any

__all__ = [
    "DURATION_FORMATS",
    "ENDPOINT_FORMATS",
    "GIB",
    "KIB",
    "LOG_LEVEL_FORMATS",
    "MAX_PORT",
    "MIB",
    "SIZE_FORMATS",
    "VERBOSE",
    "format_endpoint",
    "is_wildcard",
    "parse_bool",
    "parse_duration",
    "parse_endpoint",
    "parse_endpoint_list",
    "parse_host",
    "parse_int",
    "parse_log_format",
    "parse_log_level",
    "parse_path",
    "parse_port",
    "parse_size",
    "positive_duration",
    "ranged",
    "show",
]

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
MAX_PORT = 65535
VERBOSE = 5  # the original's "Verbose" log level, below Python's DEBUG


def show(value: Any) -> str:
    """``repr(value)`` cut to 80 characters, for error messages."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# --- durations -----------------------------------------------------------------------------------------

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_UNIT_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_TIMESPAN_RE = re.compile(r"(?:(\d+)\.)?(\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:\.(\d{1,7}))?)?")
DURATION_FORMATS = "'5s', '500ms', '2m', '1h', '1h30m', a number of seconds, or hh:mm:ss / d.hh:mm:ss[.fffffff]"


def parse_duration(value: Any) -> float:
    """A duration in seconds from ``5s``, ``500ms``, ``1h30m``, ``00:00:05``, ``1.00:00:00`` or a bare number
    of seconds (the original read a bare number as days). Negative durations are refused."""
    seconds = math.nan
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        elif re.fullmatch(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+", text):
            seconds = sum(float(number) * _UNITS[unit] for number, unit in _UNIT_RE.findall(text))
        elif match := _TIMESPAN_RE.fullmatch(text):
            days, hours, minutes, secs, fraction = match.groups()
            if int(hours) < 24 and int(minutes) < 60 and int(secs or 0) < 60:
                seconds = int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + int(secs or 0)
                seconds += int(fraction) / 10 ** len(fraction) if fraction else 0.0
    if not math.isfinite(seconds) or seconds < 0:  # nan: not a duration at all
        raise ValueError(f"{show(value)} is not a duration; accepted: {DURATION_FORMATS}")
    return seconds


def positive_duration(value: Any) -> float:
    """A duration above zero (see ``parse_duration``)."""
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"{show(value)} is not a positive duration; accepted: more than 0, {DURATION_FORMATS}")
    return seconds


# --- sizes, integers, booleans -------------------------------------------------------------------------

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
    raise ValueError(f"{show(value)} is not a size; accepted: {SIZE_FORMATS}")


def parse_int(value: Any) -> int:
    """A decimal integer (a YAML integer or a string of digits with an optional sign)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
        return int(value)
    raise ValueError(f"{show(value)} is not an integer; accepted: a decimal integer")


def parse_bool(value: Any) -> bool:
    """``true``/``false`` in any case, or a YAML boolean."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"{show(value)} is not a boolean; accepted: true, false (any case)")


def ranged(parse: Callable[[Any], int], low: int, high: int, accepted: str) -> Callable[[Any], int]:
    """``parse`` followed by a check that the number lies in ``low..high`` (``accepted`` says so in errors)."""

    def check(value: Any) -> int:
        number = parse(value)
        if not low <= number <= high:
            raise ValueError(f"{show(value)} is out of range; accepted: {accepted}")
        return number

    return check


parse_port = ranged(parse_int, 1, MAX_PORT, "1..65535")


# --- hosts and endpoints -------------------------------------------------------------------------------

_HOSTNAME_RE = re.compile(r"(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?")
ENDPOINT_FORMATS = "host[:port], a.b.c.d[:port] or [ipv6][:port] with port 1..65535"


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(_HOSTNAME_RE.fullmatch(host))


def parse_host(value: Any) -> str:
    """An IPv4/IPv6 address (brackets allowed and dropped) or a DNS name, without a port."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        if _valid_host(text):
            return text
    raise ValueError(f"{show(value)} is not a host; accepted: an IPv4/IPv6 address or a DNS name, without port")


def parse_endpoint(value: Any, default_port: int | None = None) -> tuple[str, int]:
    """``(host, port)`` from ``host[:port]``, ``a.b.c.d[:port]`` or ``[v6addr][:port]`` (the brackets are dropped).
    A missing port is ``default_port``; with ``default_port=None`` the port is required."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{show(value)} is not an address; accepted: {ENDPOINT_FORMATS}")
    text = value.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{show(value)} is not an address; accepted: {ENDPOINT_FORMATS}")
        port_text = rest[1:] if rest else None
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{show(value)} is not an address; accepted: {ENDPOINT_FORMATS}") from None
    else:
        if text.count(":") > 1:
            raise ValueError(f"{show(value)} is not an address (put IPv6 in brackets); accepted: {ENDPOINT_FORMATS}")
        host, sep, port_text_raw = text.partition(":")
        port_text = port_text_raw if sep else None
        if not _valid_host(host):
            raise ValueError(f"{show(value)} is not an address; accepted: {ENDPOINT_FORMATS}")
    if port_text is None:
        if default_port is None:
            raise ValueError(f"{show(value)} has no port; accepted: host:port or [ipv6]:port with port 1..65535")
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= MAX_PORT:
        raise ValueError(f"{show(value)} has a bad port; accepted: {ENDPOINT_FORMATS}")
    return host, int(port_text)


def format_endpoint(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets (what ``parse_endpoint`` reads back)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_wildcard(host: str) -> bool:
    """True for the addresses that mean "every interface" (``0.0.0.0``, ``::``), which nobody can dial."""
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def parse_endpoint_list(value: Any, default_port: int) -> tuple[tuple[str, int], ...]:
    """Distinct endpoints from a YAML list or a string separated by spaces or commas (at least one)."""
    if isinstance(value, str):
        items: list[Any] = [item for item in re.split(r"[\s,]+", value) if item]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ValueError(f"{show(value)} is not a peer list; accepted: a YAML list or a space-separated string")
    if not items:
        raise ValueError("the peer list is empty; accepted: one or more host:port entries, this node included")
    endpoints = tuple(parse_endpoint(item, default_port) for item in items)
    for i, endpoint in enumerate(endpoints):
        if endpoint in endpoints[:i]:
            raise ValueError(f"{format_endpoint(*endpoint)} is listed twice; accepted: distinct host:port entries")
    return endpoints


# --- log settings and paths ----------------------------------------------------------------------------

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


def parse_log_level(value: Any) -> int:
    """A ``logging`` level number from the original's level names (or their number 0..5) or Python's."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 5:
        return _LOG_LEVEL_NUMBERS[value]
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _LOG_LEVELS:
            return _LOG_LEVELS[text]
        if text.isdigit() and int(text) <= 5:
            return _LOG_LEVEL_NUMBERS[int(text)]
    raise ValueError(f"{show(value)} is not a log level; accepted: {LOG_LEVEL_FORMATS}")


def parse_log_format(value: Any) -> str:
    """``json`` or ``text``, any case."""
    if isinstance(value, str) and value.strip().lower() in ("json", "text"):
        return value.strip().lower()
    raise ValueError(f"{show(value)} is not a log format; accepted: json, text")


def parse_path(value: Any) -> str:
    """A non-empty filesystem path, as written."""
    if isinstance(value, str) and value.strip() and "\0" not in value:
        return value
    raise ValueError(f"{show(value)} is not a directory path; accepted: a non-empty path")
