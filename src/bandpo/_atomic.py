"""File writes: atomic (a killed process leaves the old file or the new one, never a torn one), and a
writability check that writes nothing, so a command can refuse a bad folder before its first write."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["check_writable", "write_text_atomic"]


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it over `path` (`os.replace`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def check_writable(directory: Path, what: str, flag: str) -> None:
    """Raise a one-line ValueError unless `directory` is, or can be created as, a writable folder.

    Nothing is written: the nearest existing ancestor must be a folder that this process may write to
    (``os.access``, which also reports a read-only file system).
    """
    if directory.exists() and not directory.is_dir():
        raise ValueError(
            f"{what} {str(directory)!r} is an existing file, not a folder; choose another {flag}"
        )
    existing = directory
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise ValueError(
            f"{what} {str(directory)!r} lies under {str(existing)!r}, which is a file; choose another {flag}"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        reason = f"{str(existing)!r} is read-only" if existing != directory else "it is read-only"
        raise ValueError(f"{what} {str(directory)!r} is not writable ({reason}); choose a writable {flag}")
