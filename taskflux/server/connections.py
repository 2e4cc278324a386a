"""Who may keep a place among a port's limited connections (or calls): deadlines for clients that owe the
server something, and eviction of the idlest when the limit is reached.

Used by the HTTP server (a place per connection) and the gRPC server (a place per call: HTTP/2 connections
cost no worker, calls do). A place is either *waiting for its client* (a new connection that has not sent a
request yet, a keep-alive one between requests, one whose request is still arriving, a stream waiting for
its next message) — then it has a deadline, and past it the sweeper closes it — or *being served* (the server
works on its request: a long poll, a commit), without deadline. At the limit, a newcomer takes the place of
the one that has waited longest for its client, those that never sent a request first; only when every
place is being served is the newcomer refused. Silent or slow clients therefore cannot lock real clients
out, however many there are.

The closing and the evictions are logged, at most one line per kind every ``LOG_INTERVAL_SECONDS`` (with
the count since the last line), so that a flood of connections does not flood the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import gevent

LOG_INTERVAL_SECONDS = 10.0


class ThrottledLog:
    """One log line per ``interval`` at most, telling how many events it stands for."""

    def __init__(self, logger: logging.Logger, level: int, interval: float = LOG_INTERVAL_SECONDS) -> None:
        self._logger = logger
        self._level = level
        self._interval = interval
        self._next = 0.0
        self._suppressed = 0

    def __call__(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now < self._next:
            self._suppressed += 1
            return
        more = f" (and {self._suppressed} more like it in the last {self._interval:g} s)" if self._suppressed else ""
        self._logger.log(self._level, message + more, *args)
        self._next = now + self._interval
        self._suppressed = 0


class Connection:
    """One accepted connection's place: what it waits for, and until when; ``close`` ends the connection
    (its handler's blocked read then fails or returns end-of-file, and the handler finishes)."""

    __slots__ = ("address", "close", "deadline", "reason", "requests", "waiting_since")

    def __init__(self, address: str, close: Callable[[], None]) -> None:
        self.close = close
        self.address = address
        self.requests = 0  # requests received completely so far
        self.waiting_since: float | None = None  # None: being served
        self.deadline = 0.0
        self.reason = ""

    def wait_for_client(self, seconds: float, reason: str) -> None:
        """The server now waits for the client, for at most ``seconds`` (``reason`` names what it owes)."""
        now = time.monotonic()
        self.waiting_since = now
        self.deadline = now + seconds
        self.reason = reason

    def serving(self) -> None:
        """The server now works on the client's request: no deadline, not evictable."""
        self.waiting_since = None


class ConnectionTable:
    """The connections of one port, at most ``limit``; a sweeper enforces their deadlines."""

    def __init__(self, limit: int, name: str, logger: logging.Logger, sweep_interval: float = 0.25) -> None:
        self.limit = limit
        self.name = name
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
        """A place for a new connection (evicting the idlest one at the limit), or None: refused, since
        every connection is being served."""
        if len(self._connections) >= self.limit and not self._evict_one():
            self.refused += 1
            self._log_refused("%s: %d connections, all being served (the limit): refused a new one from %s",
                              self.name, len(self._connections), address)
            return None
        connection = Connection(address, close)
        self._connections[connection] = None
        return connection

    def remove(self, connection: Connection) -> None:
        self._connections.pop(connection, None)

    def _evict_one(self) -> bool:
        """Close the connection that waited longest for its client, one that never sent a request first."""
        victim = min((c for c in self._connections if c.waiting_since is not None),
                     key=self._eviction_order, default=None)
        if victim is None:
            return False
        self.remove(victim)  # its place is free now; its handler ends on its own
        victim.close()
        self.evicted += 1
        assert victim.waiting_since is not None
        self._log_evicted("%s: %d connections (the limit): closed %s, which waited %.1f s for %s, to admit a new one",
                          self.name, self.limit, victim.address, time.monotonic() - victim.waiting_since,
                          victim.reason)
        return True

    @staticmethod
    def _eviction_order(connection: Connection) -> tuple[bool, float]:
        return connection.requests > 0, connection.waiting_since or 0.0

    def _sweep_forever(self) -> None:
        while True:
            gevent.sleep(self._sweep_interval)
            self.sweep()

    def sweep(self, now: Callable[[], float] = time.monotonic) -> None:
        """Close every connection past its deadline."""
        moment = now()
        for connection in [c for c in self._connections
                           if c.waiting_since is not None and c.deadline <= moment]:
            self.remove(connection)
            connection.close()
            self.expired += 1
            self._log_expired("%s: closed %s: no %s within %.1f s", self.name, connection.address,
                              connection.reason, connection.deadline - (connection.waiting_since or 0.0))
