"""The console's grammar (the original InteractiveConsole's, docs/client.md) and its output, without any I/O.

:func:`parse` turns one line into a command or raises :class:`ConsoleSyntaxError`; :func:`run` executes a command
against a client and returns the text to print."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from taskflux.client.client import MAX_BATCH as MAX_PEEK
from taskflux.client.client import DequeuedRecord, PeekedRecord, QueueSummary
from taskflux.domain.errors import INT32_MAX, INT64_MAX, INT64_MIN
from taskflux.domain.policies import MAX_DELAY_MS

MAX_DELAY_SECONDS = MAX_DELAY_MS // 1000

HELP = """\
Commands (keywords are case-insensitive; QUEUE defaults to the default queue "" where it is optional):
  enqueue [QUEUE] KEY WORD...   add a record: KEY is its priority (Int64, smaller first), the words joined by
                                single spaces are its payload (UTF-8); if the first argument is a number it is
                                the KEY and the default queue is used
  schedule QUEUE SECONDS KEY WORD...
                                add a record that is not handed out before SECONDS from now
  dequeue [QUEUE]               take the most urgent record, print it and acknowledge it
  peek [QUEUE] [N]              show the next N (default 10) records without taking them
  count [QUEUE]                 number of records ready in the queue
  create QUEUE [WITHMAXSIZE n] [WITHMAXPAYLOAD n] [WITHPRIORITYRANGE min max] [TYPE h4|qa]
         [MAXDELIVERIES n DEADLETTER queue] [RETRYDELAY s] [BACKOFF fixed|exponential]
         [RETRYMAXDELAY s] [DEDUPWINDOW s]
                                create a queue; TYPE qa needs WITHPRIORITYRANGE; a record nacked MAXDELIVERIES
                                times moves to the DEADLETTER queue; a nacked record waits RETRYDELAY seconds
  delete QUEUE                  delete a queue and its records
  list                          every queue with its count and limits
  help                          this text
  exit                          leave (Ctrl-D too)"""


class ConsoleSyntaxError(ValueError):
    """A line that does not follow the console's grammar; the message says what is expected."""


@dataclass(frozen=True, slots=True)
class Enqueue:
    """``enqueue [QUEUE] KEY WORD...``"""

    queue: str
    key: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Dequeue:
    """``dequeue [QUEUE]``"""

    queue: str


@dataclass(frozen=True, slots=True)
class Schedule:
    """``schedule QUEUE SECONDS KEY WORD...``"""

    queue: str
    delay: float
    key: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Peek:
    """``peek [QUEUE] [N]``"""

    queue: str
    limit: int = 10


@dataclass(frozen=True, slots=True)
class Count:
    """``count [QUEUE]``"""

    queue: str


@dataclass(frozen=True, slots=True)
class Create:
    """``create QUEUE [WITHMAXSIZE n] [WITHMAXPAYLOAD n] [WITHPRIORITYRANGE min max] [TYPE h4|qa]``"""

    queue: str
    implementation: str = "h4"
    max_queue_size: int | None = None
    max_payload_size: int | None = None
    priority_range: tuple[int, int] | None = None
    delivery: tuple[tuple[str, object], ...] = ()  # keyword arguments of TaskFluxClient.create_queue


@dataclass(frozen=True, slots=True)
class Delete:
    """``delete QUEUE``"""

    queue: str


@dataclass(frozen=True, slots=True)
class ListQueues:
    """``list``"""


@dataclass(frozen=True, slots=True)
class Help:
    """``help``"""


@dataclass(frozen=True, slots=True)
class Exit:
    """``exit``"""


ConsoleCommand = Enqueue | Schedule | Dequeue | Peek | Count | Create | Delete | ListQueues | Help | Exit


_BARE: dict[str, ConsoleCommand] = {"list": ListQueues(), "help": Help(), "exit": Exit(), "quit": Exit()}


