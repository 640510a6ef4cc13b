"""`bandpo.training._lifetime`: a folder lock that dies with its holder and is not inherited by forks, children that die
with their parent, and SIGTERM as an exception. Real processes and signals throughout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from bandpo.training._lifetime import FolderLock, FolderLocked, Terminated, terminate_raises
from process_helpers import alive, gone_within, has_open

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process semantics")

_HOLD = """
import sys, time
from pathlib import Path
from bandpo.training._lifetime import FolderLock
lock = FolderLock(Path(sys.argv[1]), what="folder", fix="wait")
print("held", flush=True)
time.sleep(600)
"""


def test_a_lock_refuses_a_second_holder_and_dies_with_the_first(tmp_path):
    path = tmp_path / "run.lock"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(
            FolderLocked, match=f"folder x is being written by process {holder.pid} right now; fix"
        ):
            FolderLock(path, what="folder x", fix="fix")
        holder.kill()  # SIGKILL: no cleanup runs, the kernel drops the lock
        holder.wait()
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    with FolderLock(path, what="folder x", fix="fix") as lock:
        assert lock.held and path.read_text().strip() == str(os.getpid())
    assert not lock.held


def test_a_forked_child_does_not_keep_the_lock(tmp_path):
    path = tmp_path / "run.lock"
    lock = FolderLock(path, what="folder", fix="wait")
    pid = os.fork()
    if pid == 0:  # the child outlives the holder's release by a few seconds
        time.sleep(5)
        os._exit(0)
    try:
        deadline = time.monotonic() + 5  # the child closes its copy as it starts (an at-fork handler)
        while has_open(pid, path) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not has_open(pid, path)
        lock.release()
        FolderLock(path, what="folder", fix="wait").release()  # free although the child still runs
        assert alive(pid)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


_PARENT = """
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]])
print(child.pid, flush=True)
child.wait()
"""
_CHILD = """
import os, time
from bandpo.training._lifetime import die_with_parent
assert die_with_parent(os.getppid())
time.sleep(600)
"""


def test_a_child_dies_with_its_parent_killed_with_sigkill():
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, _CHILD], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        time.sleep(1.0)  # the child has armed its parent-death signal
        parent.kill()
        parent.wait()
        assert gone_within(child, 10)
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()


def test_sigterm_raises_terminated_inside_the_block_only():
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated), terminate_raises():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
    assert signal.getsignal(signal.SIGTERM) == previous


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_lock_recorded_for_a_dead_process_is_waited_for_not_refused(tmp_path):
    """Linux releases a killed holder's flock a moment after the process is gone: the next taker waits for it
    (up to DEAD_HOLDER_GRACE_S) instead of refusing a writer that no longer exists."""
    import fcntl
    import threading

    from bandpo.training._lifetime import DEAD_HOLDER_GRACE_S, FolderLock, FolderLocked

    path = tmp_path / "run.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, f"{_dead_pid()}\n".encode())  # the recorded holder is dead, its lock not yet released
    threading.Timer(0.3, os.close, args=(fd,)).start()
    with FolderLock(path, what="x", fix="y"):
        pass
    # a lock that stays held is refused once the grace is over
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, f"{_dead_pid()}\n".encode())
    start = time.monotonic()
    with pytest.raises(FolderLocked):
        FolderLock(path, what="x", fix="y")
    assert time.monotonic() - start >= DEAD_HOLDER_GRACE_S
    os.close(fd)
