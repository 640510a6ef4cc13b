"""Finished runs carried over from another comparison's per_seed.json (`bandpo compare --reuse FILE`).

A study larger than one sitting, or one that adds seeds to a committed comparison, needs the runs already
finished elsewhere without their run directories (which are never committed). A per_seed.json record stands
for a planned run when its arm (label, method, given parameters) and seed are the run's, and the file's
shared settings are the plan's: the task, the budget and every training field except the ones an arm or a
seed sets. A record that matches the arm and seed but not the settings is refused with the field named:
silently mixing budgets would corrupt the comparison.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bandpo.experiments.lm_plan import PlannedRun, comparable, effective
from bandpo.experiments.lm_results import SeedResult, read_per_seed
from bandpo.experiments.methods_spec import LOSS_PARAMS
from bandpo.methods import list_methods, method_parameters

__all__ = ["reused_results"]

ARM_FIELDS = frozenset({"method", "seed", *LOSS_PARAMS})  # besides every method's parameters


def _arm_fields() -> frozenset[str]:
    return ARM_FIELDS | {name for method in list_methods() for name in method_parameters(method)}


def _same_number(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _settings_difference(stored: dict[str, Any], planned: dict[str, Any]) -> list[str]:
    """Fields both configs hold with different values, arm and seed fields left out (`lm_plan.is_done`'s rule:
    a field the older record lacks is not compared)."""
    skip = _arm_fields()
    return sorted(
        key
        for key in planned
        if key not in skip and key in stored and not _same_number(stored[key], planned[key])
    )


def _given(value: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(value, default=str))  # inf and floats compare as they were written


def reused_results(
    paths: Sequence[Path], runs: Sequence[PlannedRun], configs: Sequence[Any]
) -> dict[str, SeedResult]:
    """The planned runs (by `run.name`) that a record of one of `paths` stands for, with its `source` and
    `machine` set; the first file that has a run wins.

    Raises:
        ValueError: a file that cannot be read as per_seed.json, or a record of a planned arm and seed whose
            file was made with other settings (the file and the field named).
    """
    found: dict[str, SeedResult] = {}
    for path in paths:
        results, header = read_per_seed(Path(path))
        stored = effective(header.get("config") or {})
        machine = (header.get("machine") or {}).get("processor")
        by_arm = {
            (r.label, r.method, json.dumps(_given(r.given), sort_keys=True), r.seed): r for r in results
        }
        for run, config in zip(runs, configs, strict=True):
            if run.name in found:
                continue
            key = (
                run.spec.label,
                run.spec.name,
                json.dumps(_given(dict(run.spec.params)), sort_keys=True),
                run.seed,
            )
            record = by_arm.get(key)
            if record is None:
                continue
            planned = effective(comparable(config.to_dict()))
            different = _settings_difference(stored, planned)
            if different:
                details = ", ".join(f"{k}: {stored[k]!r} there, {planned[k]!r} now" for k in different[:4])
                raise ValueError(
                    f"--reuse {path}: its run {run.name} was trained with other settings ({details}); reuse only "
                    "runs of the same budget and task"
                )
            record.source = str(path)
            record.machine = record.machine or machine
            found[run.name] = record
    return found