def parse(line: str) -> ConsoleCommand | None:
    """The command on ``line``, None for a blank line. Raises ConsoleSyntaxError with a readable message."""
    words = line.split()
    if not words:
        return None
    verb, args = words[0].lower(), words[1:]
    if verb == "enqueue":
        return _enqueue(args)
    if verb == "schedule":
        return _schedule(args)
    if verb == "dequeue":
        return Dequeue(_optional_queue("dequeue [QUEUE]", args))
    if verb == "peek":
        return _peek(args)
    if verb == "count":
        return Count(_optional_queue("count [QUEUE]", args))
    if verb == "create":
        return _create(args)
    if verb == "delete":
        if len(args) != 1:
            raise ConsoleSyntaxError("usage: delete QUEUE")
        return Delete(args[0])
    if verb in _BARE:
        if args:
            raise ConsoleSyntaxError(f"usage: {verb} (no arguments)")
        return _BARE[verb]
    raise ConsoleSyntaxError(f"unknown command {words[0]!r}; type 'help' for the list of commands")


def _int(text: str) -> int | None:
    try:
        return int(text, 10)
    except ValueError:
        return None


def _int64(text: str) -> int | None:
    value = _int(text)
    return value if value is not None and INT64_MIN <= value <= INT64_MAX else None


def _enqueue(args: list[str]) -> Enqueue:
    usage = "usage: enqueue [QUEUE] KEY WORD...  (KEY is an integer priority)"
    if not args:
        raise ConsoleSyntaxError(usage)
    key = _int64(args[0])
    if key is not None:
        return Enqueue("", key, " ".join(args[1:]).encode("utf-8"))
    if len(args) < 2:
        raise ConsoleSyntaxError(usage)
    key = _int64(args[1])
    if key is None:
        raise ConsoleSyntaxError(f"KEY must be an integer between {INT64_MIN} and {INT64_MAX}, got {args[1]!r}")
    return Enqueue(args[0], key, " ".join(args[2:]).encode("utf-8"))


def _schedule(args: list[str]) -> Schedule:
    if len(args) < 3:
        raise ConsoleSyntaxError("usage: schedule QUEUE SECONDS KEY WORD...")
    delay, key = _seconds(args[1], "SECONDS"), _int64(args[2])
    if key is None:
        raise ConsoleSyntaxError(f"KEY must be an integer between {INT64_MIN} and {INT64_MAX}, got {args[2]!r}")
    return Schedule(args[0], delay, key, " ".join(args[3:]).encode("utf-8"))


def _peek(args: list[str]) -> Peek:
    if len(args) > 2:
        raise ConsoleSyntaxError("usage: peek [QUEUE] [N]")
    if args and (limit := _int(args[-1])) is not None:
        if not 1 <= limit <= MAX_PEEK:
            raise ConsoleSyntaxError(f"N must be between 1 and {MAX_PEEK}")
        return Peek(args[0] if len(args) == 2 else "", limit)
    if len(args) == 2:
        raise ConsoleSyntaxError(f"N must be a number, got {args[1]!r}")
    return Peek(args[0] if args else "")


