"""The run directory: where each file goes, what may be written, and which checkpoint a resume uses.

Everything here is checked before a run writes its first file, so a refused start leaves nothing behind and
the retry is not blocked: an ``output_dir`` that is empty, a file, under a file, or not writable, and, on
resume, a ``config.json`` or ``trainer_state.json`` that does not parse.

A checkpoint (``checkpoints/checkpoint-<optimiser step>/``) counts once it holds ``trainer_state.json``:
the HF Trainer writes that file last, after the weights, optimiser, scheduler and RNG state (pinned by
``tests/training/test_checkpoints.py``), so a run killed while saving leaves a checkpoint without it, which
resume skips and removes; one whose ``trainer_state.json`` does not parse is refused with the file named. Files the run writes whole (config, evaluations, summary, final model) are written
to a temporary name and renamed into place; the temporaries a killed run leaves are removed when the next
run starts in the directory.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bandpo._atomic import check_writable, make_temporary_dir, use_umask
from bandpo.training.config import RUN_INDEPENDENT_FIELDS, TrainConfig

__all__ = [
    "CHECKPOINT_PATTERN",
    "RunPaths",
    "check_checkpoint_files",
    "check_run_dir",
    "check_writable",
    "checkpoint_step",
    "complete_checkpoints",
    "find_last_checkpoint",
    "prune_checkpoints",
    "read_json",
    "remove_leftovers",
    "resolve_run_dir",
    "save_pretrained_atomic",
    "set_aside_checkpoints",
    "take_run_lock",
    "to_json",
    "undo_failed_start",
]

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
LOCK_FILE = "run.lock"  # flock-ed by the process writing the run (`take_run_lock`); holds its pid
# temporaries of write_text_atomic (".<name>-*"), save_pretrained_atomic (".model-*") and older versions'
# checkpoint staging (".staging-*")
LEFTOVER_PATTERN = re.compile(r"^\.(staging|model|[\w.]+\.jsonl?)-")


@dataclass(frozen=True)
class RunPaths:
    """The files and folders of one run directory."""

    run_dir: Path

    @property
    def config(self) -> Path:
        return self.run_dir / "config.json"

    @property
    def metrics(self) -> Path:
        return self.run_dir / "metrics.jsonl"

    @property
    def tensorboard(self) -> Path:
        return self.run_dir / "tensorboard"

    @property
    def checkpoints(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def model(self) -> Path:
        return self.run_dir / "model"

    @property
    def plots(self) -> Path:
        return self.run_dir / "plots"

    @property
    def eval_before(self) -> Path:
        return self.run_dir / "eval_before.json"

    @property
    def eval_after(self) -> Path:
        return self.run_dir / "eval_after.json"

    @property
    def summary(self) -> Path:
        return self.run_dir / "summary.json"

    @property
    def lock(self) -> Path:
        return self.run_dir / LOCK_FILE

    def as_dict(self) -> dict[str, str]:
        """``TrainSummary.paths``: every entry by name, as strings."""
        names = ("config", "metrics", "tensorboard", "checkpoints", "model", "plots")
        names += ("eval_before", "eval_after", "summary")
        return {"run_dir": str(self.run_dir), **{name: str(getattr(self, name)) for name in names}}


def resolve_run_dir(config: TrainConfig) -> Path:
    """``output_dir``, or ``runs/<method>-seed<seed>-<time>`` when it is None (not on resume)."""
    if config.output_dir is not None:
        if not str(config.output_dir).strip():
            raise ValueError(
                "output_dir is empty; pass --output-dir RUN_DIR (a new or empty folder), or leave it out for "
                "runs/<method>-seed<seed>-<time>"
            )
        return Path(config.output_dir).expanduser()
    if config.resume:
        raise ValueError("resume needs output_dir: pass --output-dir RUN_DIR of the run to continue")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.method}-seed{config.seed}-{stamp}"


def read_json(path: Path, *, fix: str) -> Any:
    """The JSON in `path`, or a one-line error naming the file and `fix`."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        reason = error.msg if isinstance(error, json.JSONDecodeError) else "not UTF-8"
        raise ValueError(f"{path} is not valid JSON ({reason}; truncated or corrupt?); {fix}") from None


