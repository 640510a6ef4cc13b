"""The preregistered confirmatory test of a declared study (`studies`), computed from its per_seed.json files.

The cells, tests, family and decision rule are fixed in the study's declaration exactly as its
preregistration states them, so the verdict cannot drift with the report code: for the embedded study six
primary cells (band_upper − clip on final entropy and pass@16, band − clip on final entropy, on Countdown
and on reach), four secondary ones, both tests with Holm applied to each family, and "confirmed" only when
both tests reject. Every record must have been made with the study's settings and arms (`Study.check_records`:
the first difference is named), and the stopping rule is enforced: no verdict is computed before every task
has all its seeds complete (all arms).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from bandpo.experiments.lm_results import PER_SEED_FILE, SeedResult, read_per_seed
from bandpo.experiments.report import markdown_table
from bandpo.experiments.stats import ALPHA, PairedDifference, holm_adjust, paired_difference
from bandpo.experiments.studies import EMBEDDED_STUDY, Cell, Study

__all__ = [
    "ARMS",
    "PRIMARY",
    "REQUIRED_SEEDS",
    "SECONDARY",
    "Cell",
    "cell_differences",
    "complete_seeds",
    "confirmatory_report",
    "read_study",
]

# the embedded study's design, under the names this module had before studies were declared
ARMS = EMBEDDED_STUDY.arm_labels
PRIMARY = EMBEDDED_STUDY.primary
SECONDARY = EMBEDDED_STUDY.secondary
REQUIRED_SEEDS = len(EMBEDDED_STUDY.seeds["countdown"])


def complete_seeds(
    results: Sequence[SeedResult], arms: Sequence[str] = ARMS
) -> dict[int, dict[str, SeedResult]]:
    """Seeds with a finished run of every arm, each as {arm: result}."""
    by_seed: dict[int, dict[str, SeedResult]] = {}
    for result in results:
        if result.label in arms:
            by_seed.setdefault(result.seed, {})[result.label] = result
    return {seed: found for seed, found in sorted(by_seed.items()) if len(found) == len(arms)}


def cell_differences(cell: Cell, seeds: Mapping[int, Mapping[str, SeedResult]]) -> list[float]:
    """The per-seed differences arm − reference of one cell, in seed order."""
    return [
        arms[cell.arm].value(cell.metric) - arms[cell.reference].value(cell.metric) for arms in seeds.values()
    ]


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


def read_study(
    study: Study, folders: Mapping[str, Path], *, stopping_rule: bool = True
) -> tuple[dict[str, dict[int, dict[str, SeedResult]]], dict[str, Path]]:
    """({task: {seed: {arm: result}}}, {task: per_seed.json path}) of a study's folders, every record checked
    against the study's declaration. With `stopping_rule`, only the study's seeds, and refused unless every
    one of them is complete; without, every complete seed (a pilot's or an exploratory comparison's).

    Raises:
        ValueError: a task missing, a record made with other settings (the first difference named), too few
            complete seeds, or a seed whose arms trained on different CPU models.
    """
    seeds_by_task, sources = {}, {}
    for task in study.tasks:
        if task not in folders:
            raise ValueError(
                f"the study {study.name!r} needs the {task} folder (per_seed.json of {', '.join(study.arm_labels)})"
            )
        path = Path(folders[task]) / PER_SEED_FILE
        results, header = read_per_seed(path)
        if header.get("task") != task:
            raise ValueError(f"{path} holds task {header.get('task')!r}, not {task!r}")
        study.check_records(str(path), task, header, results)
        complete = complete_seeds(results, study.arm_labels)
        if stopping_rule:
            required = study.seeds[task]
            seeds = {seed: arms for seed, arms in complete.items() if seed in required}
            if len(seeds) < len(required):
                raise ValueError(
                    f"{path}: {len(seeds)} of {len(required)} seeds ({required.start}-{required.stop - 1}) have all "
                    f"of {', '.join(study.arm_labels)}; the preregistered stopping rule computes no verdict "
                    "before every seed is in"
                )
        else:
            seeds = complete
        split = [s for s, arms in seeds.items() if len({r.machine for r in arms.values() if r.machine}) > 1]
        if split:
            raise ValueError(
                f"{path}: seeds {split} have arms trained on different CPU models; the preregistration reruns such "
                "a seed, all its arms, on one"
            )
        seeds_by_task[task] = seeds
        sources[task] = path
    return seeds_by_task, sources


def confirmatory_report(folders: Mapping[str, Path], *, study: Study = EMBEDDED_STUDY) -> str:
    """The preregistered analysis of `study` as Markdown, from `{task: folder holding per_seed.json}`.

    Raises:
        ValueError: a study that is only a plan (not preregistered), or what `read_study` refuses.
    """
    if study.preregistered is None or not study.primary:
        raise ValueError(
            f"the study {study.name!r} is a plan, not a preregistration: its cells and n are fixed (in studies.py "
            "and docs/experiments.md) before its first confirmatory run, and no verdict is computed before that"
        )
    seeds_by_task, sources = read_study(study, folders)
    fresh = {
        task: {seed: arms for seed, arms in seeds.items() if seed in study.fresh_seeds.get(task, ())}
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
        f"## Primary family ({len(study.primary)} cells)",
        "",
        _family_table(study.primary, seeds_by_task),
        "",
        f"## Secondary family ({len(study.secondary)} cells)",
        "",
        _family_table(study.secondary, seeds_by_task),
        "",
    ]
    if any(study.fresh_seeds.get(task) for task in study.tasks):
        lines += [
            "## Sensitivity analysis (prespecified, not confirmatory): new seeds only",
            "",
            "The reused seeds are the data that suggested the hypotheses; the same primary cells on the others:",
            "",
            _family_table(study.primary, fresh),
            "",
        ]
    return "\n".join(lines)
