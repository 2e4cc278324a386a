"""Who may keep a place among a port's limited connections (or calls): deadlines for clients that owe the
server something, and which place a newcomer takes when the limit is reached.

Every port with connections from outside uses it: the HTTP server (a place per connection), the gRPC server (a
place per call: HTTP/2 connections cost no worker, calls do), the binary client port and the cluster port (a
place per connection still waiting for its Hello). A place is either *waiting for its client* (a new
connection that has not sent a request yet, a keep-alive one between requests, one whose request is still
arriving, a stream waiting for its next message, a handshake) — then it has a deadline, and past it the sweeper
closes it — or *being served* (the server works on its request: a long poll, a commit), without deadline.
One sweeper per port enforces the deadlines: no socket operation carries a timer of its own, and marking a
place waiting or served costs a clock read and three attribute stores (no allocation).

At the limit, the port's ``EvictionPolicy`` chooses the place a newcomer takes (HTTP and gRPC: ``idlest``, the
one that has waited longest for its client, those that never sent a request first; the binary client port:
``oldest_unused``, the oldest still in its handshake; the cluster port: ``oldest``); when it chooses none, the
newcomer is refused. Silent or slow clients therefore cannot lock real clients out, however many there are.

The closing and the evictions are logged, at most one line per kind every ``LOG_INTERVAL_SECONDS`` (with
the count since the last line), so that a flood of connections does not flood the log.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import gevent

LOG_INTERVAL_SECONDS = 10.0


class ThrottledLog:
    """One log line per ``interval`` (and per ``key``, when given) at most, telling how many lines it stands for."""

    MAX_KEYS = 64  # distinct keys remembered; past that the memory is cleared (a few extra lines, no growth)

    def __init__(self, logger: logging.Logger, level: int, interval: float = LOG_INTERVAL_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._level = level
        self._interval = interval
        self._clock = clock
        self._state: dict[str, tuple[float, int]] = {}  # key -> (next line allowed at, lines held back)

    def __call__(self, message: str, *args: object, key: str = "") -> None:
        now = self._clock()
        allowed_at, held_back = self._state.get(key, (0.0, 0))
        if now < allowed_at:
            self._state[key] = (allowed_at, held_back + 1)
            return
        if held_back:
            message += f" (and {held_back} more like it in the last {self._interval:g} s)"
        if key not in self._state and len(self._state) >= self.MAX_KEYS:
            self._state.clear()
        self._state[key] = (now + self._interval, 0)
        self._logger.log(self._level, message, *args)


def shut_down(sock: socket.socket) -> None:
    """End a connection from another greenlet: its handler's blocked read returns end-of-file (a ``close`` for
    ``ConnectionTable.admit``, through ``functools.partial``)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class Connection:
    """One admitted connection's place: what it waits for, and for how long; ``close`` ends the connection
    (its handler's blocked read then fails or returns end-of-file, and the handler finishes). ``closed`` tells
    the handler that the table closed it (and logged why)."""

    __slots__ = ("address", "admitted_at", "close", "closed", "reason", "requests", "timeout", "waiting_since")

    def __init__(self, address: str, close: Callable[[], None]) -> None:
        self.close = close
        self.address = address
        self.admitted_at = time.monotonic()
        self.requests = 0  # requests received completely so far (the binary port counts its handshake only)
        self.waiting_since: float | None = None  # None: being served
        self.timeout = 0.0  # how long the client may keep the server waiting, from waiting_since
        self.reason = ""  # what the client owes, for the log: "no <reason> within <timeout> s"
        self.closed = False

    @property
    def deadline(self) -> float:
        """When the sweeper closes the place, if it is still waiting for its client then."""
        return (self.waiting_since or 0.0) + self.timeout

    def wait_for_client(self, seconds: float, reason: str, since: float | None = None) -> None:
        """The server now waits for the client, for at most ``seconds`` from ``since`` (default: now);
        ``reason`` names what it owes. A deadline for a whole phase (a handshake) passes its start as
        ``since`` on every wait of the phase."""
        self.waiting_since = time.monotonic() if since is None else since
        self.timeout = seconds
        self.reason = reason

    def serving(self) -> None:
        """The server now works on the client's request: no deadline (and not evictable under IDLEST_FIRST)."""
        self.waiting_since = None


