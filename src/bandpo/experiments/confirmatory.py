"""The preregistered confirmatory test of docs/experiments.md, computed from the two tasks' per_seed.json.

The cells, tests, family and decision rule are fixed here exactly as the preregistration states them, so the
verdict cannot drift with the report code: six primary cells (band_upper − clip on final entropy and pass@16,
band − clip on final entropy, on Countdown and on reach), four secondary ones, both tests with Holm applied to
each family, and "confirmed" only when both tests reject. The stopping rule is enforced: no verdict is computed
before every task has its 24 complete seeds (all three arms).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bandpo import metric_names as mn
from bandpo.experiments.lm_results import PER_SEED_FILE, SeedResult, read_per_seed
from bandpo.experiments.report import markdown_table
from bandpo.experiments.stats import ALPHA, PairedDifference, holm_adjust, paired_difference

__all__ = ["ARMS", "PRIMARY", "REQUIRED_SEEDS", "SECONDARY", "Cell", "complete_seeds", "confirmatory_report"]

ARMS = ("clip", "band", "band_upper")
REQUIRED_SEEDS = 24
FRESH_SEEDS = {"countdown": range(8, 24), "reach": range(4, 24)}  # the sensitivity analysis: new seeds only


@dataclass(frozen=True)
class Cell:
    name: str
    task: str
    arm: str
    reference: str
    metric: str

    @property
    def title(self) -> str:
        return f"{self.task}: {self.arm} − {self.reference}, {self.metric.removeprefix('eval/')}"


PRIMARY = (
    Cell("P1", "countdown", "band_upper", "clip", mn.EVAL_ENTROPY),
    Cell("P2", "countdown", "band_upper", "clip", mn.EVAL_PASS_AT_K),
    Cell("P3", "countdown", "band", "clip", mn.EVAL_ENTROPY),
    Cell("P4", "reach", "band_upper", "clip", mn.EVAL_ENTROPY),
    Cell("P5", "reach", "band_upper", "clip", mn.EVAL_PASS_AT_K),
    Cell("P6", "reach", "band", "clip", mn.EVAL_ENTROPY),
)
SECONDARY = (
    Cell("S1", "countdown", "band_upper", "band", mn.EVAL_ENTROPY),
    Cell("S2", "reach", "band_upper", "band", mn.EVAL_ENTROPY),
    Cell("S3", "countdown", "band_upper", "clip", mn.EVAL_DISTINCT_CORRECT),
    Cell("S4", "reach", "band_upper", "clip", mn.EVAL_DISTINCT_CORRECT),
)


def complete_seeds(results: Sequence[SeedResult]) -> dict[int, dict[str, SeedResult]]:
    """Seeds with a finished run of every arm, each as {arm: result}."""
    by_seed: dict[int, dict[str, SeedResult]] = {}
    for result in results:
        if result.label in ARMS:
            by_seed.setdefault(result.seed, {})[result.label] = result
    return {seed: arms for seed, arms in sorted(by_seed.items()) if len(arms) == len(ARMS)}


def _difference(cell: Cell, seeds: Mapping[int, Mapping[str, SeedResult]]) -> PairedDifference:
    values = [arms[cell.arm].value(cell.metric) for arms in seeds.values()]
    reference = [arms[cell.reference].value(cell.metric) for arms in seeds.values()]
    return paired_difference(values, reference)


def _decision(adjusted_t: float, adjusted_exact: float) -> str:
    rejects = [adjusted_t < ALPHA, adjusted_exact < ALPHA]
    if all(rejects):
        return "**confirmed**"
    return "tests disagree: not confirmed" if any(rejects) else "not confirmed"


def _family_table(
    cells: Sequence[Cell], seeds_by_task: Mapping[str, Mapping[int, Mapping[str, SeedResult]]]
) -> str:
    differences = [_difference(cell, seeds_by_task[cell.task]) for cell in cells]
    if any(not d.testable for d in differences):
        bad = [cell.name for cell, d in zip(cells, differences, strict=True) if not d.testable]
        raise ValueError(
            f"cells {bad} have no test (fewer than 2 seeds or no spread); the family cannot be computed"
        )
    adjusted_t = holm_adjust([d.p for d in differences])
    adjusted_exact = holm_adjust([d.p_exact for d in differences])
    rows = []
    for cell, d, p_t, p_exact in zip(cells, differences, adjusted_t, adjusted_exact, strict=True):
        decision = _decision(p_t, p_exact)
        if decision == "**confirmed**":
            decision += " (arm higher)" if d.mean > 0 else " (arm lower)"
        rows.append(
            [
                cell.name,
                cell.title,
                str(d.n),
                f"{d.mean:+.4f} [{d.low:+.4f}, {d.high:+.4f}]",
                d.sign_text,
                f"{d.p:.4f} / {p_t:.4f}",
                f"{d.p_exact:.4f} / {p_exact:.4f}",
                decision,
            ]
        )
    headers = [
        "cell",
        "difference",
        "n",
        "mean [95% CI]",
        "seeds +/−",
        "paired t p / Holm",
        "Wilcoxon p / Holm",
        "decision",
    ]
    return markdown_table(headers, rows)


def confirmatory_report(folders: Mapping[str, Path], *, required: int = REQUIRED_SEEDS) -> str:
    """The preregistered analysis as Markdown, from `{task: folder holding per_seed.json}`.

    Raises:
        ValueError: a task missing, or with fewer than `required` complete seeds (the stopping rule: no verdict
            before every seed is in).
    """
    seeds_by_task, sources = {}, {}
    for task in ("countdown", "reach"):
        if task not in folders:
            raise ValueError(
                f"the confirmatory test needs the {task} folder (per_seed.json of clip, band, band_upper)"
            )
        path = Path(folders[task]) / PER_SEED_FILE
        results, header = read_per_seed(path)
        if header.get("task") != task:
            raise ValueError(f"{path} holds task {header.get('task')!r}, not {task!r}")
        seeds = {seed: arms for seed, arms in complete_seeds(results).items() if seed < required}
        if len(seeds) < required:
            raise ValueError(
                f"{path}: {len(seeds)} of {required} seeds (0-{required - 1}) have all of {', '.join(ARMS)}; the "
                "preregistered stopping rule computes no verdict before every seed is in"
            )
        split = [s for s, arms in seeds.items() if len({r.machine for r in arms.values() if r.machine}) > 1]
        if split:
            raise ValueError(
                f"{path}: seeds {split} have arms trained on different CPU models; the preregistration reruns such "
                "a seed, all three arms, on one"
            )
        seeds_by_task[task] = seeds
        sources[task] = path
    fresh = {
        task: {seed: arms for seed, arms in seeds.items() if seed in FRESH_SEEDS[task]}
        for task, seeds in seeds_by_task.items()
    }
    lines = [
        "# Preregistered confirmatory test",
        "",
        "Hypotheses, tests, family and decision rule as committed in docs/experiments.md before the runs. Each "
        "cell: the paired difference over seeds (same seed, same starting policy and prompts), its exact 95% "
        "Student-t interval, the per-seed signs, the two-sided paired t and exact Wilcoxon signed-rank p-values "
        "(raw / Holm over the family). Confirmed = both Holm-adjusted p below 0.05.",
        "",
        *(f"- {task}: `{path}`, seeds {sorted(seeds_by_task[task])}" for task, path in sources.items()),
        "",
        "## Primary family (6 cells)",
        "",
        _family_table(PRIMARY, seeds_by_task),
        "",
        "## Secondary family (4 cells)",
        "",
        _family_table(SECONDARY, seeds_by_task),
        "",
        "## Sensitivity analysis (prespecified, not confirmatory): new seeds only",
        "",
        "The reused seeds are the data that suggested the hypotheses; the same primary cells on the others:",
        "",
        _family_table(PRIMARY, fresh),
        "",
    ]
    return "\n".join(lines)