def to_json(value: Any, *, indent: int | None = None) -> str:
    """Standard JSON: a non-finite float (``--dual-clip-c inf``, "off") is written as null."""

    def finite(item: Any) -> Any:
        if isinstance(item, float) and not math.isfinite(item):
            return None
        if isinstance(item, dict):
            return {key: finite(entry) for key, entry in item.items()}
        if isinstance(item, list | tuple):
            return [finite(entry) for entry in item]
        return item

    return json.dumps(finite(value), indent=indent, sort_keys=False, allow_nan=False)


def check_run_dir(paths: RunPaths, config: TrainConfig) -> None:
    """Refuse a run directory that cannot hold this run (see the module docstring); writes nothing."""
    check_writable(paths.run_dir, "output_dir", "--output-dir")
    if not config.resume:
        if paths.config.exists():
            raise ValueError(
                f"output_dir {str(paths.run_dir)!r} already holds a run; pass --resume to continue it or choose "
                "another --output-dir"
            )
        return
    if not paths.config.exists():
        return  # nothing was written yet (killed at once, or never started): resuming means starting
    stored = read_json(paths.config, fix="delete the run directory and start again")
    if not isinstance(stored, dict):
        raise ValueError(
            f"{paths.config} does not hold a run's settings; delete the run directory and start again"
        )
    given = json.loads(to_json(config.to_dict()))
    ignored = RUN_INDEPENDENT_FIELDS | {"resolved"}
    # a field the stored config lacks was added after the run started: the run used its default behaviour
    defaults = json.loads(to_json(TrainConfig().to_dict()))
    stored = {**{k: v for k, v in defaults.items() if k not in stored}, **stored}
    different = sorted(k for k in given if k not in ignored and stored.get(k) != given[k])
    if different:
        details = ", ".join(f"{k}: run has {stored.get(k)!r}, given {given[k]!r}" for k in different)
        raise ValueError(f"resume: config differs from the run's ({details}); resume with the run's settings")