@dataclass(frozen=True)
class EvictionPolicy:
    """Which place a newcomer takes at the limit: ``choose`` picks it among the places, in admission order
    (None: the newcomer is refused); ``victim`` and ``refusal`` say it in the log lines."""

    choose: Callable[[Iterable[Connection]], Connection | None]
    victim: str  # "closed <address>, which <victim>, to admit a new one"
    refusal: str  # "<limit> connections, <refusal>: refused a new one"


def idlest(places: Iterable[Connection]) -> Connection | None:
    """The place that has waited longest for its client, those that never sent a request first."""
    return min((c for c in places if c.waiting_since is not None),
               key=lambda c: (c.requests > 0, c.waiting_since or 0.0), default=None)


def oldest_unused(places: Iterable[Connection]) -> Connection | None:
    """The oldest place that has not completed a request yet, whatever it is doing."""
    return next((c for c in places if c.requests == 0), None)


def oldest(places: Iterable[Connection]) -> Connection | None:
    return next(iter(places), None)


IDLEST_FIRST = EvictionPolicy(idlest, "waited longest for its client", "all being served")


class ConnectionTable:
    """The connections of one port, at most ``limit``; a sweeper enforces their deadlines. ``limit_name``
    (the option that sets it) and ``name`` (the port) go into the log lines."""

    def __init__(self, limit: int, name: str, logger: logging.Logger, sweep_interval: float = 0.25, *,
                 policy: EvictionPolicy = IDLEST_FIRST, limit_name: str = "the limit") -> None:
        self.limit = limit
        self.name = name
        self.policy = policy
        self.limit_name = limit_name
        self._connections: dict[Connection, None] = {}  # in admission order
        self._sweep_interval = sweep_interval
        self._sweeper: gevent.Greenlet | None = None
        self._log_expired = ThrottledLog(logger, logging.INFO)
        self._log_evicted = ThrottledLog(logger, logging.WARNING)
        self._log_refused = ThrottledLog(logger, logging.WARNING)
        self.evicted = 0
        self.expired = 0
        self.refused = 0

    def __len__(self) -> int:
        return len(self._connections)

    def start(self) -> None:
        self._sweeper = gevent.spawn(self._sweep_forever)

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.kill()

    def admit(self, address: str, close: Callable[[], None]) -> Connection | None:
        """A place for a new connection (evicting one at the limit, as the policy chooses), or None: refused."""
        if len(self._connections) >= self.limit and not self._evict_one():
            self.refused += 1
            self._log_refused("%s: %d connections (%s), %s: refused a new one from %s", self.name,
                              len(self._connections), self.limit_name, self.policy.refusal, address)
            return None
        connection = Connection(address, close)
        self._connections[connection] = None
        return connection

    def remove(self, connection: Connection) -> None:
        self._connections.pop(connection, None)

    def _evict_one(self) -> bool:
        victim = self.policy.choose(self._connections)
        if victim is None:
            return False
        self._close(victim)
        self.evicted += 1
        self._log_evicted("%s: %d connections (%s): closed %s, which %s (%s; connected %.1f s ago), to admit a "
                          "new one", self.name, self.limit, self.limit_name, victim.address, self.policy.victim,
                          victim.reason or "no wait yet", time.monotonic() - victim.admitted_at)
        return True

    def _close(self, connection: Connection) -> None:
        self.remove(connection)  # its place is free now; its handler ends on its own
        connection.closed = True
        connection.close()

    def _sweep_forever(self) -> None:
        while True:
            gevent.sleep(self._sweep_interval)
            self.sweep()

    def sweep(self, now: Callable[[], float] = time.monotonic) -> None:
        """Close every connection past its deadline."""
        moment = now()
        for connection in [c for c in self._connections
                           if c.waiting_since is not None and c.waiting_since + c.timeout <= moment]:
            self._close(connection)
            self.expired += 1
            self._log_expired("%s: closed %s: no %s within %g s", self.name, connection.address, connection.reason,
                              connection.timeout)
