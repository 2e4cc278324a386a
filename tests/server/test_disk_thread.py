"""The node's disk thread: results, exceptions, the hub serving while it works, close."""

from __future__ import annotations

import gevent
import pytest
from gevent import monkey

from taskflux.server.disk_thread import DiskThread, DiskThreadClosed

pytestmark = pytest.mark.timeout(30)

real_sleep = monkey.get_original("time", "sleep")


def test_a_call_returns_the_result_and_reraises_the_exception() -> None:
    disk = DiskThread()
    try:
        assert disk.call(pow, 2, 10) == 1024
        with pytest.raises(ZeroDivisionError):
            disk.call(divmod, 1, 0)
        assert disk.call(sum, [1, 2, 3]) == 6  # still serving after an exception
    finally:
        disk.close()


def test_other_greenlets_run_while_the_thread_blocks() -> None:
    disk = DiskThread()
    ticks: list[int] = []

    def ticker() -> None:
        for i in range(5):
            ticks.append(i)
            gevent.sleep(0.01)

    try:
        other = gevent.spawn(ticker)
        disk.call(real_sleep, 0.3)  # blocks the OS thread, not the hub
        assert ticks == [0, 1, 2, 3, 4]
        other.join()
    finally:
        disk.close()


def test_one_call_at_a_time_and_none_after_close() -> None:
    disk = DiskThread()
    first = gevent.spawn(disk.call, real_sleep, 0.2)
    gevent.sleep(0.05)
    with pytest.raises(RuntimeError, match="one call at a time"):
        disk.call(real_sleep, 0)
    first.join()
    disk.close()
    with pytest.raises(DiskThreadClosed):
        disk.call(pow, 2, 2)


def test_close_waits_for_the_job_of_a_killed_caller() -> None:
    disk = DiskThread()
    done: list[bool] = []

    def slow() -> None:
        real_sleep(0.2)
        done.append(True)

    caller = gevent.spawn(disk.call, slow)
    gevent.sleep(0.05)
    caller.kill()
    with pytest.raises(DiskThreadClosed):  # the killed call's job may still run: nothing may overlap it
        disk.call(pow, 2, 2)
    disk.close()
    assert done == [True]