def complete_checkpoints(checkpoint_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of the checkpoints in `checkpoint_dir` that have their ``trainer_state.json``, by step."""
    if not checkpoint_dir.is_dir():
        return []
    found = []
    for path in checkpoint_dir.iterdir():
        match = CHECKPOINT_PATTERN.match(path.name)
        if match and (path / "trainer_state.json").is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def find_last_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """The complete checkpoint with the highest step in `checkpoint_dir`, or None."""
    found = complete_checkpoints(Path(checkpoint_dir))
    return found[-1][1] if found else None


def checkpoint_step(checkpoint: Path) -> int:
    """The optimiser step stored in `checkpoint` (one-line error naming the file when it does not parse)."""
    path = checkpoint / "trainer_state.json"
    fix = f"delete {checkpoint} to resume from the checkpoint before it (or from the start)"
    state = read_json(path, fix=fix)
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        raise ValueError(f"{path} has no integer global_step; {fix}")
    return int(state["global_step"])


def remove_leftovers(paths: RunPaths) -> None:
    """Remove what a killed run leaves: temporaries of atomic writes and checkpoints it did not finish."""
    for folder in (paths.run_dir, paths.checkpoints):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if LEFTOVER_PATTERN.match(path.name):
                _remove(path)
    if paths.checkpoints.is_dir():
        for path in paths.checkpoints.iterdir():
            if CHECKPOINT_PATTERN.match(path.name) and not (path / "trainer_state.json").exists():
                _remove(path)


def prune_checkpoints(checkpoint_dir: Path, keep: int) -> None:
    """Keep the `keep` complete checkpoints with the highest steps."""
    complete = complete_checkpoints(checkpoint_dir)
    for _, old in complete[: max(len(complete) - keep, 0)]:
        shutil.rmtree(old, ignore_errors=True)


def set_aside_checkpoints(
    checkpoint_dir: Path, from_step: int, *, rename: bool = True
) -> tuple[Path | None, list[Path]]:
    """Rename the complete checkpoints at optimiser step `from_step` or later to ``diverged-checkpoint-<step>``
    (kept for inspection, never resumed from or pruned); (the newest checkpoint left, the renamed ones).
    Without `rename` (a process that does not write the run) only says which they are."""
    kept: Path | None = None
    moved = []
    for step, path in complete_checkpoints(checkpoint_dir):
        if step < from_step:
            kept = path
            continue
        target = path.with_name(f"diverged-{path.name}")
        if rename:
            if target.exists():
                shutil.rmtree(target)
            os.replace(path, target)
        moved.append(target)
    return kept, moved


def save_pretrained_atomic(model: Any, tokenizer: Any, destination: Path) -> None:
    """``save_pretrained`` of model and tokenizer into a temporary folder, then renamed to `destination`."""
    staging = make_temporary_dir(destination.parent, f".{destination.name}-")
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        use_umask(staging)  # safetensors writes its files 0600
        if destination.exists():
            shutil.rmtree(destination)
        os.replace(staging, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def take_run_lock(paths: RunPaths, config: TrainConfig) -> Any:
    """Create the run directory and lock it for this process (`bandpo._lifetime.FolderLock` on ``run.lock``).

    The lock dies with its holder (``kill -9`` included), so only a live writer refuses a second one. Under
    the lock the directory is checked again (`check_run_dir`): a run that another process started or
    finished between this process's first check and its lock is not overwritten.
    """
    from bandpo._lifetime import FolderLock

    paths.run_dir.mkdir(parents=True, exist_ok=True)
    lock = FolderLock(
        paths.lock,
        what=f"run directory {str(paths.run_dir)!r}",
        fix="wait for that run to end (or stop it), or choose another --output-dir",
    )
    try:
        check_run_dir(paths, config)
    except BaseException:
        lock.release()
        raise
    return lock


def undo_failed_start(paths: RunPaths, *, created: bool, fresh: bool) -> None:
    """After a failure, remove what a fresh start wrote while it has no checkpoint to resume from, so the
    retry is not refused as "already holds a run"; a run with a checkpoint is always kept for ``--resume``
    (the caller decides whether a run without one is worth keeping)."""
    if not fresh or complete_checkpoints(paths.checkpoints):
        return
    for path in (paths.config, paths.metrics, paths.eval_before, paths.eval_after, paths.summary):
        path.unlink(missing_ok=True)
    for folder in (paths.tensorboard, paths.checkpoints, paths.plots, paths.model):
        shutil.rmtree(folder, ignore_errors=True)
    remove_leftovers(paths)
    paths.lock.unlink(missing_ok=True)  # still held by this process: nobody else is writing here
    if created:
        with contextlib.suppress(OSError):
            paths.run_dir.rmdir()  # only when nothing else is left


def check_checkpoint_files(checkpoint: Path, *, world_size: int) -> None:
    """Refuse a checkpoint whose files cannot be loaded, or one written by another number of processes.

    torch's ``*.pt``/``*.pth`` files are zip archives: a truncated one lacks the archive's closing record
    (checked without loading it). The HF Trainer writes ``rng_state.pth`` in one process and
    ``rng_state_<rank>.pth`` per process in several, which says how many processes trained the run.
    """
    import zipfile

    drop = f"delete {checkpoint} to resume from the checkpoint before it (or from the start)"
    for path in sorted(checkpoint.glob("*.pt*")):
        if path.suffix in (".pt", ".pth") and not zipfile.is_zipfile(path):
            raise ValueError(f"{path} is truncated or corrupt (not a complete torch file); {drop}")
    per_rank = list(checkpoint.glob("rng_state_*.pth"))
    trained_on = len(per_rank) if per_rank else (1 if (checkpoint / "rng_state.pth").exists() else None)
    if trained_on is not None and trained_on != world_size:
        raise ValueError(
            f"resume: {checkpoint} was written by a run on {trained_on} process(es), this launch has "
            f"{world_size}; resume with {trained_on} (torchrun --nproc_per_node {trained_on}, or no launcher "
            "for 1): each process restores its own random state"
        )
