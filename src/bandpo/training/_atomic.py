"""File writes: atomic (a killed process leaves the old file or the new one, never a torn one), and a
writability check that writes nothing, so a command can refuse a bad folder before its first write.

The temporaries are created with the permissions of any other file this process writes (0666 and 0777 less
the umask, applied by the kernel), not ``tempfile``'s private 0600 and 0700: the renamed result is the file a
user, or the other users of a shared cache, read afterwards. `use_umask` gives the same modes to what other
libraries wrote privately (safetensors creates its files 0600).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = [
    "check_writable",
    "current_umask",
    "make_temporary_dir",
    "open_temporary_file",
    "use_umask",
    "write_text_atomic",
]

_ATTEMPTS = 100  # random names tried before giving up (a clash is a 1 in 2**32 event)


def open_temporary_file(directory: Path, prefix: str) -> tuple[int, Path]:
    """A new file ``<directory>/<prefix><random>`` opened for writing: (descriptor, path); mode 0666 & ~umask."""
    for _ in range(_ATTEMPTS):
        path = Path(directory) / f"{prefix}{secrets.token_hex(4)}"
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name {prefix}* in {directory}")


def make_temporary_dir(directory: Path, prefix: str) -> Path:
    """A new folder ``<directory>/<prefix><random>``; mode 0777 & ~umask (``tempfile.mkdtemp``'s is 0700)."""
    for _ in range(_ATTEMPTS):
        path = Path(directory) / f"{prefix}{secrets.token_hex(4)}"
        try:
            os.mkdir(path, 0o777)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name {prefix}* in {directory}")


def current_umask() -> int:
    """This process's umask, read without changing it where Linux shows it (``/proc/self/status``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere the only way to read it is to set it (briefly)
    os.umask(mask)
    return mask


def use_umask(folder: Path) -> None:
    """Give `folder` and everything under it the modes of a plain write: 0777 (folders) or 0666 (files) less
    the umask, keeping a file's execute bits only where it had them."""
    mask = current_umask()
    os.chmod(folder, 0o777 & ~mask)
    for root, folders, files in os.walk(folder):
        for name in folders:
            os.chmod(Path(root) / name, 0o777 & ~mask)
        for name in files:
            path = Path(root) / name
            if not path.is_symlink():
                executable = path.stat().st_mode & 0o111
                os.chmod(path, (0o666 | executable) & ~mask)


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it over `path` (`os.replace`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = open_temporary_file(path.parent, f".{path.name}-")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
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
