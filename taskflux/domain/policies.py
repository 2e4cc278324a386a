"""Queue policies (docs/state-machine.md, Policies) and the checks an enqueue must pass."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from taskflux.domain.errors import INT32_MAX, ErrorCode, PolicyCode
from taskflux.domain.names import is_valid_queue_name
from taskflux.domain.results import Failure, PolicyViolation

DEFAULT_DEDUP_WINDOW_MS = 5 * 60 * 1000
DEFAULT_DEDUP_MAX_KEYS = 100_000
MAX_DEDUP_WINDOW_MS = 7 * 24 * 3600 * 1000
MAX_DEDUP_KEYS = 10_000_000
MAX_DELAY_MS = 30 * 24 * 3600 * 1000  # the longest delay or retry backoff: 30 days
DEFAULT_RETRY_MAX_DELAY_MS = 15 * 60 * 1000


class Backoff(enum.IntEnum):
    """How the retry delay grows with a record's failed deliveries."""

    FIXED = 0
    EXPONENTIAL = 1


@dataclass(frozen=True, slots=True)
class DeliveryPolicies:
    """What happens around deliveries: retries, dead letters, and the window of idempotency keys.

    * ``max_deliveries``: a record whose failed deliveries reach it moves to ``dead_letter_queue`` (both or
      neither are set);
    * ``retry_delay_ms``: how long a record returned without an explicit delay waits before it is handed out
      again; with ``EXPONENTIAL`` backoff the n-th failure waits ``retry_delay_ms * 2**(n-1)``, at most
      ``retry_max_delay_ms``;
    * ``dedup_window_ms`` / ``dedup_max_keys``: an enqueue key is remembered for this long (leader time), and
      at most this many keys are kept (the oldest are forgotten first). 0 turns idempotency off.
    """

    max_deliveries: int | None = None
    dead_letter_queue: str | None = None
    retry_delay_ms: int = 0
    retry_backoff: Backoff = Backoff.FIXED
    retry_max_delay_ms: int = DEFAULT_RETRY_MAX_DELAY_MS
    dedup_window_ms: int = DEFAULT_DEDUP_WINDOW_MS
    dedup_max_keys: int = DEFAULT_DEDUP_MAX_KEYS

    def validate(self, queue_name: str) -> Failure | None:
        """Everything that does not depend on state (a dead-letter queue must also exist: the manager checks)."""
        if (self.max_deliveries is None) != (self.dead_letter_queue is None):
            return invalid_policy("max_deliveries and dead_letter_queue go together: set both or neither")
        if self.max_deliveries is not None and not 1 <= self.max_deliveries <= INT32_MAX:
            return invalid_policy(f"max_deliveries must be 1-{INT32_MAX}, not {self.max_deliveries}")
        if self.dead_letter_queue is not None:
            if not is_valid_queue_name(self.dead_letter_queue):
                return invalid_policy(f"invalid dead-letter queue name {self.dead_letter_queue!r}")
            if self.dead_letter_queue == queue_name:
                return invalid_policy("a queue cannot be its own dead-letter queue")
        if self.retry_backoff not in (Backoff.FIXED, Backoff.EXPONENTIAL):
            return invalid_policy(f"unknown retry backoff {self.retry_backoff}")
        for field, value in (("retry_delay_ms", self.retry_delay_ms), ("retry_max_delay_ms", self.retry_max_delay_ms)):
            if not 0 <= value <= MAX_DELAY_MS:
                return invalid_policy(f"{field} must be 0-{MAX_DELAY_MS}, not {value}")
        if self.retry_max_delay_ms < self.retry_delay_ms and self.retry_backoff is Backoff.EXPONENTIAL:
            return invalid_policy("retry_max_delay_ms must not be below retry_delay_ms")
        if not 0 <= self.dedup_window_ms <= MAX_DEDUP_WINDOW_MS:
            return invalid_policy(f"dedup_window_ms must be 0-{MAX_DEDUP_WINDOW_MS}, not {self.dedup_window_ms}")
        if not 0 <= self.dedup_max_keys <= MAX_DEDUP_KEYS:
            return invalid_policy(f"dedup_max_keys must be 0-{MAX_DEDUP_KEYS}, not {self.dedup_max_keys}")
        return None

    def retry_delay(self, failures: int) -> int:
        """The delay (ms) before a record that has failed ``failures`` times (≥ 1) is handed out again."""
        if self.retry_backoff is Backoff.FIXED or self.retry_delay_ms == 0:
            return self.retry_delay_ms
        # 2**40 ms is 34 years: beyond it the cap has long applied, and the shift stays small.
        return min(self.retry_max_delay_ms, self.retry_delay_ms << min(failures - 1, 40))

    @property
    def dedup_enabled(self) -> bool:
        return self.dedup_window_ms > 0 and self.dedup_max_keys > 0


DEFAULT_DELIVERY = DeliveryPolicies()


@dataclass(frozen=True, slots=True)
class QueuePolicies:
    """Limits set when a queue is created; None means "no limit"."""

    max_queue_size: int | None = None
    max_payload_size: int | None = None
    priority_range: tuple[int, int] | None = None
    delivery: DeliveryPolicies = DEFAULT_DELIVERY

    def check_enqueue(self, stored: int, priority: int, payload_size: int) -> PolicyViolation | None:
        """The first violated policy, in the spec's order: size, then priority range, then payload."""
        if self.max_queue_size is not None and stored >= self.max_queue_size:
            return PolicyViolation(PolicyCode.MAX_QUEUE_SIZE, (self.max_queue_size,))
        if self.priority_range is not None:
            low, high = self.priority_range
            if not low <= priority <= high:
                return PolicyViolation(PolicyCode.PRIORITY_RANGE, (low, high))
        if self.max_payload_size is not None and payload_size > self.max_payload_size:
            return PolicyViolation(PolicyCode.MAX_PAYLOAD_SIZE, (self.max_payload_size,))
        return None

    def accepts_priority(self, priority: int) -> bool:
        return self.priority_range is None or self.priority_range[0] <= priority <= self.priority_range[1]


def invalid_policy(message: str) -> Failure:
    return Failure(ErrorCode.INVALID_QUEUE_POLICY, message)
