"""Leased dequeues for interfaces without a connection to hold a delivery (REST, gRPC's leased RPCs).

A lease is a delivery plus a deadline, named by an unguessable token. Ack removes the record for good
(answered once the removal commits); nack is a failed delivery (counted, logged: the record comes back after
its retry delay, or goes to its dead-letter queue); release gives the record back early as it was, uncounted;
extend moves the deadline. The deadline passing is a failed delivery too: the consumer is presumed gone.
Leases live on the leader that granted them, like every reservation: after a leader change the record is
simply available again on the new leader (at-least-once delivery), its failed deliveries not counted.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import gevent

from taskflux.domain.commands import POLICY_DELAY
from taskflux.domain.results import Result
from taskflux.server.service import Delivery

MAX_LEASE_SECONDS = 12 * 3600.0


class LeaseNotFound(Exception):
    """No lease has this token: it never existed, was acked, nacked or released, or expired."""


@dataclass(slots=True)
class Lease:
    token: str
    delivery: Delivery
    expires_at: float  # time.monotonic()

    @property
    def seconds_left(self) -> float:
        return max(0.0, self.expires_at - time.monotonic())


class LeaseTable:
    """Outstanding leases of this node, and the greenlet that ends the expired ones."""

    def __init__(self, sweep_interval: float = 0.25) -> None:
        self._leases: dict[str, Lease] = {}
        self._sweep_interval = sweep_interval
        self._sweeper: gevent.Greenlet | None = None

    def __len__(self) -> int:
        return len(self._leases)

    def start(self) -> None:
        self._sweeper = gevent.spawn(self._sweep_forever)

    def stop(self) -> None:
        """Stop expiring and put every leased record back as it was (the node is stopping: nothing can be
        logged)."""
        if self._sweeper is not None:
            self._sweeper.kill()
        for lease in list(self._leases.values()):
            self._leases.pop(lease.token, None)
            lease.delivery.put_back()

    def grant(self, delivery: Delivery, seconds: float) -> Lease:
        lease = Lease(secrets.token_urlsafe(18), delivery, time.monotonic() + min(seconds, MAX_LEASE_SECONDS))
        self._leases[lease.token] = lease
        return lease

    def ack(self, token: str) -> Result:
        """Remove the leased record for good; the result once committed. The lease ends either way
        (on NotLeader / CommitTimeout the record has been put back)."""
        return self._take(token).delivery.ack()

    def nack(self, token: str, delay_ms: int = POLICY_DELAY) -> str:
        """A failed delivery: the record comes back after ``delay_ms`` (default: its queue's retry policy) or
        goes to its dead-letter queue. What became of it (``ReturnOutcome`` or RELEASED)."""
        return self._take(token).delivery.fail(delay_ms)

    def release(self, token: str) -> None:
        """Give the record back now, as it was (its failed deliveries not counted)."""
        self._take(token).delivery.put_back()

    def extend(self, token: str, seconds: float) -> Lease:
        """The lease now ends ``seconds`` from now (at most MAX_LEASE_SECONDS)."""
        lease = self._find(token)
        lease.expires_at = time.monotonic() + min(seconds, MAX_LEASE_SECONDS)
        return lease

    def _find(self, token: str) -> Lease:
        lease = self._leases.get(token)
        if lease is None:
            raise LeaseNotFound(token)
        if lease.expires_at <= time.monotonic():
            self._expire(lease)
            raise LeaseNotFound(token)
        return lease

    def _take(self, token: str) -> Lease:
        lease = self._find(token)
        del self._leases[token]
        return lease

    def _expire(self, lease: Lease) -> None:
        if self._leases.pop(lease.token, None) is not None:
            lease.delivery.abandon()

    def _sweep_forever(self) -> None:
        while True:
            gevent.sleep(self._sweep_interval)
            now = time.monotonic()
            for lease in [lease for lease in self._leases.values() if lease.expires_at <= now]:
                self._expire(lease)
