"""`bandpo compare --task bandit`: every method on every scenario (all seeds batched), then results.json and
the report."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from bandpo.experiments.arms import MethodSpec
from bandpo.experiments.bandit.report import write_bandit_report
from bandpo.experiments.bandit.results import RESULTS_FILE, summarize_run
from bandpo.experiments.bandit.scenarios import BanditScenario
from bandpo.experiments.bandit.simulation import BanditRun, run_bandit
from bandpo.experiments.report import format_values, machine_info
from bandpo.training._atomic import write_text_atomic

__all__ = ["run_bandit_compare"]

Progress = Callable[[str], None]


def run_bandit_compare(
    scenarios: Sequence[BanditScenario],
    methods: Sequence[MethodSpec],
    seeds: Sequence[int],
    output_dir: Path,
    *,
    progress: Progress | None = None,
    svg: bool = False,
) -> dict[str, object]:
    """Run every method on every scenario (all seeds batched), write results.json, report.md and plots."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results: dict[str, object] = {
        "task": "bandit",
        "seeds": [int(seed) for seed in seeds],
        "machine": machine_info(),
        "scenarios": {},
    }
    for scenario in scenarios:
        runs: dict[str, BanditRun] = {}
        summaries: dict[str, dict[str, object]] = {}
        for spec in methods:
            if progress:
                progress(
                    f"bandit {scenario.name}: {spec.label} ({len(seeds)} seeds x {scenario.contexts} contexts)"
                )
            runs[spec.label] = run_bandit(scenario, spec.build(), seeds)
            summaries[spec.label] = summarize_run(runs[spec.label], scenario)
            if progress:
                summary = summaries[spec.label]
                progress(
                    f"  found {format_values(summary['found'], 2)}, final E[R] "
                    f"{format_values(summary['final_expected_reward'], 3)}, {runs[spec.label].wall_time_s:.1f} s"
                )
        labels = list(runs)
        identical = all(
            torch.equal(runs[labels[0]].best_prob, runs[label].best_prob)
            and torch.equal(runs[labels[0]].entropy, runs[label].entropy)
            for label in labels[1:]
        )
        results["scenarios"][scenario.name] = {
            "scenario": scenario.to_dict(),
            "methods": summaries,
            "all_methods_identical": identical,
        }
    results["wall_time_s"] = time.perf_counter() - start
    write_text_atomic(output_dir / RESULTS_FILE, json.dumps(results, indent=1, allow_nan=True) + "\n")
    write_bandit_report(results, output_dir, svg=svg)
    return results
