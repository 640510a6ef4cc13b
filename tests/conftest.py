"""Session-wide check: no process the test session started is left alive when it ends.

Every process started during the session inherits the environment variable `SESSION_VARIABLE` (set here,
before any test runs), and keeps it when its parent dies and it is re-parented, so scanning ``/proc`` for it
finds orphans too (Linux; without ``/proc`` the check finds nothing). At the end of the session, after a grace period, any such process other than pytest itself
and the daemonic `multiprocessing` children it stops on exit fails the session (exit status 1), is listed,
and is killed. ``BANDPO_LEFTOVER_PROCESSES=report`` only lists them (used where a framework's own daemons may
outlive a test, see scripts/test.sh).
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
import time
import uuid
from pathlib import Path

import pytest

SESSION_VARIABLE = "BANDPO_TEST_SESSION"
GRACE_S = 15.0

os.environ[SESSION_VARIABLE] = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"


def session_processes(token: str | None = None) -> dict[int, str]:
    """pid -> command line of the live processes (zombies excluded) that carry this session's marker."""
    marker = f"{SESSION_VARIABLE}={token or os.environ[SESSION_VARIABLE]}".encode()
    found: dict[int, str] = {}
    if not Path("/proc").is_dir():
        return found
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if state not in ("Z", "X"):
            found[int(entry.name)] = " ".join(command.split())[:200]
    return found


def _stopped_on_exit() -> set[int]:
    """Daemonic multiprocessing children of pytest: the interpreter stops them when it exits."""
    import multiprocessing

    return {child.pid for child in multiprocessing.active_children() if child.daemon and child.pid}


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny causal LM and its character tokenizer saved as a model folder (no warm-up, trains in seconds)."""
    from bandpo.training.model import build_char_tokenizer, build_tiny_model

    tokenizer = build_char_tokenizer()
    model_dir = tmp_path_factory.mktemp("model") / "tiny"
    build_tiny_model(tokenizer, hidden_size=16, num_layers=1, num_heads=2, seed=1).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return model_dir


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    gc.collect()  # objects that own a worker close it when collected
    deadline = time.monotonic() + GRACE_S
    while True:
        leftovers = {pid: cmd for pid, cmd in session_processes().items() if pid not in _stopped_on_exit()}
        if not leftovers or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    if not leftovers:
        return
    lines = [f"  pid {pid}: {command}" for pid, command in sorted(leftovers.items())]
    report_only = os.environ.get("BANDPO_LEFTOVER_PROCESSES") == "report"
    print(
        f"\nconftest: {len(leftovers)} process(es) started by this test session outlived it"
        + (" (reported only)" if report_only else "; the session fails")
        + ":\n"
        + "\n".join(lines),
        file=sys.stderr,
    )
    for pid in leftovers:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    if not report_only:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
