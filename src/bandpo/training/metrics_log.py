"""The run's metric sink: one JSON record per RL step in ``metrics.jsonl``, mirrored to the run's loggers
(``report_to``: TensorBoard, Trackio, W&B, MLflow; `bandpo.training.loggers`); its reader (`read_metrics`), which everything that reads the file uses; and its plots (`plot_run`: reward, entropy
and clip fractions against the RL step, written to the run's plots/).

TRL's logged names are mapped to the catalogued keys of `bandpo.metric_names` (`TRL_TO_CATALOGUE`); every
other TRL key is kept as ``trl/<name>``. On resume the file is cut back to the checkpoint's step (and
TensorBoard's ``purge_step`` drops the events written after it), so a resumed run's records are those of an
uninterrupted one.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bandpo import metric_names as mn
from bandpo.training._atomic import write_text_atomic

__all__ = [
    "CATALOGUED",
    "TRL_TO_CATALOGUE",
    "MetricsLog",
    "catalogue",
    "moving_average",
    "plot_run",
    "read_metrics",
]

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
CATALOGUED: frozenset[str] = frozenset(entry.key for entry in mn.catalogued())


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
    """Appends records to ``metrics.jsonl`` and hands each to the run's loggers (`sinks`).

    Args:
        path: the ``metrics.jsonl`` file.
        sinks: the loggers each record is mirrored to (`bandpo.training.loggers.open_sinks`); closed with
            this log.
        resumed_step: the RL step a resumed run restarts after (None: a fresh run, the file is started anew).
        max_steps: the run's last RL step (its final evaluation is written again on resume).
    """

    def __init__(
        self, path: Path, sinks: Sequence[Any] = (), *, resumed_step: int | None, max_steps: int
    ) -> None:
        self.path = path
        if resumed_step is None:
            path.unlink(missing_ok=True)
        else:
            self._truncate(resumed_step, max_steps)
        self.sinks = list(sinks)
        self.last_time = time.perf_counter()

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        sinks, self.sinks = self.sinks, []
        for sink in sinks:
            sink.close()

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
        if self.sinks:
            step = int(record[mn.TRAIN_STEP])
            metrics = {key: value for key, value in record.items() if key != mn.TRAIN_STEP}
            for sink in self.sinks:
                sink.log(metrics, step)

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


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    points = [(r[mn.TRAIN_STEP], r[key]) for r in records if r.get(key) is not None and mn.TRAIN_STEP in r]
    return [p[0] for p in points], [p[1] for p in points]


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean over the last `window` points (fewer at the start), skipping non-finite values.

    A point whose window holds no finite value is nan (a gap in a plot).
    """
    values = [float(value) for value in values]
    if window <= 1:
        return values
    out = []
    for index in range(len(values)):
        chunk = [value for value in values[max(0, index - window + 1) : index + 1] if math.isfinite(value)]
        out.append(sum(chunk) / len(chunk) if chunk else math.nan)
    return out


def plot_run(metrics_path: str | Path, out_dir: str | Path, *, title: str = "") -> dict[str, Path]:
    """Write reward.png, entropy.png and clip_fractions.png next to each other; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    everything = read_metrics(metrics_path)
    records = [r for r in everything if mn.TRAIN_REWARD in r]
    evaluations = [r for r in everything if mn.EVAL_MEAN_AT_K in r]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    panels = {  # one figure each: the metrics drawn on it, labelled with their catalogued short names
        "reward": [mn.TRAIN_REWARD, mn.TRAIN_ACCURACY],
        "entropy": [mn.TRAIN_ENTROPY],
        "clip_fractions": [
            mn.CLIP_FRAC_UP,
            mn.CLIP_FRAC_DOWN,
            mn.CLIP_FRAC_DUAL,
            *mn.CLIP_FRAC_UP_BINS[:2],
            *mn.CLIP_FRAC_DOWN_BINS[:2],
        ],
    }
    window = max(1, len(records) // 25)
    paths = {}
    for name, keys in panels.items():
        figure, axis = plt.subplots(figsize=(6, 3.6), dpi=110)
        for key in keys:
            steps, values = _series(records, key)
            if steps:
                label = mn.metric(key).text("short")
                axis.plot(steps, moving_average(values, window), label=label, linewidth=1.2)
        if name == "reward" and evaluations:
            steps, values = _series(evaluations, mn.EVAL_MEAN_AT_K)
            label = f"held-out {mn.metric(mn.EVAL_MEAN_AT_K).text('short')}"
            axis.plot(steps, values, "o--", label=label, markersize=4, linewidth=0.8)
        axis.set_xlabel("RL step")
        smoothing = f" (moving average, {window} steps)" if window > 1 else ""
        axis.set_title(f"{title} {name.replace('_', ' ')}{smoothing}".strip(), fontsize=10)
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7)
        figure.tight_layout()
        path = out_dir / f"{name}.png"
        figure.savefig(path)
        plt.close(figure)
        paths[name] = path
    return paths
