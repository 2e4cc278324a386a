"""The data-directory lock: a second storage on the same directory is refused, in or out of process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from taskflux.storage import DataDirLocked, DiskStorage

REPO = Path(__file__).resolve().parents[2]


def test_second_storage_in_the_same_process_is_refused(tmp_path: Path) -> None:
    with DiskStorage(tmp_path):
        with pytest.raises(DataDirLocked) as caught:
            DiskStorage(tmp_path)
        message = str(caught.value)
        assert str(tmp_path) in message and f"pid {os.getpid()}, this process" in message
    with DiskStorage(tmp_path):  # released on close
        pass


def _run(code: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), str(data_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )


def test_another_process_is_refused(tmp_path: Path) -> None:
    code = """
        import sys
        from taskflux.storage import DataDirLocked, DiskStorage
        try:
            DiskStorage(sys.argv[1])
        except DataDirLocked as e:
            print(e)
            sys.exit(3)
    """
    with DiskStorage(tmp_path):
        done = _run(code, tmp_path)
    assert done.returncode == 3, done.stderr
    assert str(tmp_path) in done.stdout and f"(pid {os.getpid()})" in done.stdout
    assert _run(code, tmp_path).returncode == 0  # free again once closed


def test_lock_held_by_another_process_refuses_us(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent("""
            import sys
            from taskflux.storage import DiskStorage
            s = DiskStorage(sys.argv[1])
            print("locked", flush=True)
            sys.stdin.readline()
        """), str(tmp_path)],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(DataDirLocked, match=f"pid {holder.pid}"):
            DiskStorage(tmp_path)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    with DiskStorage(tmp_path):  # the kernel dropped the lock with the process
        pass
