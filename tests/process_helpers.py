"""Helpers for tests that use real processes: liveness, children and open files read from ``/proc`` (Linux),
waiting with a deadline, and starting the ``bandpo`` CLI in a child process.

Test files in any folder import it as ``from process_helpers import ...``: pytest puts ``tests/`` on
``sys.path`` when it loads ``tests/conftest.py``, before any test module.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def has_open(pid: int, path: Path) -> bool:
    """Whether process `pid` has `path` open (a process that is gone has nothing open)."""
    try:
        return any(os.readlink(fd) == str(path) for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False


def holders(path: Path) -> list[int]:
    """The processes that have `path` open."""
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and has_open(int(entry.name), path)
    ]


def gone_within(pids: int | Iterable[int], seconds: float) -> bool:
    """Whether every process in `pids` has ended (or ends) within `seconds`."""
    pids = [pids] if isinstance(pids, int) else list(pids)
    deadline = time.monotonic() + seconds
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not any(alive(pid) for pid in pids)


def wait_for(
    condition: Callable[[], bool], seconds: float, what: str, process: subprocess.Popen | None = None
) -> None:
    """Wait until `condition()` holds; fail naming `what` on timeout or when `process` ends first."""
    deadline = time.monotonic() + seconds
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the process ended (exit {process.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def start_cli(argv: list[str]) -> subprocess.Popen:
    """Start ``python -m bandpo *argv`` in a child process; stdout is dropped, stderr is kept as text.

    The child gets SIGINT's default action back: a test suite started in the background (``nohup``, ``&``)
    ignores SIGINT, every child inherits that, and a test that sends SIGINT would wait for nothing."""
    return subprocess.Popen(
        [sys.executable, "-m", "bandpo", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
