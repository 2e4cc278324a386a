"""Leased dequeues for interfaces without a connection to hold a reservation (REST).

A lease is a reserved record plus a deadline, named by an unguessable token. Ack removes the record for
good (answered once the removal commits); Nack, or the deadline passing, puts it back for the next
consumer. Leases live on the leader that granted them, like every reservation: after a leader change the
record is simply available again on the new leader (at-least-once delivery).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import gevent

from taskflux.domain.results import Result
from taskflux.server.service import QueueService, Reserved

MAX_LEASE_SECONDS = 12 * 3600.0


class LeaseNotFound(Exception):
    """No lease has this token: it never existed, was acked or nacked, or expired (the record went back)."""


@dataclass(slots=True)
class Lease:
    token: str
    reserved: Reserved
    expires_at: float  # time.monotonic()


class LeaseTable:
    """Outstanding leases of this node, and the greenlet that returns the expired ones."""

    def __init__(self, service: QueueService, sweep_interval: float = 0.25) -> None:
        self.service = service
        self._leases: dict[str, Lease] = {}
        self._sweep_interval = sweep_interval
        self._sweeper: gevent.Greenlet | None = None

    def __len__(self) -> int:
        return len(self._leases)

    def start(self) -> None:
        self._sweeper = gevent.spawn(self._sweep_forever)

    def stop(self) -> None:
        """Stop expiring and put every leased record back."""
        if self._sweeper is not None:
            self._sweeper.kill()
        for lease in list(self._leases.values()):
            self._return(lease)

    def grant(self, reserved: Reserved, seconds: float) -> Lease:
        lease = Lease(secrets.token_urlsafe(18), reserved, time.monotonic() + seconds)
        self._leases[lease.token] = lease
        return lease

    def ack(self, token: str) -> Result:
        """Remove the leased record for good; the result once committed. The lease ends either way
        (on NotLeader / CommitTimeout the record has been put back)."""
        return self.service.remove(self._take(token).reserved)

    def nack(self, token: str) -> None:
        """Put the leased record back now."""
        self.service.release(self._take(token).reserved)

    def _take(self, token: str) -> Lease:
        lease = self._leases.pop(token, None)
        if lease is None or lease.expires_at <= time.monotonic():
            if lease is not None:
                self.service.release(lease.reserved)
            raise LeaseNotFound(token)
        return lease

    def _return(self, lease: Lease) -> None:
        if self._leases.pop(lease.token, None) is not None:
            self.service.release(lease.reserved)

    def _sweep_forever(self) -> None:
        while True:
            gevent.sleep(self._sweep_interval)
            now = time.monotonic()
            for lease in [lease for lease in self._leases.values() if lease.expires_at <= now]:
                self._return(lease)
