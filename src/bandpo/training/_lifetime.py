"""Process lifetimes and single writers: children that die with their parent, and a lock per folder.

- `die_with_parent`: asks Linux to SIGKILL this process when its parent dies (``prctl(PR_SET_PDEATHSIG)``),
  so a child cannot outlive a parent killed with ``kill -9``. Elsewhere (macOS, BSD) it returns False and the
  caller falls back to watching its parent's pid (`parent_alive`). Linux sends the signal when the *thread*
  that started the child ends, so children are started from threads that outlive them.
- `FolderLock`: an exclusive ``fcntl.flock`` on a lock file. The kernel releases it when the holder ends,
  however it ends (``kill -9`` included), so a crashed writer never leaves a stale lock, and a second writer
  is refused at once with the holder's pid, or, given `wait`, told who holds it and blocked until it is free.
  Where there is no ``fcntl`` (Windows) nothing is locked.
- `stop_process_group`: SIGTERM to a child's whole process group, then SIGKILL after a grace period.
- `terminate_raises`: SIGTERM raises `Terminated` in the main thread, so ``finally`` blocks run (children
  are stopped, workers closed) and the command can exit 143 with a message.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "PARENT_PID_VARIABLE",
    "FolderLock",
    "FolderLocked",
    "Terminated",
    "die_with_parent",
    "parent_alive",
    "stop_process_group",
    "terminate_raises",
    "wait_with_usage",
    "watch_parent",
]

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
DEAD_HOLDER_GRACE_S = 2.0  # how long a lock recorded for a dead process may take to be released
# set by a parent for a child it starts: the pid the child must outlive no longer than a moment
PARENT_PID_VARIABLE = "BANDPO_PARENT_PID"


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (`terminate_raises`); a KeyboardInterrupt so that the same cleanup runs as for Ctrl-C."""


class FolderLocked(ValueError):
    """Another live process holds the folder's lock."""


def die_with_parent(expected_parent: int | None = None, sig: int = signal.SIGKILL) -> bool:
    """Have the kernel send `sig` to this process when its parent ends (Linux); False where unsupported.

    When `expected_parent` is given and the parent already ended (the race between the fork and this call),
    the process exits at once.
    """
    armed = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)  # the symbols already loaded (libc's): no search
            armed = libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if expected_parent is not None and os.getppid() != expected_parent:
        os._exit(1)  # the parent is already gone: nothing to work for
    return armed


def parent_alive(parent_pid: int) -> bool:
    """Whether the process that started this one is still its parent (an orphan is re-parented)."""
    return os.getppid() == parent_pid


def watch_parent(parent_pid: int, interval_s: float = 1.0) -> threading.Thread:
    """A daemon thread that ends this process (``os._exit``) once `parent_pid` is no longer its parent: the
    fallback of `die_with_parent` where the kernel has no parent-death signal."""

    def watch() -> None:
        while parent_alive(parent_pid):
            time.sleep(interval_s)
        os._exit(1)

    thread = threading.Thread(target=watch, name="bandpo-parent-watch", daemon=True)
    thread.start()
    return thread


# descriptors of the locks this process holds: a forked child (a reward worker) closes its copies, so that
# only the holder holds the lock, and it ends with the holder whatever the child does
_HELD: set[int] = set()


def _close_held_in_child() -> None:
    for fd in list(_HELD):
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_held_in_child)


class FolderLock:
    """An exclusive, non-blocking ``flock`` on `path` (created if needed), held until `release`.

    Args:
        path: the lock file (it stays in place: removing a lock file others may have open is racy).
        what: how the error names the locked thing ("run directory runs/a").
        fix: what the error advises.
        wait: when given, a live holder does not refuse: ``wait(message)`` is called once with "<what> is
            being written by process N right now", then the lock is waited for (as the Hub's file locks do).

    Raises:
        FolderLocked: a live process holds it and `wait` is None (the message names its pid, written into the
            file).
    """

    def __init__(self, path: Path, *, what: str, fix: str, wait: Callable[[str], None] | None = None) -> None:
        self.path = Path(path)
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            import fcntl
        except ImportError:  # Windows: no flock; the file only records the writer's pid
            fcntl = None
        try:
            if fcntl is not None:
                try:
                    self._flock(fcntl)
                except BlockingIOError:
                    if wait is None:
                        raise
                    wait(f"{what} is being written{_by(_read_pid(self._fd))} right now")
                    fcntl.flock(self._fd, fcntl.LOCK_EX)  # until the holder ends, however it ends
        except BlockingIOError:
            holder = _read_pid(self._fd)
            os.close(self._fd)
            self._fd = None
            raise FolderLocked(f"{what} is being written{_by(holder)} right now; {fix}") from None
        except BaseException:
            os.close(self._fd)
            self._fd = None
            raise
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()}\n".encode())
        _HELD.add(self._fd)

    def _flock(self, fcntl: Any) -> None:
        """flock, waiting up to `DEAD_HOLDER_GRACE_S` when the recorded holder is already dead: Linux drops a
        killed process's lock a moment after the process is gone (its files are released by a deferred task),
        so an immediate retry would otherwise be refused by a dead writer."""
        deadline = time.monotonic() + DEAD_HOLDER_GRACE_S
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                holder = _read_pid(self._fd)
                if holder is None or _process_alive(holder) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            _HELD.discard(fd)
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the last descriptor releases the flock

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _by(holder: int | None) -> str:
    return f" by process {holder}" if holder else ""


def _process_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped, counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc: kill(0) said it exists


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def stop_process_group(
    process: subprocess.Popen, grace_s: float = 10.0, *, reaped: threading.Event | None = None
) -> None:
    """SIGTERM to `process`'s process group (it was started with ``start_new_session=True``), SIGKILL to
    whatever is left after `grace_s` seconds; waits for `process`, or, with `reaped`, for the thread that reaps
    it (`wait_with_usage`) to set that event, so that the reaping thread keeps the child's resource usage."""

    def ended(timeout: float | None) -> bool:
        if reaped is not None:
            return reaped.wait(timeout)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    if (reaped is not None and reaped.is_set()) or (reaped is None and process.poll() is not None):
        _kill_group(process.pid, signal.SIGKILL)  # its own children, if any outlived it
        return
    _kill_group(process.pid, signal.SIGTERM)
    ended(grace_s)
    _kill_group(process.pid, signal.SIGKILL)
    ended(None)


def wait_with_usage(process: subprocess.Popen) -> tuple[int, float | None]:
    """Wait for `process`; (its exit status as `Popen.returncode` gives it, the CPU seconds, user + system, of
    the child and of the descendants it waited for). The CPU time is None where ``os.wait4`` is not available
    or someone else reaped the child first."""
    if hasattr(os, "wait4"):
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except ChildProcessError:
            pass
        else:
            process.returncode = os.waitstatus_to_exitcode(status)
            return process.returncode, usage.ru_utime + usage.ru_stime
    return process.wait(), None


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


@contextlib.contextmanager
def terminate_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises `Terminated` in the main thread (elsewhere: nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
