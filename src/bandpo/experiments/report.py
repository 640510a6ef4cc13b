"""Report building blocks: mean ± spread over seeds, Markdown tables, and line plots with a spread band.

The spread everywhere is the standard error of the mean over seeds (sample std / sqrt(seeds)); with one seed it
is undefined and the table shows the mean alone. Paired comparisons (`paired_verdict`) call a difference a win
or a loss only when its 95% Student-t interval over seeds excludes 0 (`VERDICT_RULE`).
"""

from __future__ import annotations

import math
import os
import platform
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

from bandpo import metric_names as mn

__all__ = [
    "VERDICT_RULE",
    "format_mean_spread",
    "import_pyplot",
    "machine_info",
    "markdown_table",
    "mean_and_spread",
    "moving_average",
    "paired_verdict",
    "plot_curves",
    "prob_bin_headers",
    "save_figure",
    "t_critical_95",
]

# Two-sided 95% critical values of Student's t for 1..30 degrees of freedom, then 40, 60, 120 and infinity.
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip
_T95_LARGE = ((120, 1.980), (60, 2.000), (40, 2.021), (30, 2.042))

VERDICT_RULE = (
    "win / lose = the paired difference's 95% Student-t interval (n − 1 degrees of freedom over n seeds) "
    "excludes 0, i.e. |mean| > t·s.e., else tie; n/a with fewer than 2 paired seeds"
)


def mean_and_spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error over the finite values (nan, nan if none; spread nan with one value)."""
    finite = [float(value) for value in values if value is not None and math.isfinite(float(value))]
    if not finite:
        return math.nan, math.nan
    mean = sum(finite) / len(finite)
    if len(finite) < 2:
        return mean, math.nan
    variance = sum((value - mean) ** 2 for value in finite) / (len(finite) - 1)
    return mean, math.sqrt(variance / len(finite))


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


def t_critical_95(dof: int) -> float:
    """Two-sided 95% critical value of Student's t with `dof` degrees of freedom.

    Exact (3 decimals) for 1..30; above 30 the value of the largest tabulated dof not above it (40, 60, 120:
    slightly conservative in between), and 1.96 from 121 on, where the difference is below 0.02.
    """
    if dof < 1:
        raise ValueError(f"dof {dof}: Student's t needs at least 1 degree of freedom (2 paired seeds)")
    if dof <= len(_T95):
        return _T95[dof - 1]
    if dof > 120:
        return 1.96
    return next(value for limit, value in _T95_LARGE if dof >= limit)


def paired_verdict(values: Sequence[float], reference: Sequence[float], digits: int = 2) -> str:
    """`+0.47 ± 0.05 (win)`: the mean over seeds of value − reference (same seed) ± its standard error.

    win / lose where the two-sided 95% Student-t interval of the mean difference (n − 1 dof) excludes 0 and
    the difference does not round to 0 at `digits`, else tie (`VERDICT_RULE`); `n/a` with fewer than 2 seeds
    that have both values, where no spread and so no verdict exists.
    """
    diffs = [
        float(a) - float(b)
        for a, b in zip(values, reference, strict=True)
        if a is not None and b is not None and math.isfinite(float(a)) and math.isfinite(float(b))
    ]
    if len(diffs) < 2:
        return "n/a"
    mean, spread = mean_and_spread(diffs)
    word = "tie"
    shown = 0.5 * 10.0**-digits  # a difference that rounds to 0 at the shown precision is a tie
    if abs(mean) > t_critical_95(len(diffs) - 1) * spread and abs(mean) >= shown:
        word = "win" if mean > 0 else "lose"
    return f"{mean:+.{digits}f} ± {spread:.{digits}f} ({word})"


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


def prob_bin_headers() -> list[str]:
    """Column headers of the p_old bins of `metric_names.PROB_BIN_EDGES`: `0–0.01`, `0.01–0.1`, ..."""
    edges = mn.PROB_BIN_EDGES
    return [f"{edges[i]:g}–{edges[i + 1]:g}" for i in range(len(mn.PROB_BIN_LABELS))]


def _cpu_name() -> str:
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
        "processor": f"{_cpu_name()} ({os.cpu_count()} logical CPUs)",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
