"""Records enqueued and dequeued per queue over the last minutes, in steps of a few seconds: what the console
charts (REST queue answers carry it as ``rates``).

Counted by the queues themselves (``Queue.enqueued_total``, ``Queue.dequeued_total``: statistics of this
process, not replicated state), sampled by one greenlet. Every node counts enqueues (it applies them); only the
leader hands records out, so a new leader's dequeue history starts empty.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import gevent

from taskflux.domain.manager import QueueManager
from taskflux.domain.queue import Queue

STEP_SECONDS = 10.0
STEPS = 60  # ten minutes


class QueueRates:
    """Per-queue histories of enqueued and dequeued records per step."""

    def __init__(self, manager: Any, step_seconds: float = STEP_SECONDS, steps: int = STEPS) -> None:
        self._manager = manager  # a callable returning the node's current QueueManager (it is replaced on restore)
        self.step_seconds = step_seconds
        self.steps = steps
        self._last: dict[tuple[str, int], tuple[int, int]] = {}
        self._history: dict[tuple[str, int], tuple[deque[int], deque[int]]] = {}
        self._sampler: gevent.Greenlet | None = None

    def start(self) -> None:
        self._sampler = gevent.spawn(self._sample_forever)

    def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.kill()

    def sample(self) -> None:
        """Take one step: what each queue counted since the previous one."""
        manager: QueueManager = self._manager()
        seen = set()
        for queue in manager.queues():
            key = (queue.name, queue.incarnation)
            seen.add(key)
            totals = (queue.enqueued_total, queue.dequeued_total)
            last = self._last.get(key, totals)
            history = self._history.setdefault(key, (deque(maxlen=self.steps), deque(maxlen=self.steps)))
            history[0].append(max(0, totals[0] - last[0]))
            history[1].append(max(0, totals[1] - last[1]))
            self._last[key] = totals
        for key in set(self._history) - seen:  # deleted queues
            del self._history[key]
            self._last.pop(key, None)

    def of(self, queue: Queue) -> dict[str, Any]:
        """The queue's history, oldest step first: ``{"interval_seconds", "enqueued": [...], "dequeued": [...]}``."""
        enqueued, dequeued = self._history.get((queue.name, queue.incarnation), ((), ()))
        return {"interval_seconds": self.step_seconds, "enqueued": list(enqueued), "dequeued": list(dequeued)}

    def _sample_forever(self) -> None:
        while True:
            gevent.sleep(self.step_seconds)
            self.sample()
