"""The run directory as one object (`RunDir`): where each file goes, the checks before the first write, the
lock of its one writer, its settings (``config.json``: read, compared and written here only), its evaluations,
whether it finished (``summary.json``), and which checkpoint a resume uses. Every other module asks a `RunDir`
for these; none names a file of the run itself.

The run directory (``TrainSummary.paths``)::

    config.json          the resolved TrainConfig (standard JSON: a disabled dual clip is null)
    metrics.jsonl        one record per RL step: catalogued keys (bandpo.metric_names), TRL's others as trl/*
    tensorboard/         the same scalars as TensorBoard events (report_to tensorboard, the default; the other
                         loggers, `bandpo.training.loggers`, write where their library does)
    checkpoints/         checkpoint-<optimiser step>/: safetensors weights, optimiser, RNG and trainer state
    model/               the final policy (save_pretrained, safetensors), tokenizer and README.md, its model
                         card for the Hub (`bandpo.training.model_card`): ready for `hf upload`; with ``lora_r``
                         (here and in checkpoints) the adapter only, as peft saves it (`bandpo.training.lora`)
    eval_before.json     held-out evaluation before training (metrics and per-prompt samples)
    eval_after.json      ... after training
    plots/               reward.png, entropy.png, clip_fractions.png
    summary.json         before/after metrics, final training metrics, wall time, reward failures, paths
    run.lock             flock-ed by the process writing the run, from its first write to its end (its pid)

Everything `RunDir.check` refuses is refused before a run writes its first file, so a refused start leaves
nothing behind and the retry is not blocked: an ``output_dir`` that is empty, a file, under a file, or not
writable, and, on resume, a ``config.json`` or ``trainer_state.json`` that does not parse.

A checkpoint (``checkpoints/checkpoint-<optimiser step>/``) counts once it holds ``trainer_state.json``:
the HF Trainer writes that file last, after the weights, optimiser, scheduler and RNG state (pinned by
``tests/training/test_checkpoints.py``), so a run killed while saving leaves a checkpoint without it, which
resume skips and removes; one whose ``trainer_state.json`` does not parse is refused with the file named.
Files the run writes whole (config, evaluations, summary, final model) are written to a temporary name and
renamed into place; the temporaries a killed run leaves are removed when the next run starts in the directory.
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
from typing import Any, Literal

from bandpo.training._atomic import check_writable, make_temporary_dir, use_umask, write_text_atomic
from bandpo.training._lifetime import FolderLock
from bandpo.training.config import RUN_INDEPENDENT_FIELDS, TrainConfig
from bandpo.training.evaluate import EvalResult
from bandpo.training.metrics_log import read_metrics

__all__ = [
    "CHECKPOINT_PATTERN",
    "RunDir",
    "check_checkpoint_files",
    "check_writable",
    "checkpoint_step",
    "complete_checkpoints",
    "find_last_checkpoint",
    "prune_checkpoints",
    "read_json",
    "save_pretrained_atomic",
    "set_aside_checkpoints",
    "to_json",
]

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
# temporaries of write_text_atomic (".<name>-*"), save_pretrained_atomic (".model-*") and older versions'
# checkpoint staging (".staging-*")
LEFTOVER_PATTERN = re.compile(r"^\.(staging|model|[\w.]+\.jsonl?)-")
Evaluation = Literal["before", "after"]


@dataclass(frozen=True)
class RunDir:
    """One run directory (the module docstring says what each entry holds). Cheap to build: it holds the
    folder's path, and reads or writes only when asked.

    Attributes:
        path: the run directory.
    """

    path: Path

    @classmethod
    def for_config(cls, config: TrainConfig) -> RunDir:
        """``output_dir``, or ``runs/<method>-seed<seed>-<time>`` when it is None (not on resume)."""
        if config.output_dir is not None:
            if not str(config.output_dir).strip():
                raise ValueError(
                    "output_dir is empty; pass --output-dir RUN_DIR (a new or empty folder), or leave it out for "
                    "runs/<method>-seed<seed>-<time>"
                )
            return cls(Path(config.output_dir).expanduser())
        if config.resume:
            raise ValueError("resume needs output_dir: pass --output-dir RUN_DIR of the run to continue")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return cls(Path("runs") / f"{config.method}-seed{config.seed}-{stamp}")

    # -- the files ------------------------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def model(self) -> Path:
        return self.path / "model"

    @property
    def plots(self) -> Path:
        return self.path / "plots"

    @property
    def eval_before(self) -> Path:
        return self.path / "eval_before.json"

    @property
    def eval_after(self) -> Path:
        return self.path / "eval_after.json"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def lock(self) -> Path:
        """flock-ed by the process writing the run (`take_lock`); holds its pid."""
        return self.path / "run.lock"

    def as_dict(self) -> dict[str, str]:
        """``TrainSummary.paths``: every entry by name, as strings."""
        names = ("config", "metrics", "tensorboard", "checkpoints", "model", "plots")
        names += ("eval_before", "eval_after", "summary")
        return {"run_dir": str(self.path), **{name: str(getattr(self, name)) for name in names}}

    # -- its state ------------------------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        """A run was started here: its config.json, the first file it writes, is there."""
        return self.config.exists()

    @property
    def finished(self) -> bool:
        """The run finished: its summary.json, the last file it writes, is there."""
        return self.summary.exists()

    def last_checkpoint(self) -> Path | None:
        """The complete checkpoint a resume continues from (None: from the start)."""
        return find_last_checkpoint(self.checkpoints)

    # -- its settings: config.json ------------------------------------------------------------------------
    def read_config(self) -> dict[str, Any] | None:
        """The settings the run started with, as config.json holds them; None before it was written."""
        if not self.config.exists():
            return None
        fix = (
            f"delete the run directory {self.path} and start again (that run is trained again from the start)"
        )
        stored = read_json(self.config, fix=fix)
        if not isinstance(stored, dict):
            raise ValueError(f"{self.config} does not hold a run's settings; {fix}")
        return stored

    def config_differences(self, config: TrainConfig) -> list[tuple[str, Any, Any]]:
        """``(field, the run's value, config's value)`` of each field that changes what the run computes
        (not `RUN_INDEPENDENT_FIELDS`) in which `config` differs from config.json, as standard JSON; [] before
        the run started. A field config.json lacks was added after the run started: the run used its default
        behaviour, which the field's default keeps."""
        stored = self.read_config()
        if stored is None:
            return []
        given = json.loads(to_json(config.to_dict()))
        defaults = json.loads(to_json(type(config)().to_dict()))
        stored = {**{k: v for k, v in defaults.items() if k not in stored}, **stored}
        ignored = RUN_INDEPENDENT_FIELDS | {"resolved"}
        return [
            (k, stored.get(k), given[k])
            for k in sorted(given)
            if k not in ignored and stored.get(k) != given[k]
        ]

    def write_config(self, config: TrainConfig, resolved: dict[str, Any]) -> None:
        """config.json: `config` with the derived values only the run knows (`resolved`: its dtypes) added."""
        record = config.to_dict()
        record["resolved"].update(resolved)
        write_text_atomic(self.config, to_json(record, indent=2))

    # -- before the first write, and the one writer ---------------------------------------------------------
    def check(self, config: TrainConfig) -> None:
        """Refuse a run directory that cannot hold this run (see the module docstring); writes nothing."""
        check_writable(self.path, "output_dir", "--output-dir")
        if not config.resume:
            if self.started:
                raise ValueError(
                    f"output_dir {str(self.path)!r} already holds a run; pass --resume to continue it or choose "
                    "another --output-dir"
                )
            return
        different = self.config_differences(config)  # nothing written yet: resuming means starting
        if different:
            details = ", ".join(f"{k}: run has {stored!r}, given {given!r}" for k, stored, given in different)
            raise ValueError(
                f"resume: config differs from the run's ({details}); resume with the run's settings"
            )

    def take_lock(self, config: TrainConfig) -> FolderLock:
        """Create the run directory and lock it for this process (`bandpo.training._lifetime.FolderLock` on `lock`).

        The lock dies with its holder (``kill -9`` included), so only a live writer refuses a second one. Under
        the lock the directory is checked again (`check`): a run that another process started or finished
        between this process's first check and its lock is not overwritten.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        lock = FolderLock(
            self.lock,
            what=f"run directory {str(self.path)!r}",
            fix="wait for that run to end (or stop it), or choose another --output-dir",
        )
        try:
            self.check(config)
        except BaseException:
            lock.release()
            raise
        return lock

    def remove_leftovers(self) -> None:
        """Remove what a killed run leaves: temporaries of atomic writes and checkpoints it did not finish."""
        for folder in (self.path, self.checkpoints):
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                if LEFTOVER_PATTERN.match(path.name):
                    _remove(path)
        if self.checkpoints.is_dir():
            for path in self.checkpoints.iterdir():
                if CHECKPOINT_PATTERN.match(path.name) and not (path / "trainer_state.json").exists():
                    _remove(path)

    def undo_failed_start(self, *, created: bool, fresh: bool) -> None:
        """After a failure, remove what a fresh start wrote while it has no checkpoint to resume from, so the
        retry is not refused as "already holds a run"; a run with a checkpoint is always kept for ``--resume``
        (the caller decides whether a run without one is worth keeping)."""
        if not fresh or complete_checkpoints(self.checkpoints):
            return
        for path in (self.config, self.metrics, self.eval_before, self.eval_after, self.summary):
            path.unlink(missing_ok=True)
        for folder in (self.tensorboard, self.checkpoints, self.plots, self.model):
            shutil.rmtree(folder, ignore_errors=True)
        self.remove_leftovers()
        self.lock.unlink(missing_ok=True)  # still held by this process: nobody else is writing here
        if created:
            with contextlib.suppress(OSError):
                self.path.rmdir()  # only when nothing else is left

    # -- what it produced -----------------------------------------------------------------------------------
    def read_evaluation(self, when: Evaluation, *, fix: str) -> EvalResult | None:
        """The held-out evaluation `when` ("before" or "after") training; None when it was not written."""
        path = self.eval_before if when == "before" else self.eval_after
        return EvalResult.from_dict(read_json(path, fix=fix)) if path.exists() else None

    def write_evaluation(self, when: Evaluation, result: EvalResult) -> None:
        path = self.eval_before if when == "before" else self.eval_after
        write_text_atomic(path, json.dumps(result.to_dict()))

    def metrics_records(self, *, missing_ok: bool = False) -> list[dict[str, Any]]:
        """The records of metrics.jsonl (`bandpo.training.metrics_log.read_metrics`)."""
        return read_metrics(self.metrics, missing_ok=missing_ok)

    def read_summary(self, *, fix: str) -> dict[str, Any]:
        """summary.json (`TrainSummary.to_dict`) of a run that `finished`."""
        return read_json(self.summary, fix=fix)

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_text_atomic(self.summary, json.dumps(summary, indent=2))


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


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# -- checkpoints ------------------------------------------------------------------------------------------


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
