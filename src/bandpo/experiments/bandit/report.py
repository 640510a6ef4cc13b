"""The bandit comparison's report.md and plots, from its results.json alone (`bandpo compare --task bandit`
and `--report-only`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from bandpo.experiments.bandit.results import LOCKED_THRESHOLD
from bandpo.experiments.report import (
    clip_cell,
    format_values,
    import_pyplot,
    machine_text,
    markdown_table,
    mean_and_spread,
    plot_curves,
    prob_bin_headers,
    save_figure,
)
from bandpo.experiments.stats import STATS_RULE, holm_verdicts, paired_difference
from bandpo.training._atomic import write_text_atomic

__all__ = ["headline_table", "scenario_tables", "verdict_tables", "write_bandit_report"]

ENTROPY_STEPS = (0, 10, 50)  # entropy columns of the table, plus the final step


def _steps(value: float, limit: int) -> str:
    return f">{limit}" if not math.isfinite(value) else f"{value:.0f}"


def scenario_tables(name: str, result: dict[str, object]) -> str:
    """The Markdown tables of one scenario (main figures, then clip fractions by p_old bin)."""
    scenario = result["scenario"]
    steps = int(scenario["steps"])
    entropy_steps = [step for step in ENTROPY_STEPS if step < steps] + [steps]
    headers = [
        "method",
        f"found (π_best ≥ {scenario['found_threshold']:g})",
        "median steps to find",
        "final E[R]",
        f"locked on wrong (π > {LOCKED_THRESHOLD:g})",
        "entropy @ " + "/".join(str(step) for step in entropy_steps),
        "wall s",
    ]
    rows = []
    for label, summary in result["methods"].items():
        entropy = summary["entropy"]
        entropy_means = [mean_and_spread([seed[step] for seed in entropy])[0] for step in entropy_steps]
        rows.append(
            [
                label,
                format_values(summary["found"], 2),
                _steps(summary["median_steps_to_find"], steps),
                format_values(summary["final_expected_reward"], 3),
                format_values(summary["locked_wrong"], 2),
                "/".join(f"{value:.2f}" for value in entropy_means),
                f"{summary['wall_time_s']:.1f}",
            ]
        )
    clip_rows = []
    for label, summary in result["methods"].items():
        pairs = zip(summary["clip_up_by_bin"], summary["clip_down_by_bin"], strict=True)
        clip_rows.append([label, *(clip_cell(up, down) for up, down in pairs)])
    first = next(iter(result["methods"].values()))
    first_label = next(iter(result["methods"]))
    clip_rows.append(
        [
            f"share of token-updates ({first_label})",
            *(f"{share:.3f}" for share in first["token_share_by_bin"]),
        ]
    )
    parts = [
        markdown_table(headers, rows),
        "",
        "Clip fraction by p_old bin, upward/downward (up: A > 0 and ratio > ratio_high; down: A < 0 and ratio "
        "< ratio_low), pooled over seeds, per token-update:",
        "",
        markdown_table(["method", *prob_bin_headers()], clip_rows),
    ]
    return "\n".join(parts)


def _labels(results: dict[str, object]) -> list[str]:
    """The methods of every scenario, in their first order."""
    return list(
        dict.fromkeys(label for result in results["scenarios"].values() for label in result["methods"])
    )


def headline_table(results: dict[str, object], key: str = "found", digits: int = 2) -> str:
    """Scenario x method table of one per-seed figure (mean ± standard error)."""
    labels = _labels(results)
    rows = []
    for name, result in results["scenarios"].items():
        row = [name]
        for label in labels:
            summary = result["methods"].get(label)
            row.append(format_values(summary[key], digits) if summary else "")
        rows.append(row)
    return markdown_table(["scenario", *labels], rows)


def verdict_tables(
    results: dict[str, object], reference: str, metrics: Sequence[tuple[str, int]]
) -> tuple[list[str], int]:
    """Scenario x method tables of the paired difference to `reference` (same seeds), one per (metric, digits),
    with the tests, signs and verdicts of `bandpo.experiments.stats`: one Holm family over every cell of every
    table. Returns (tables, family size)."""
    scenarios = results["scenarios"]
    labels = [label for label in _labels(results) if label != reference]
    cells = []  # (table, row, column, difference)
    for table, (key, _) in enumerate(metrics):
        for row, result in enumerate(scenarios.values()):
            base = result["methods"].get(reference)
            for column, label in enumerate(labels):
                summary = result["methods"].get(label)
                if summary and base:
                    cells.append((table, row, column, paired_difference(summary[key], base[key])))
    texts, family_size = holm_verdicts([cell[3] for cell in cells], [metrics[cell[0]][1] for cell in cells])
    grids = [[[name] + [""] * len(labels) for name in scenarios] for _ in metrics]
    for (table, row, column, _), text in zip(cells, texts, strict=True):
        grids[table][row][column + 1] = text
    headers = ["scenario", *(f"{label} − {reference}" for label in labels)]
    return [markdown_table(headers, grid) for grid in grids], family_size


def write_bandit_report(results: dict[str, object], output_dir: Path, *, svg: bool = False) -> Path:
    """report.md plus one PNG per scenario (found fraction, expected reward and entropy over steps)."""
    output_dir = Path(output_dir)
    seeds = results["seeds"]
    lines = [
        "# bandpo compare --task bandit",
        "",
        "Tabular softmax GRPO testbed (`bandpo.experiments.bandit`): independent logits per context, GRPO groups,",
        "several SGD minibatch updates per batch through `bandpo.losses.policy_loss`. Figures are the mean ± "
        f"standard error over {len(seeds)} seeds ({', '.join(map(str, seeds))}); each seed has its own contexts.",
        f"{machine_text(results['machine'])}; total wall time {results.get('wall_time_s', math.nan):.1f} s.",
        "",
        "## Fraction of contexts that found the best action",
        "",
        headline_table(results, "found", 2),
        "",
        "## Final expected reward E_π[mean]",
        "",
        headline_table(results, "final_expected_reward", 3),
    ]
    reference = next(iter(next(iter(results["scenarios"].values()))["methods"]), None)
    if reference is not None and len(next(iter(results["scenarios"].values()))["methods"]) > 1:
        tables, family_size = verdict_tables(results, reference, [("found", 2), ("final_expected_reward", 3)])
        lines += [
            "",
            f"## Against {reference}: paired differences over seeds",
            "",
            "Each seed runs every method on the same contexts with the same random numbers, so differences are "
            f"taken per seed: {STATS_RULE}. The family is every cell of both tables ({family_size} tested).",
            "",
            "Fraction found:",
            "",
            tables[0],
            "",
            "Final expected reward:",
            "",
            tables[1],
        ]
    plt = import_pyplot()
    for name, result in results["scenarios"].items():
        scenario = result["scenario"]
        lines += [
            "",
            f"## Scenario `{name}`",
            "",
            f"{scenario['description']}. K={scenario['num_actions']}, n={scenario['group_size']}, "
            f"{scenario['epochs']} epochs x {scenario['minibatches']} minibatches, SGD lr {scenario['lr']:g}, "
            f"{scenario['steps']} steps, {scenario['contexts']} contexts per seed, "
            f"{'Bernoulli' if scenario['bernoulli'] else 'deterministic'} rewards.",
            "",
        ]
        if len(result["methods"]) > 1:
            verdict = "yes" if result["all_methods_identical"] else "no"
            lines += [f"All methods followed bit-identical trajectories: **{verdict}**.", ""]
        lines += [scenario_tables(name, result), "", f"![{name}](bandit_{name}.png)"]
        fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
        steps = list(range(int(scenario["steps"]) + 1))
        for ax, key, title, ylabel in (
            (axes[0], "found_curve", "contexts that found the best action", "fraction found"),
            (axes[1], "expected_reward", "expected reward E_π[mean]", "E[R]"),
            (axes[2], "entropy", "policy entropy", "nats"),
        ):
            curves = {label: (steps, summary[key]) for label, summary in result["methods"].items()}
            plot_curves(ax, curves, title=title, ylabel=ylabel)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"bandit scenario '{name}' (mean ± s.e. over {len(seeds)} seeds)", y=1.02)
        save_figure(fig, output_dir / f"bandit_{name}.png", svg=svg)
    path = output_dir / "report.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path
