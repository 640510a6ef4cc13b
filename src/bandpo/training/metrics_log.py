"""The run's metric sink: one JSON record per RL step in ``metrics.jsonl``, mirrored to TensorBoard, and its
reader (`read_metrics`), which everything that reads the file uses.

TRL's logged names are mapped to the catalogued keys of `bandpo.metric_names` (`TRL_TO_CATALOGUE`); every
other TRL key is kept as ``trl/<name>``. On resume the file is cut back to the checkpoint's step and
TensorBoard's ``purge_step`` drops the events written after it, so a resumed run's records are those of an
uninterrupted one.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from bandpo import metric_names as mn
from bandpo._atomic import write_text_atomic

__all__ = ["CATALOGUED", "TRL_TO_CATALOGUE", "MetricsLog", "catalogue", "read_metrics"]

# TRL's metric names -> catalogued keys; every other TRL key is kept as "trl/<name>"
TRL_TO_CATALOGUE: dict[str, str] = {
    "reward": mn.TRAIN_REWARD,
    "reward_std": mn.TRAIN_REWARD_STD,
    "entropy": mn.TRAIN_ENTROPY,
    "completions/mean_length": mn.TRAIN_COMPLETION_LENGTH,
    "learning_rate": mn.TRAIN_LEARNING_RATE,
    "grad_norm": mn.TRAIN_GRAD_NORM,
    "loss": mn.LOSS_TOTAL,
    "kl": mn.LOSS_KL,
    "policy_loss": mn.LOSS_POLICY,
}
CATALOGUED: frozenset[str] = (
    frozenset(
        value
        for name, value in vars(mn).items()
        if name.isupper() and isinstance(value, str) and "/" in value
    )
    | frozenset(mn.CLIP_FRAC_UP_BINS)
    | frozenset(mn.CLIP_FRAC_DOWN_BINS)
    | frozenset(mn.CLIP_TOKENS_BINS)
)


def catalogue(logs: dict[str, Any]) -> dict[str, float]:
    """TRL's numeric logs under catalogued names (strings and None dropped)."""
    return {
        TRL_TO_CATALOGUE.get(key, key if key in CATALOGUED else f"trl/{key}"): float(value)
        for key, value in logs.items()
        if value is not None and not isinstance(value, str)
    }


def read_metrics(path: str | Path, *, missing_ok: bool = False) -> list[dict[str, Any]]:
    """The records of a `metrics.jsonl` file ([] for a file not written yet when `missing_ok`).

    A torn last line (a run killed while appending) is skipped; any other line that is not UTF-8 JSON is
    refused with one line naming the file and the line.
    """
    path = Path(path)
    if missing_ok and not path.exists():
        return []
    lines = path.read_bytes().splitlines()
    records = []
    for number, raw in enumerate(lines, start=1):
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            if number == len(lines):
                continue  # torn by a kill while it was written
            reason = "not UTF-8" if isinstance(error, UnicodeDecodeError) else f"not JSON: {error.msg}"
            raise ValueError(
                f"{path} line {number} is corrupt ({reason}); delete that line, or the run directory to "
                "train the run again"
            ) from None
        if isinstance(record, dict):
            records.append(record)
    return records


class MetricsLog:
    """Appends records to ``metrics.jsonl`` (and TensorBoard when `tensorboard_dir` is given).

    Args:
        path: the ``metrics.jsonl`` file.
        tensorboard_dir: TensorBoard event folder, or None for none.
        resumed_step: the RL step a resumed run restarts after (None: a fresh run, the file is started anew).
        max_steps: the run's last RL step (its final evaluation is written again on resume).
    """

    def __init__(
        self, path: Path, tensorboard_dir: Path | None, *, resumed_step: int | None, max_steps: int
    ) -> None:
        self.path = path
        if resumed_step is None:
            path.unlink(missing_ok=True)
        else:
            self._truncate(resumed_step, max_steps)
        self.writer: Any = None
        if tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            # on resume, purge_step drops the events a killed run wrote after its last checkpoint (all of its
            # training events when it died before the first one; the step-0 evaluation is kept, as in
            # metrics.jsonl)
            purge = resumed_step + 1 if resumed_step is not None else None
            self.writer = SummaryWriter(str(tensorboard_dir), purge_step=purge)
        self.last_time = time.perf_counter()

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.writer = None

    def restart_clock(self) -> None:
        """Start timing the next RL step now (the first step does not count the setup)."""
        self.last_time = time.perf_counter()

    def record_step(self, rl_step: int, logs: dict[str, Any]) -> dict[str, Any]:
        """Append TRL's logs of `rl_step` with its wall time; returns the record."""
        now = time.perf_counter()
        record: dict[str, Any] = {mn.TRAIN_STEP: rl_step, **catalogue(logs)}
        record[mn.TRAIN_STEP_TIME] = now - self.last_time
        self.last_time = now
        self.append(record)
        return record

    def append(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as stream:
            stream.write(json.dumps(record) + "\n")
        if self.writer is not None:
            step = int(record[mn.TRAIN_STEP])
            for key, value in record.items():
                if key != mn.TRAIN_STEP and isinstance(value, int | float) and math.isfinite(value):
                    self.writer.add_scalar(key, value, step)
            self.writer.flush()

    def _truncate(self, rl_step: int, max_steps: int) -> None:
        if not self.path.exists():
            return

        def keep(record: dict[str, Any]) -> bool:
            step = record.get(mn.TRAIN_STEP, 0)
            if step == rl_step == max_steps and step > 0:
                return mn.TRAIN_REWARD in record  # the final evaluation is written again
            return step <= rl_step

        kept = [r for r in read_metrics(self.path) if keep(r)]
        write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))
