"""A dedicated OS thread for the node loop's blocking storage writes (the fsyncs).

The node loop hands it one call at a time and waits; the hub keeps serving every other greenlet
meanwhile, and every proposal that arrives joins the next batch (group commit). It replaces gevent's
general thread pool for this one-caller, one-job pattern because the hand-off is on the hot path of
every write: here it is one lock release to wake the thread and one async-watcher send to wake the hub,
with no objects created per call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gevent
from gevent import monkey
from gevent.hub import Waiter

# The real primitives, also when the process is monkey-patched: the worker is an OS thread.
_start_new_thread = monkey.get_original("_thread", "start_new_thread")
_allocate_lock = monkey.get_original("_thread", "allocate_lock")


class DiskThreadClosed(Exception):
    """The disk thread was closed; nothing more runs in it."""


class DiskThread:
    """Runs blocking calls in one OS thread, one at a time, for one greenlet at a time."""

    def __init__(self) -> None:
        self._done = gevent.get_hub().loop.async_()
        self._done.start(self._finished)
        self._work = _allocate_lock()
        self._work.acquire()  # released once per job, and once to stop
        self._job_over = _allocate_lock()
        self._job_over.acquire()  # released by the thread when a job has ended
        self._job: tuple[Callable[..., Any], tuple[Any, ...]] | None = None
        self._outcome: tuple[bool, Any] = (True, None)
        self._waiter: Waiter | None = None
        self._in_flight = False
        self._closed = False
        self._stopped = False
        _start_new_thread(self._serve, ())

    def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run ``function(*args)`` in the thread; return its result or raise its exception."""
        if self._closed:
            raise DiskThreadClosed("the disk thread is closed")
        if self._in_flight:
            raise RuntimeError("the disk thread runs one call at a time")
        waiter = Waiter()
        self._waiter = waiter
        self._job = (function, args)
        self._in_flight = True
        self._work.release()
        try:
            waiter.get()
        except BaseException:
            # Killed while the job runs: the job cannot be recalled, so accept nothing after it.
            self._closed = True
            raise
        finally:
            self._waiter = None
        self._job_over.acquire()  # already released: the thread sends only after releasing it
        self._in_flight = False
        ok, value = self._outcome
        self._outcome = (True, None)
        if ok:
            return value
        raise value

    def close(self) -> None:
        """Wait for the job in progress, if any (a blocking wait: shutdown only), then stop the thread."""
        if self._stopped:
            return
        self._stopped = self._closed = True
        if self._in_flight:
            self._job_over.acquire()
            self._in_flight = False
        self._job = None
        self._work.release()
        self._done.stop()
        self._done.close()

    def _finished(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            waiter.switch(None)

    def _serve(self) -> None:
        work = self._work
        while True:
            work.acquire()
            job = self._job
            if job is None:
                return
            function, args = job
            try:
                self._outcome = (True, function(*args))
            except BaseException as error:  # handed to the caller, who re-raises it
                self._outcome = (False, error)
            self._job = None
            self._job_over.release()
            self._done.send()
