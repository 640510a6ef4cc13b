"""PNG plots of a run's `metrics.jsonl`: reward, entropy and clip fractions against the RL step."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bandpo import metric_names as mn
from bandpo.training.metrics_log import read_metrics

__all__ = ["moving_average", "plot_run"]


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    points = [(r[mn.TRAIN_STEP], r[key]) for r in records if r.get(key) is not None and mn.TRAIN_STEP in r]
    return [p[0] for p in points], [p[1] for p in points]


def _bin_text(index: int) -> str:
    lo, hi = mn.PROB_BIN_EDGES[index], mn.PROB_BIN_EDGES[index + 1]
    return f"p_old in [{lo:g}, {hi:g})"


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
    panels = {
        "reward": [(mn.TRAIN_REWARD, "reward"), (mn.TRAIN_ACCURACY, "accuracy")],
        "entropy": [(mn.TRAIN_ENTROPY, "token entropy (nats)")],
        "clip_fractions": [
            (mn.CLIP_FRAC_UP, "up: A>0, r>high"),
            (mn.CLIP_FRAC_DOWN, "down: A<0, r<low"),
            (mn.CLIP_FRAC_DUAL, "dual-clip"),
        ]
        + [
            (mn.clip_frac_up_bin(label), f"up, {_bin_text(i)}")
            for i, label in enumerate(mn.PROB_BIN_LABELS[:2])
        ]
        + [
            (mn.clip_frac_down_bin(label), f"down, {_bin_text(i)}")
            for i, label in enumerate(mn.PROB_BIN_LABELS[:2])
        ],
    }
    window = max(1, len(records) // 25)
    paths = {}
    for name, keys in panels.items():
        figure, axis = plt.subplots(figsize=(6, 3.6), dpi=110)
        for key, label in keys:
            steps, values = _series(records, key)
            if steps:
                axis.plot(steps, moving_average(values, window), label=label, linewidth=1.2)
        if name == "reward" and evaluations:
            steps, values = _series(evaluations, mn.EVAL_MEAN_AT_K)
            axis.plot(steps, values, "o--", label="held-out mean@k", markersize=4, linewidth=0.8)
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
