"""The manifest of a prepared checkpoint folder: the size and SHA-256 of every file its conversion wrote,
recorded last (`write_manifest`) and checked before the folder is used (`verify_manifest`).

The check hashes every file once per process (about half a second of CPU for SmolLM2's 542 MB,
``benchmarks/verify_prepared.py``) and never caches on disk, so a file damaged without its size or time
changing (a bad disk, a copy that keeps times) is still caught, and a read-only cache needs no write; a second
check in the same process costs a few stat calls. A refused entry's message ends with the command that makes
it again (`prepare_fix`, `repair_fix`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from bandpo.training._atomic import write_text_atomic

__all__ = ["MANIFEST_FILE", "file_sha256", "prepare_fix", "repair_fix", "verify_manifest", "write_manifest"]

MANIFEST_FILE = "manifest.json"  # {"files": {name: {"bytes": n, "sha256": hex}}}, written last


def prepare_fix(name: str) -> str:
    """The advice for a short name that is not prepared: the command that prepares it."""
    return f"run `bandpo prepare-model {name}` (bash scripts/setup.sh does it once)"


def repair_fix(name: str) -> str:
    """The advice for a prepared checkpoint that cannot be used as it is: convert it again."""
    return f"run `bandpo prepare-model {name} --force` to convert it again"


def write_manifest(folder: Path) -> None:
    """Record the size and SHA-256 of every file in `folder` in its ``manifest.json`` (written last)."""
    files = {
        path.name: {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
        for path in sorted(folder.iterdir())
        if path.is_file() and path.name != MANIFEST_FILE
    }
    write_text_atomic(folder / MANIFEST_FILE, json.dumps({"files": files}, indent=2, sort_keys=True))


# folder -> the stat of its files when they last matched the manifest: a second check in the same process
# (TrainConfig, then the loader) costs a few stat calls; a new process hashes again
_VERIFIED: dict[Path, tuple[tuple[str, int, int, int, int], ...]] = {}


def verify_manifest(folder: Path, *, where: str, fix: str) -> None:
    """One-line ValueError (``{where}: ...; {fix}``) unless every file of `folder` is as its manifest records.

    The folder must hold ``manifest.json`` and exactly the files it lists, each of the recorded size and
    SHA-256 (the sizes first: a truncated file is named without hashing). A folder without a manifest is
    refused the same way: its files cannot be checked.
    """
    signature = _stat_signature(folder)
    if signature is not None and _VERIFIED.get(folder) == signature:
        return
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        raise ValueError(
            f"{where} has no {MANIFEST_FILE} (made by an older bandpo, or by hand), so its files cannot be "
            f"checked; {fix}"
        )
    try:
        files = json.loads(manifest_path.read_text(encoding="utf-8"))["files"]
        expected = {str(file): (int(entry["bytes"]), str(entry["sha256"])) for file, entry in files.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise ValueError(f"{where}: its {MANIFEST_FILE} is unreadable; {fix}") from None
    present = {path.name for path in folder.iterdir() if path.name != MANIFEST_FILE}
    missing, added = sorted(set(expected) - present), sorted(present - set(expected))
    if missing:
        raise ValueError(f"{where}: {missing[0]} is missing; {fix}")
    if added:  # transformers reads more than the weights: an adapter_config.json would load an adapter
        raise ValueError(f"{where}: {added[0]} was not written by the conversion (added by hand?); {fix}")
    for file, (size, _) in sorted(expected.items()):
        actual = (folder / file).stat().st_size
        if actual != size:
            raise ValueError(
                f"{where}: {file} was changed ({actual} bytes, the conversion wrote {size}); {fix}"
            )
    for file, (_, digest) in sorted(expected.items()):
        actual_digest = file_sha256(folder / file)
        if actual_digest != digest:
            raise ValueError(
                f"{where}: {file} is damaged or was edited (sha256 {actual_digest[:12]}..., the conversion "
                f"wrote {digest[:12]}...); {fix}"
            )
    if signature is not None and signature == _stat_signature(folder):  # unchanged while it was hashed
        _VERIFIED[folder] = signature


def _stat_signature(folder: Path) -> tuple[tuple[str, int, int, int, int], ...] | None:
    """(name, inode, size, mtime, ctime) of every file in `folder`; None when it cannot be read."""
    try:
        stats = [(path.name, path.stat()) for path in sorted(folder.iterdir())]
    except OSError:
        return None
    return tuple(
        (name, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns) for name, stat in stats
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
