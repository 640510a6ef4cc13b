"""A sweep over one method parameter (`bandpo compare --sweep delta=0.02,0.05,0.1,0.2`): the arms it expands
to, and one figure of accuracy, diversity and entropy against the parameter.

Every arm whose method takes the parameter becomes one arm per value (`band` -> `band:delta=0.02`, ...); arms
whose method does not take it (e.g. `clip` for `delta`) stay as they are and are drawn as horizontal reference
lines.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bandpo import metric_names as mn
from bandpo.experiments.lm_results import SeedResult
from bandpo.experiments.methods_spec import MethodSpec, parse_method_spec
from bandpo.experiments.report import import_pyplot, mean_and_spread, save_figure

__all__ = ["SWEEP_PANELS", "expand_sweep", "parse_sweep", "plot_sweep"]

# (metric, title): accuracy, diversity, entropy
SWEEP_PANELS: tuple[tuple[str, str], ...] = (
    (mn.EVAL_MEAN_AT_K, "accuracy: mean@{k} (= pass@1)"),
    (mn.EVAL_PASS_AT_K, "pass@{k}"),
    (mn.EVAL_DISTINCT_CORRECT, "diversity: distinct correct answers / prompt"),
    (mn.EVAL_RARE_PASS_AT_K, "pass@{k}, prompts needing the rare strategy"),
    (mn.EVAL_ENTROPY, "final entropy (eval, nats/token)"),
)


def parse_sweep(text: str) -> tuple[str, list[Any]]:
    """`delta=0.02,0.05,0.1` -> ("delta", [0.02, 0.05, 0.1]); values parsed as in method specs."""
    key, sep, values = text.partition("=")
    if not sep or not key.strip() or not values.strip():
        raise ValueError(f"--sweep {text!r}: expected PARAM=V1,V2,... (e.g. delta=0.02,0.05,0.1,0.2)")
    parsed = [
        parse_method_spec(f"x:{key.strip()}={value.strip()}").params[key.strip()]
        for value in values.split(",")
    ]
    if len(set(map(repr, parsed))) != len(parsed):
        raise ValueError(f"--sweep {text!r}: a value is listed twice")
    return key.strip(), parsed


def expand_sweep(specs: Sequence[MethodSpec], param: str, values: Sequence[Any]) -> list[MethodSpec]:
    """One arm per value for every spec whose method takes `param`; the others unchanged."""
    from bandpo.methods import method_parameters

    expanded: list[MethodSpec] = []
    swept = False
    for spec in specs:
        if param not in method_parameters(spec.name):
            expanded.append(spec)
            continue
        if param in spec.params:
            raise ValueError(
                f"--methods {spec.label!r} sets {param}, which --sweep varies; drop it from the spec"
            )
        swept = True
        expanded += [MethodSpec(name=spec.name, params={**spec.params, param: value}) for value in values]
    if not swept:
        raise ValueError(f"--sweep {param}: none of --methods {[s.label for s in specs]} takes {param!r}")
    return expanded


def _series(results: Sequence[SeedResult], param: str, key: str) -> dict[str, dict[float, list[float]]]:
    """Swept arms: group name -> {parameter value: values over seeds}."""
    groups: dict[str, dict[float, list[float]]] = {}
    for result in results:
        if param not in result.given:
            continue
        rest = {name: value for name, value in result.given.items() if name != param}
        group = result.method + ("" if not rest else ":" + ",".join(f"{n}={v}" for n, v in rest.items()))
        groups.setdefault(group, {}).setdefault(float(result.given[param]), []).append(result.value(key))
    return groups


def plot_sweep(
    results: Sequence[SeedResult], param: str, output_dir: Path, *, k: int | None, svg: bool = False
) -> list[Path]:
    """sweep_<param>.png: one panel per metric of `SWEEP_PANELS` against the parameter (log scale), mean ± s.e.
    over seeds per swept method, and the arms that do not take the parameter as horizontal lines."""
    plt = import_pyplot()
    fig, axes = plt.subplots(1, len(SWEEP_PANELS), figsize=(4.2 * len(SWEEP_PANELS), 4.2))
    references: dict[str, list[SeedResult]] = {}
    for result in results:
        if param not in result.given:
            references.setdefault(result.label, []).append(result)
    for ax, (key, title) in zip(axes, SWEEP_PANELS, strict=True):
        series = _series(results, param, key)
        for index, (group, by_value) in enumerate(series.items()):
            xs = sorted(by_value)
            stats = [mean_and_spread(by_value[x]) for x in xs]
            means = [mean for mean, _ in stats]
            errors = [0.0 if not math.isfinite(spread) else spread for _, spread in stats]
            dodge = 1.0 + 0.04 * (index - (len(series) - 1) / 2)  # side by side, so error bars do not overlap
            ax.errorbar(
                [x * dodge for x in xs],
                means,
                yerr=errors,
                marker="o",
                capsize=3,
                color=f"C{index}",
                label=group,
            )
        for index, (label, runs) in enumerate(references.items()):
            mean, spread = mean_and_spread([run.value(key) for run in runs])
            if not math.isfinite(mean):
                continue
            color = f"C{(index + 5) % 10}"
            ax.axhline(mean, color=color, linestyle="--", linewidth=1.2, label=label)
            if math.isfinite(spread):
                ax.axhspan(mean - spread, mean + spread, color=color, alpha=0.12, linewidth=0)
        ax.set_xscale("log")
        values = sorted({float(r.given[param]) for r in results if param in r.given})
        ax.set_xticks(values, [f"{value:g}" for value in values])
        ax.minorticks_off()
        ax.set_xlabel(param)
        ax.set_title(title.format(k=k or "k"), fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"held-out evaluation after training against {param}: mean ± s.e. over seeds", y=1.02)
    fig.tight_layout()
    return save_figure(fig, Path(output_dir) / f"sweep_{param}.png", svg=svg)
