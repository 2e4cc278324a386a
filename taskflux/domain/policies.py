"""Queue policies (docs/state-machine.md, Policies) and the check an enqueue must pass."""

from __future__ import annotations

from dataclasses import dataclass

from taskflux.domain.errors import PolicyCode
from taskflux.domain.results import PolicyViolation


@dataclass(frozen=True, slots=True)
class QueuePolicies:
    """Limits set when a queue is created; None means "no limit"."""

    max_queue_size: int | None = None
    max_payload_size: int | None = None
    priority_range: tuple[int, int] | None = None

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
