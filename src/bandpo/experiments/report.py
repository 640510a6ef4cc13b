"""Report building blocks: mean ± spread over seeds, Markdown tables, and line plots with a spread band.

The spread everywhere is the standard error of the mean over seeds (sample std / sqrt(seeds)); with one seed it
is undefined and the table shows the mean alone. Paired tests and their verdicts live in
`bandpo.experiments.stats`.
"""

from __future__ import annotations

import math
import os
import platform
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

from bandpo import metric_names as mn
from bandpo.experiments.stats import mean_and_spread
from bandpo.training.metrics_log import moving_average

__all__ = [
    "clip_cell",
    "cpu_name",
    "format_mean_spread",
    "import_pyplot",
    "machine_info",
    "machine_text",
    "markdown_table",
    "mean_and_spread",
    "moving_average",
    "plot_curves",
    "prob_bin_headers",
    "save_figure",
]


def format_mean_spread(mean: float, spread: float = math.nan, digits: int = 3) -> str:
    """`0.540 ± 0.080`, `0.540` without a spread, `n/a` for a missing mean."""
    if mean is None or not math.isfinite(mean):
        return "n/a"
    if spread is None or not math.isfinite(spread):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {spread:.{digits}f}"


def format_values(values: Sequence[float], digits: int = 3) -> str:
    return format_mean_spread(*mean_and_spread(values), digits=digits)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table; every row must have one cell per header."""
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"table row has {len(row)} cells for {len(headers)} headers: {row!r}")

    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def import_pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (plots are files, never windows)."""
    try:
        import matplotlib
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("plots need matplotlib: pip install 'bandpo[train]'") from error
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_curves(
    ax,
    curves: Mapping[str, tuple[Sequence[float], Sequence[Sequence[float]]]],
    *,
    title: str,
    ylabel: str,
    xlabel: str = "step",
) -> None:
    """One line per label: the mean over seeds, with a band of ± one standard error.

    `curves[label] = (steps, values_per_seed)` where values_per_seed is a list (one per seed) of value lists
    aligned with `steps` (nan for a missing point).
    """
    import numpy as np

    for index, (label, (steps, per_seed)) in enumerate(curves.items()):
        values = np.asarray(per_seed, dtype=float)  # (seeds, points)
        if values.ndim != 2 or values.shape[1] != len(steps) or values.size == 0:
            continue
        values = np.where(np.isfinite(values), values, np.nan)
        count = np.sum(np.isfinite(values), axis=0)
        with warnings.catch_warnings():  # all-nan columns are expected (missing points): they plot as gaps
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(values, axis=0)
            std = np.nanstd(values, axis=0, ddof=1)
        sem = np.where(count > 1, std / np.sqrt(np.maximum(count, 1)), 0.0)
        color = f"C{index % 10}"
        ax.plot(steps, mean, color=color, label=label, linewidth=1.6)
        ax.fill_between(steps, mean - sem, mean + sem, color=color, alpha=0.2, linewidth=0)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def save_figure(fig, path: Path, *, svg: bool = False) -> list[Path]:
    """Save PNG (and SVG when asked) and close the figure; returns the written paths."""
    plt = import_pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = [path.with_suffix(".png")]
    fig.savefig(written[0], dpi=120, bbox_inches="tight")
    if svg:
        written.append(path.with_suffix(".svg"))
        fig.savefig(written[1], bbox_inches="tight")
    plt.close(fig)
    return written


def prob_bin_headers() -> list[str]:
    """Column headers of the p_old bins of `metric_names.PROB_BIN_EDGES`: `0–0.01`, `0.01–0.1`, ..."""
    edges = mn.PROB_BIN_EDGES
    return [f"{edges[i]:g}–{edges[i + 1]:g}" for i in range(len(mn.PROB_BIN_LABELS))]


def clip_cell(up: float | None, down: float | None) -> str:
    """A clip-fraction table's cell of one p_old bin, `upward/downward` (`0.012/0.034`); `–` where none was
    measured (None or nan)."""
    if up is None or not math.isfinite(up):
        return "–"
    return f"{mn.metric(mn.CLIP_FRAC_UP).format(up)}/{mn.metric(mn.CLIP_FRAC_DOWN).format(down)}"


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo; the platform's processor or machine name where that is absent."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, object]:
    """What a report should say about where its numbers were measured."""
    import torch

    return {
        "platform": platform.platform(),
        "processor": f"{cpu_name()} ({os.cpu_count()} logical CPUs)",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def machine_text(machine: Mapping[str, object]) -> str:
    """A report's line on a `machine_info` record: `Machine: CPU, platform, torch version`."""
    return f"Machine: {machine.get('processor')}, {machine.get('platform')}, torch {machine.get('torch')}"
