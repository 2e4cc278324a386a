"""The TaskFlux console: ``python -m taskflux.client [-e host:port ...] [COMMAND ...]``.

Without a command it reads commands line by line (with readline history in ~/.taskflux_history when the terminal is
interactive); with one it runs it and exits (status 1 on error)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from typing import TextIO

from taskflux.client.client import TaskFluxClient
from taskflux.client.console import ConsoleCommand, ConsoleSyntaxError, Exit, parse, run
from taskflux.client.errors import OutcomeUnknown, TaskFluxError

HISTORY_FILE = "~/.taskflux_history"
HISTORY_LENGTH = 1000
PROMPT = "taskflux> "


def main(argv: Sequence[str] | None = None, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    """Run the console; returns the process exit status."""
    args = _arguments().parse_args(argv)
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    try:
        client = TaskFluxClient(args.endpoint or ["127.0.0.1:2602"], timeout=args.timeout)
    except ValueError as exc:
        print(f"error: {exc}", file=stdout)
        return 2
    with client:
        if args.command:
            return 0 if execute(" ".join(args.command), client, stdout) else 1
        interactive = stdin.isatty() and stdout.isatty()
        if interactive:
            print(f"TaskFlux console, cluster {' '.join(client.endpoints)}. Type 'help' for commands.", file=stdout)
        status = 0
        with _history(enabled=interactive):
            for line in _lines(stdin, stdout, interactive):
                try:
                    command = parse(line)
                except ConsoleSyntaxError as exc:
                    print(f"error: {exc}", file=stdout)
                    status = 1
                    continue
                if isinstance(command, Exit):
                    break
                if command is not None and not execute_command(command, client, stdout):
                    status = 1
        return status if not interactive else 0


def execute(line: str, client: TaskFluxClient, stdout: TextIO) -> bool:
    """Parse and run one line, printing the result or a one-line error. False on error."""
    try:
        command = parse(line)
    except ConsoleSyntaxError as exc:
        print(f"error: {exc}", file=stdout)
        return False
    if command is None or isinstance(command, Exit):
        return True
    return execute_command(command, client, stdout)


def execute_command(command: ConsoleCommand, client: TaskFluxClient, stdout: TextIO) -> bool:
    """Run a parsed command, printing the result or a one-line error. False on error."""
    try:
        output = run(command, client)
    except OutcomeUnknown as exc:
        print(f"outcome unknown: {exc}", file=stdout)
        return False
    except (TaskFluxError, ValueError) as exc:
        print(f"error: {exc}", file=stdout)
        return False
    except KeyboardInterrupt:
        client.reset()
        print("interrupted", file=stdout)
        return False
    if output:
        print(output, file=stdout)
    return True


def _arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m taskflux.client",
        description="TaskFlux console: enqueue, dequeue, count, create, delete and list queues.",
        epilog="Without COMMAND, commands are read line by line; type 'help' for the grammar.",
    )
    parser.add_argument("-e", "--endpoint", action="append", metavar="HOST:PORT",
                        help="client port of a node (repeatable; default 127.0.0.1:2602)")
    parser.add_argument("-t", "--timeout", type=float, default=5.0,
                        help="seconds allowed for each command, retries included (default 5)")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND",
                        help="one command to run instead of the interactive loop, e.g. count jobs")
    return parser


def _lines(stdin: TextIO, stdout: TextIO, interactive: bool) -> Iterator[str]:
    while True:
        try:
            line = input(PROMPT) if interactive else stdin.readline()
        except EOFError:
            if interactive:
                print(file=stdout)
            return
        except KeyboardInterrupt:
            print("^C", file=stdout)  # abandon the line, keep the console
            continue
        if not interactive and line == "":
            return
        yield line


@contextlib.contextmanager
def _history(enabled: bool) -> Iterator[None]:
    """Load and save readline history when interactive; a missing readline or an unwritable file is ignored."""
    if not enabled:
        yield
        return
    try:
        import readline
    except ImportError:
        yield
        return
    path = os.path.expanduser(HISTORY_FILE)
    with contextlib.suppress(OSError):
        readline.read_history_file(path)
    readline.set_history_length(HISTORY_LENGTH)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            readline.write_history_file(path)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
