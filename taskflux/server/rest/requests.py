"""Reading REST requests: bodies within limits, JSON objects and fields, query parameters, queue names;
and the error every bad input is answered with (``ApiError``)."""

from __future__ import annotations

import json
import logging
from typing import Any

import bottle

from taskflux.config import parse_duration
from taskflux.domain.names import MAX_QUEUE_NAME_BYTES, is_valid_queue_name
from taskflux.server.http import reading_body

logger = logging.getLogger("taskflux.rest")

MAX_WAIT_SECONDS = 300.0
JSON_SLACK_BYTES = 64 * 1024  # room for the JSON around a base64 payload
JSON_TYPE = "application/json"


class ApiError(Exception):
    """An answer other than success: its status and JSON body."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body
        self.headers = headers or {}


def error(status: int, reason: str, message: str, field: str | None = None, **extra: Any) -> ApiError:
    """The resource API's error: ``{"error": {"reason", "message", "field"?, ...}}``."""
    body: dict[str, Any] = {"reason": reason, "message": message}
    if field is not None:
        body["field"] = field
    body.update(extra)
    return ApiError(status, {"error": body})


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> bottle.HTTPResponse:
    response = bottle.HTTPResponse(json.dumps(body, ensure_ascii=False), status=status, headers=headers)
    response.content_type = "application/json; charset=utf-8"
    return response


def problem_document(status: int, title: str, errors: dict[str, list[str]] | None = None) -> ApiError:
    """An RFC 9457 problem document, the shape the original's framework gave its 400 and 415 answers."""
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if errors is not None:
        body["errors"] = errors
    return ApiError(status, body)


# --- reading requests -----------------------------------------------------------------------------


def read_body(limit: int) -> bytes:
    """The request body, refused with 413 beyond ``limit`` bytes before it is read into memory."""
    request = bottle.request
    length = request.content_length
    if length > limit:
        raise closing(error(413, "body_too_large", f"the body is {length} bytes, the limit is {limit}"))
    stream = request.environ["wsgi.input"]
    try:
        with reading_body(request.environ):
            data = stream.read(length) if length >= 0 else stream.read(limit + 1)
    except (OSError, ValueError) as problem:  # the client sent less than it announced, or broke the chunking
        raise closing(error(400, "incomplete_body", f"the body could not be read: {problem}")) from None
    if 0 <= length != len(data):
        raise closing(error(400, "incomplete_body", f"the body ended after {len(data)} of {length} bytes"))
    if len(data) > limit:
        raise closing(error(413, "body_too_large", f"the body exceeds the limit of {limit} bytes"))
    return data


def closing(problem: ApiError) -> ApiError:
    """``problem`` on a connection then closed: the rest of the body is not read (see taskflux.server.http)."""
    problem.headers["Connection"] = "close"
    return problem


def check_path() -> None:
    """Refuse a path that is not UTF-8 (Bottle would drop the bad bytes, turning "caf\\xe9" into "caf")."""
    raw = bottle.request.environ.get("bottle.raw_path", "")
    try:
        raw.encode("latin-1").decode("utf-8")
    except UnicodeError:
        raise error(400, "invalid_path", "the path is not valid UTF-8") from None


def media_type() -> str:
    return bottle.request.content_type.split(";")[0].strip().lower()


def read_json_object(limit: int, *, optional: bool = False) -> dict[str, Any]:
    """A JSON object body (``Content-Type: application/json``); ``{}`` for an optional empty body."""
    data = read_body(limit)
    if optional and not data.strip():
        return {}
    if media_type() != JSON_TYPE:
        raise error(415, "unsupported_media_type", f"send the body as {JSON_TYPE}")
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as problem:
        raise error(400, "invalid_json", f"the body is not valid JSON: {problem}") from None
    if not isinstance(value, dict):
        raise error(400, "invalid_json", "the body must be a JSON object")
    return value


def int_field(value: Any, field: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise error(400, "invalid_field", f"{field} must be an integer", field)
    if not low <= value <= high:
        raise error(400, "invalid_field", f"{field} must be between {low} and {high}", field)
    return value


def optional_int_field(body: dict[str, Any], field: str, low: int, high: int) -> int | None:
    value = body.get(field)
    return None if value is None else int_field(value, field, low, high)


def duration_param(name: str, default: float | None, high: float) -> float | None:
    raw = bottle.request.query.get(name)
    if raw is None:
        return default
    try:
        seconds = parse_duration(raw)
    except ValueError as problem:
        raise error(400, "invalid_parameter", f"{name}: {problem}", name) from None
    if seconds > high:
        raise error(400, "invalid_parameter", f"{name} may be at most {high:g} s", name)
    return seconds


def queue_name(raw: str) -> str:
    if not is_valid_queue_name(raw):
        raise error(400, "invalid_queue_name",
                    f"a queue name is 0-{MAX_QUEUE_NAME_BYTES} printable ASCII characters (0x21-0x7E)", "name")
    return raw
