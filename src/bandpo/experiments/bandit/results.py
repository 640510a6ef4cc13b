"""A bandit comparison's results.json: each method's per-seed figures (`summarize_run`), and the file read
back and checked before a report is built from it (`read_bandit_results`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from bandpo.experiments.bandit.scenarios import BanditScenario
from bandpo.experiments.bandit.simulation import BanditRun

__all__ = ["LOCKED_THRESHOLD", "RESULTS_FILE", "SUMMARY_KEYS", "read_bandit_results", "summarize_run"]

RESULTS_FILE = "results.json"
LOCKED_THRESHOLD = 0.9  # a context is "locked on a wrong action" when another action ends above this


def summarize_run(run: BanditRun, scenario: BanditScenario) -> dict[str, object]:
    """JSON-serialisable per-seed figures and curves of one method on one scenario."""
    steps_to_find = run.steps_to_find(scenario.found_threshold)  # (S, C)
    found = torch.isfinite(steps_to_find)  # (S, C)
    first = steps_to_find.flatten()
    median_steps = (
        float(first.median()) if first.numel() else math.nan
    )  # lower median; inf if half never found
    found_curve = torch.stack(
        [(steps_to_find <= step).to(torch.float64).mean(-1) for step in range(run.steps + 1)], dim=1
    )  # (S, steps + 1) fraction of contexts found by each step
    tokens = run.tokens_by_bin.sum(0)  # (bins,)

    def pooled(fraction: torch.Tensor) -> list[float | None]:
        counts = torch.nan_to_num(fraction) * run.tokens_by_bin  # (S, bins)
        values = counts.sum(0) / tokens.clamp(min=1.0)
        return [float(value) if total > 0 else None for value, total in zip(values, tokens, strict=True)]

    return {
        "seeds": list(run.seeds),
        "found": found.to(torch.float64).mean(-1).tolist(),  # (S,)
        "median_steps_to_find": median_steps,
        "mean_steps_to_find_if_found": float(first[torch.isfinite(first)].mean()) if found.any() else None,
        "final_expected_reward": run.expected_reward[-1].tolist(),  # (S,)
        "locked_wrong": (run.final_max_other > LOCKED_THRESHOLD).to(torch.float64).mean(-1).tolist(),
        "entropy": run.entropy.T.tolist(),  # (S, steps + 1)
        "expected_reward": run.expected_reward.T.tolist(),  # (S, steps + 1)
        "found_curve": found_curve.tolist(),  # (S, steps + 1)
        "clip_up_by_bin": pooled(run.clip_up_by_bin),
        "clip_down_by_bin": pooled(run.clip_down_by_bin),
        "token_share_by_bin": (tokens / tokens.sum().clamp(min=1.0)).tolist(),
        "wall_time_s": run.wall_time_s,
    }


# what the report reads of each method's summary (`summarize_run`)
SUMMARY_KEYS = (
    "found",
    "final_expected_reward",
    "locked_wrong",
    "median_steps_to_find",
    "entropy",
    "found_curve",
    "expected_reward",
    "clip_up_by_bin",
    "clip_down_by_bin",
    "wall_time_s",
)


def read_bandit_results(path: Path) -> dict[str, object]:
    """A bandit comparison's results.json, checked before a report is built from it: a file of another kind
    (a benchmark's results.json, a truncated write) is named with what is wrong, not met as a KeyError."""
    path = Path(path)
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(results, dict) or results.get("task") != "bandit":
        found = results.get("task") if isinstance(results, dict) else type(results).__name__
        raise ValueError(
            f"{path}: not the results.json of `bandpo compare --task bandit` (task {found!r}, expected 'bandit')"
        )
    seeds, scenarios = results.get("seeds"), results.get("scenarios")
    if not isinstance(seeds, list) or not seeds or not all(isinstance(seed, int) for seed in seeds):
        raise ValueError(f"{path}: 'seeds' must be a non-empty list of integers, got {seeds!r}")
    if not isinstance(scenarios, dict) or not scenarios:
        raise ValueError(f"{path}: 'scenarios' must be a non-empty object of scenario results")
    for name, result in scenarios.items():
        methods = result.get("methods") if isinstance(result, dict) else None
        if (
            not isinstance(methods, dict)
            or not methods
            or not isinstance(result.get("scenario"), dict)
            or "all_methods_identical" not in result
        ):
            raise ValueError(
                f"{path}: scenario {name!r} needs its 'scenario' settings, 'methods' results and "
                "'all_methods_identical'"
            )
        for label, summary in methods.items():
            missing = [key for key in SUMMARY_KEYS if not isinstance(summary, dict) or key not in summary]
            if missing:
                raise ValueError(f"{path}: scenario {name!r}, method {label!r} lacks {', '.join(missing)}")
            found = summary["found"]
            if not isinstance(found, list) or len(found) != len(seeds):
                raise ValueError(
                    f"{path}: scenario {name!r}, method {label!r}: 'found' must hold one value per seed "
                    f"({len(seeds)}), got {found!r}"
                )
    return results
