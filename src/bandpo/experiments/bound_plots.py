"""The paper's Fig. 1 and Fig. 2 for any divergences and radii: Band's ratio bounds beside the fixed-clip baselines.

Fig. 1 (`plot_bound_curves`): against the old probability p (log axis), (a) ratio_high and (b) ratio_low, (c) the
largest upward probability change p·(ratio_high − 1) and (d) the largest downward change p·(1 − ratio_low), for Band under each (divergence, delta) and for clip, Clip-Higher and DCPO. Band is drawn
without the training cap on the upper ratio (ratio_max = inf), so the curves show the exact interval; the
baselines are drawn with their own defaults (DCPO keeps its cap of 10).

Fig. 2 (`plot_clip_regions`): over the (p, ratio) plane, which tokens a method clips: above ratio_high the
gradient of a positive-advantage token is removed, below ratio_low that of a negative-advantage token; ratios
above 1/p are impossible (a probability cannot exceed 1).

Every curve comes from the `bandpo.methods` objects that training uses, so the figures show the code, not a copy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from bandpo.experiments.report import import_pyplot, save_figure
from bandpo.methods import method_defaults_table

__all__ = ["BASELINES", "band_label", "plot_bound_curves", "plot_bounds", "plot_clip_regions"]

_DEFAULTS = method_defaults_table()
BASELINES: tuple[tuple[str, str], ...] = (
    ("clip", f"clip {_DEFAULTS['clip']['eps_high']:g}"),
    (
        "clip_higher",
        f"Clip-Higher {_DEFAULTS['clip_higher']['eps_low']:g}/{_DEFAULTS['clip_higher']['eps_high']:g}",
    ),
    ("dcpo", "DCPO"),
)
"""(method, legend label) of the fixed baselines drawn beside Band; labels show the declared defaults."""
_BASELINE_STYLE = {"clip": ("k", "--"), "clip_higher": ("0.45", "-."), "dcpo": ("tab:brown", ":")}


def band_label(divergence: str, delta: float) -> str:
    return f"Band {divergence} δ={delta:g}"


def _bounds(method_name: str, p: torch.Tensor, **params: object) -> tuple[torch.Tensor, torch.Tensor]:
    from bandpo.methods import get_method

    low, high = get_method(method_name, **params)(p.log())
    return low, high


def _curves(divergences: Sequence[str], deltas: Sequence[float], p: torch.Tensor):
    """[(label, color, linestyle, low, high)] for every Band setting, then the baselines."""
    curves = []
    index = 0
    for divergence in divergences:
        for delta in deltas:
            low, high = _bounds("band", p, divergence=divergence, delta=float(delta), ratio_max=math.inf)
            curves.append((band_label(divergence, delta), f"C{index % 10}", "-", low, high))
            index += 1
    for name, label in BASELINES:
        color, style = _BASELINE_STYLE[name]
        low, high = _bounds(name, p)
        curves.append((label, color, style, low, high))
    return curves


def _check(divergences: Sequence[str], deltas: Sequence[float]) -> None:
    if not divergences:
        raise ValueError("--divergence needs at least one divergence name (e.g. kl tv chi2)")
    if not deltas:
        raise ValueError("--delta needs at least one radius (e.g. 0.05)")
    for delta in deltas:
        if not (isinstance(delta, int | float) and math.isfinite(delta) and delta > 0):
            raise ValueError(f"--delta {delta!r}: every radius must be a finite number > 0")
    from bandpo.band import get_divergence

    for divergence in divergences:
        get_divergence(divergence)  # raises with the list of valid names


def plot_bound_curves(
    divergences: Sequence[str],
    deltas: Sequence[float],
    output: Path,
    *,
    svg: bool = False,
    p_min: float = 1e-4,
    points: int = 600,
) -> list[Path]:
    """Fig. 1: ratio bounds and absolute probability margins against p (log x); returns the written files."""
    _check(divergences, deltas)
    plt = import_pyplot()
    p = torch.logspace(math.log10(p_min), math.log10(1.0 - 1e-4), points, dtype=torch.float64)
    curves = _curves(divergences, deltas, p)
    x = p.numpy()
    fig, axes = plt.subplots(2, 2, figsize=(14, 10))
    (ax_high, ax_low), (ax_up, ax_down) = axes
    ax_high.fill_between(x, 1.0 / x, 1e4, color="0.9", linewidth=0, label="impossible (ratio > 1/p)")
    for label, color, style, low, high in curves:
        kwargs = {"color": color, "linestyle": style, "linewidth": 1.7, "label": label}
        ax_high.plot(x, high.numpy(), **kwargs)
        ax_low.plot(x, low.numpy(), **kwargs)
        up = (p * (high - 1.0)).clamp(max=1.0 - p)  # a probability cannot rise above 1
        ax_up.plot(x, up.numpy(), **kwargs)
        ax_down.plot(x, (p * (1.0 - low)).numpy(), **kwargs)
    ax_high.set_yscale("log")
    top = max(float(curve[4].max()) for curve in curves)
    ax_high.set_ylim(0.9, max(20.0, min(1e4, top * 1.5)))
    ax_high.set_title("(a) upper ratio bound ratio_high")
    ax_high.set_ylabel("ratio π/π_old (log scale)")
    ax_low.set_ylim(-0.02, 1.02)
    ax_low.set_title("(b) lower ratio bound ratio_low")
    ax_low.set_ylabel("ratio π/π_old")
    ax_up.set_title("(c) largest rise of π: p·(ratio_high − 1), at most 1 − p")
    ax_down.set_title("(d) largest fall of π: p·(1 − ratio_low)")
    for ax in axes.flat:
        ax.set_xscale("log")
        ax.set_xlabel("old probability p")
        ax.grid(alpha=0.35, which="major")
        ax.grid(alpha=0.1, which="minor")
    ax_up.set_ylabel("Δπ (absolute probability)")
    ax_down.set_ylabel("Δπ (absolute probability)")
    ax_high.legend(fontsize=9, loc="upper right")
    fig.suptitle("Band ratio bounds beside clip, Clip-Higher and DCPO (Band drawn without the training cap)")
    fig.tight_layout()
    return save_figure(fig, output, svg=svg)


def plot_clip_regions(
    divergences: Sequence[str],
    deltas: Sequence[float],
    output: Path,
    *,
    svg: bool = False,
    p_min: float = 1e-4,
    ratio_range: tuple[float, float] = (1e-2, 1e3),
    resolution: int = 400,
) -> list[Path]:
    """Fig. 2: the clipping region over (p, ratio) as a categorical heat map, one panel per method."""
    _check(divergences, deltas)
    plt = import_pyplot()
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    power_of_ten = FuncFormatter(lambda value, _pos: f"$10^{{{value:g}}}$")

    p = torch.logspace(math.log10(p_min), math.log10(1.0 - 1e-4), resolution, dtype=torch.float64)
    ratio = torch.logspace(
        math.log10(ratio_range[0]), math.log10(ratio_range[1]), resolution, dtype=torch.float64
    )
    log_p, log_r = p.log10().tolist(), ratio.log10().tolist()
    curves = _curves(divergences, deltas, p)
    columns = min(3, len(curves))
    rows = math.ceil(len(curves) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 4.2 * rows), squeeze=False)
    colors = ["#f7f7f7", "#d6604d", "#4393c3", "#bdbdbd"]
    names = [
        "inside: gradient kept",
        "ratio > ratio_high: clipped when A > 0",
        "ratio < ratio_low: clipped when A < 0",
        "impossible: ratio > 1/p",
    ]
    cmap = ListedColormap(colors)
    r_grid = ratio.view(-1, 1)  # (R, 1) against p along columns
    for ax, (label, _color, _style, low, high) in zip(axes.flat, curves, strict=False):
        region = torch.zeros(len(ratio), len(p))  # (R, P)
        region[r_grid > high.view(1, -1)] = 1
        region[r_grid < low.view(1, -1)] = 2
        region[r_grid > 1.0 / p.view(1, -1)] = 3
        # a log-spaced grid drawn as an image in log10 coordinates: fast, and one raster in SVG too
        ax.imshow(
            region.numpy(),
            origin="lower",
            extent=(log_p[0], log_p[-1], log_r[0], log_r[-1]),
            aspect="auto",
            cmap=cmap,
            vmin=-0.5,
            vmax=3.5,
            interpolation="nearest",
        )
        ax.xaxis.set_major_formatter(power_of_ten)
        ax.yaxis.set_major_formatter(power_of_ten)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.axhline(0.0, color="k", linewidth=0.6)  # ratio = 1
        ax.set_title(label)
        ax.set_xlabel("old probability p")
        ax.set_ylabel("ratio π/π_old")
    for ax in list(axes.flat)[len(curves) :]:
        ax.axis("off")
    fig.legend(
        handles=[Patch(facecolor=c, edgecolor="0.5", label=n) for c, n in zip(colors, names, strict=True)],
        loc="lower center",
        ncol=4,
        fontsize=9,
    )
    fig.suptitle("Clipping region over (p, ratio)")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return save_figure(fig, output, svg=svg)


def plot_bounds(
    divergences: Sequence[str], deltas: Sequence[float], output_dir: Path, *, svg: bool = False
) -> list[Path]:
    """Both figures into `output_dir` (bounds_fig1.png, bounds_fig2.png); returns the written files."""
    output_dir = Path(output_dir)
    written = plot_bound_curves(divergences, deltas, output_dir / "bounds_fig1", svg=svg)
    written += plot_clip_regions(divergences, deltas, output_dir / "bounds_fig2", svg=svg)
    return written
