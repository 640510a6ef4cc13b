"""Which code a run ran: the bandpo version and, when the package is imported from a git checkout, its commit.

A study's records must say what computed them (an evaluation refactored halfway through a study is otherwise
invisible). From a checkout (``src/bandpo`` inside a git work tree, as in development) the record is the
commit and whether the package's sources differed from it (``dirty``: an uncommitted or untracked change
under ``src/bandpo``; documents and results elsewhere in the tree do not count). From an installed wheel there
is no commit to read: the record says so and holds the package version alone.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

__all__ = ["code_text", "code_version"]

_GIT_TIMEOUT_S = 10.0


def _git(folder: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), *args],
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_version() -> dict[str, Any]:
    """``{"version", "source", "commit", "dirty"}``: source "git" (commit and dirty read from the checkout the
    package is imported from) or "package" (an installed copy: commit and dirty None)."""
    import bandpo

    package = Path(bandpo.__file__).resolve().parent
    record: dict[str, Any] = {
        "version": bandpo.__version__,
        "source": "package",
        "commit": None,
        "dirty": None,
    }
    top = _git(package, "rev-parse", "--show-toplevel")
    if not top or Path(top).resolve() / "src" / "bandpo" != package:
        return record  # not a checkout of this project (e.g. site-packages inside some other repository)
    commit = _git(package, "rev-parse", "HEAD")
    status = _git(package, "status", "--porcelain", "--untracked-files=normal", "--", ".")
    if commit is None or status is None:
        return record
    return {**record, "source": "git", "commit": commit, "dirty": bool(status)}


def code_text(code: dict[str, Any] | None) -> str:
    """`bandpo 0.7.0 at 1a2b3c4d5e6f`, `... (uncommitted changes)`, or `bandpo 0.7.0 (installed package, no
    commit recorded)`; "not recorded" for a record written before runs recorded their code."""
    if not code:
        return "not recorded"
    version = f"bandpo {code.get('version')}"
    if code.get("source") != "git" or not code.get("commit"):
        return f"{version} (installed package, no commit recorded)"
    return f"{version} at {str(code['commit'])[:12]}" + (
        " (uncommitted changes)" if code.get("dirty") else ""
    )