def _seconds(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= MAX_DELAY_SECONDS:
        raise ConsoleSyntaxError(f"{what} must be a number of seconds between 0 and {MAX_DELAY_SECONDS}, got {text!r}")
    return value


def _optional_queue(usage: str, args: list[str]) -> str:
    if len(args) > 1:
        raise ConsoleSyntaxError(f"usage: {usage}")
    return args[0] if args else ""


def _create(args: list[str]) -> Create:
    usage = "usage: create QUEUE [WITHMAXSIZE n] [WITHMAXPAYLOAD n] [WITHPRIORITYRANGE min max] [TYPE h4|qa]"
    if not args:
        raise ConsoleSyntaxError(usage)
    queue, rest = args[0], args[1:]
    options: dict[str, object] = {}
    i = 0
    while i < len(rest):
        option = rest[i].upper()
        if option in options:
            raise ConsoleSyntaxError(f"{option} given twice")
        if option in ("WITHMAXSIZE", "WITHMAXPAYLOAD"):
            if i + 1 >= len(rest):
                raise ConsoleSyntaxError(f"{option} needs a number")
            value = _int(rest[i + 1])
            if value is None or not 0 <= value <= INT32_MAX:
                raise ConsoleSyntaxError(f"{option} needs a number between 0 and {INT32_MAX}, got {rest[i + 1]!r}")
            options[option] = value
            i += 2
        elif option == "WITHPRIORITYRANGE":
            if i + 2 >= len(rest):
                raise ConsoleSyntaxError("WITHPRIORITYRANGE needs two numbers: min max")
            low, high = _int64(rest[i + 1]), _int64(rest[i + 2])
            if low is None or high is None:
                raise ConsoleSyntaxError(f"WITHPRIORITYRANGE needs two integers, got {rest[i + 1]!r} {rest[i + 2]!r}")
            if high < low:
                raise ConsoleSyntaxError(f"WITHPRIORITYRANGE: max {high} is below min {low}")
            options[option] = (low, high)
            i += 3
        elif option == "TYPE":
            if i + 1 >= len(rest) or rest[i + 1].lower() not in ("h4", "qa"):
                raise ConsoleSyntaxError("TYPE must be h4 or qa")
            options[option] = rest[i + 1].lower()
            i += 2
        elif option in DELIVERY_OPTIONS:
            if i + 1 >= len(rest):
                raise ConsoleSyntaxError(f"{option} needs a value")
            options[option] = _delivery_option(option, rest[i + 1])
            i += 2
        else:
            raise ConsoleSyntaxError(f"unknown option {rest[i]!r}; {usage}")
    implementation = str(options.get("TYPE", "h4"))
    priority_range = options.get("WITHPRIORITYRANGE")
    if implementation == "qa" and priority_range is None:
        raise ConsoleSyntaxError("TYPE qa needs WITHPRIORITYRANGE min max")
    if ("MAXDELIVERIES" in options) != ("DEADLETTER" in options):
        raise ConsoleSyntaxError("MAXDELIVERIES and DEADLETTER go together")
    return Create(
        queue,
        implementation,
        options.get("WITHMAXSIZE"),  # type: ignore[arg-type]
        options.get("WITHMAXPAYLOAD"),  # type: ignore[arg-type]
        priority_range,  # type: ignore[arg-type]
        tuple((DELIVERY_OPTIONS[option], value) for option, value in options.items() if option in DELIVERY_OPTIONS),
    )


DELIVERY_OPTIONS = {"MAXDELIVERIES": "max_deliveries", "DEADLETTER": "dead_letter_queue", "RETRYDELAY": "retry_delay",
                    "BACKOFF": "retry_backoff", "RETRYMAXDELAY": "retry_max_delay", "DEDUPWINDOW": "dedup_window"}


def _delivery_option(option: str, text: str) -> object:
    if option == "MAXDELIVERIES":
        value = _int(text)
        if value is None or not 1 <= value <= INT32_MAX:
            raise ConsoleSyntaxError(f"MAXDELIVERIES needs a number between 1 and {INT32_MAX}, got {text!r}")
        return value
    if option == "DEADLETTER":
        return text
    if option == "BACKOFF":
        if text.lower() not in ("fixed", "exponential"):
            raise ConsoleSyntaxError("BACKOFF must be fixed or exponential")
        return text.lower()
    return _seconds(text, option)


class Client(Protocol):
    """What the console needs of a client (a TaskFluxClient, or a fake in tests)."""

    def enqueue(self, queue: str, priority: int, payload: bytes, *, delay: float = ...) -> int | None: ...
    def dequeue(self, queue: str = "", wait: float = 0.0) -> DequeuedRecord | None: ...
    def peek(self, queue: str = "", limit: int = 10) -> list[PeekedRecord]: ...
    def count(self, queue: str = "") -> int: ...
    def create_queue(self, name: str, implementation: str = ..., max_queue_size: int | None = None,
                     max_payload_size: int | None = None, priority_range: tuple[int, int] | None = None, *,
                     max_deliveries: int | None = ..., dead_letter_queue: str | None = ..., retry_delay: float = ...,
                     retry_backoff: str = ..., retry_max_delay: float = ..., dedup_window: float = ...) -> None: ...
    def delete_queue(self, name: str) -> None: ...
    def list_queues(self) -> list[QueueSummary]: ...


def run(command: ConsoleCommand, client: Client) -> str:
    """Execute ``command`` and return what to print. Client errors propagate (the loop prints them)."""
    if isinstance(command, Enqueue):
        client.enqueue(command.queue, command.key, command.payload)
        return "ok"
    if isinstance(command, Schedule):
        record_id = client.enqueue(command.queue, command.key, command.payload, delay=command.delay)
        return f"ok (id {record_id}, due in {command.delay:g} s)"
    if isinstance(command, Dequeue):
        record = client.dequeue(command.queue)
        if record is None:
            return f"queue {display_name(command.queue)} is empty"
        record.ack()
        failed = f", {record.failed_deliveries} failed deliveries" if record.failed_deliveries else ""
        return f"key {record.priority} (id {record.id}{failed}): {format_payload(record.payload)}"
    if isinstance(command, Peek):
        records = client.peek(command.queue, command.limit)
        if not records:
            return f"queue {display_name(command.queue)} has no ready record"
        return "\n".join(f"key {record.priority} (id {record.id}, {record.failed_deliveries} failed deliveries): "
                         f"{format_payload(record.payload)}" for record in records)
    if isinstance(command, Count):
        return str(client.count(command.queue))
    if isinstance(command, Create):
        client.create_queue(command.queue, command.implementation, command.max_queue_size,
                            command.max_payload_size, command.priority_range,
                            **dict(command.delivery))  # type: ignore[arg-type]  # parsed per option
        return "ok"
    if isinstance(command, Delete):
        client.delete_queue(command.queue)
        return "ok"
    if isinstance(command, ListQueues):
        return format_queues(client.list_queues())
    if isinstance(command, Help):
        return HELP
    return ""


def display_name(name: str) -> str:
    """A queue name for display; the default queue shows as '"" (default)' (a real name has no spaces)."""
    return '"" (default)' if name == "" else name


def format_payload(payload: bytes) -> str:
    """The payload as UTF-8 text; bytes that are not UTF-8 show as \\xNN escapes."""
    return payload.decode("utf-8", "backslashreplace")


def format_queues(queues: list[QueueSummary]) -> str:
    """A table of queues: name, count, limits."""
    if not queues:
        return "no queues"
    rows = [("QUEUE", "COUNT", "LIMITS")]
    extended = any(queue.delayed is not None for queue in queues)
    for queue in sorted(queues, key=lambda q: q.name):
        limits = []
        if queue.max_queue_size is not None:
            limits.append(f"max-queue-size={queue.max_queue_size}")
        if queue.max_payload_size is not None:
            limits.append(f"max-payload-size={queue.max_payload_size}")
        if queue.priority_range is not None:
            limits.append(f"priority-range={queue.priority_range[0]}..{queue.priority_range[1]}")
        if extended:
            limits = [f"delayed={queue.delayed} reserved={queue.reserved}", *limits,
                      *(f"{key}={queue.metadata[key]}" for key in ("max-deliveries", "dead-letter-queue")
                        if key in queue.metadata)]
        rows.append((display_name(queue.name), str(queue.count), " ".join(limits) or "-"))
    width_name = max(len(row[0]) for row in rows)
    width_count = max(len(row[1]) for row in rows)
    return "\n".join(f"{n:<{width_name}}  {c:>{width_count}}  {limits}" for n, c, limits in rows)
