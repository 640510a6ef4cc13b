"""The plan of an LM comparison: which runs, with which `TrainConfig`, and which of them already finished.

Every run gets the same `TrainConfig` except the method and the seed (equal budget: steps, prompts, samples,
optimiser, evaluation). Seed k warms up (or loads the cached warm-up of) the embedded model with seed k, so
methods with the same seed start from the same policy and see the same prompts.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bandpo.experiments.methods_spec import LOSS_PARAMS, MethodSpec
from bandpo.training.config import RUN_INDEPENDENT_FIELDS

__all__ = [
    "DONE_MARKER",
    "FULL_SETTINGS",
    "QUICK_NOTE",
    "QUICK_SETTINGS",
    "WALL_LOG",
    "PlannedRun",
    "build_config",
    "check_resumable",
    "comparable",
    "effective",
    "is_done",
    "plan_record",
    "plan_runs",
    "quick_note",
]

DONE_MARKER = "compare_done.json"
WALL_LOG = "compare_wall.json"  # {"interrupted_calls_s": [...]}: time of calls that did not finish the run

# Shared settings of every run (on top of TrainConfig's "default" preset). The full comparison keeps the
# default budget (250 RL steps of 32 prompts x 8 samples); --quick trades steps and evaluation prompts for time.
FULL_SETTINGS: dict[str, Any] = {"eval_every": 50}
QUICK_SETTINGS: dict[str, Any] = {"max_steps": 60, "eval_prompts": 128, "eval_every": 30, "save_every": 20}


def quick_note(settings: dict[str, Any]) -> str:
    """The warning of a --quick comparison, with the budget it actually ran (``--steps`` changes it)."""
    steps = settings.get("max_steps", QUICK_SETTINGS["max_steps"])
    prompts = settings.get("eval_prompts", QUICK_SETTINGS["eval_prompts"])
    return (
        f"quick budget ({steps} RL steps, {prompts} evaluation prompts, 3 seeds by default): a smoke test of the "
        "pipeline, not evidence. At this budget the ranking of the methods is noise (it changes from one "
        "machine to another); compare methods with the default budget and 8 seeds."
    )


QUICK_NOTE = quick_note(QUICK_SETTINGS)


@dataclass(frozen=True)
class PlannedRun:
    spec: MethodSpec
    seed: int
    run_dir: Path

    @property
    def name(self) -> str:
        return f"{self.spec.label} seed {self.seed}"


def build_config(
    spec: MethodSpec, seed: int, run_dir: Path, settings: dict[str, Any], *, resume: bool = False
):
    """The `TrainConfig` of one run: the shared settings, the method and its parameters, the seed."""
    from bandpo.training import TrainConfig

    overlap = sorted(set(spec.params) & set(settings))
    if overlap:
        raise ValueError(f"method {spec.label!r} sets {overlap}, which the comparison fixes for every method")
    try:
        return TrainConfig.from_preset(
            "default",
            **settings,
            **spec.params,
            method=spec.name,
            seed=seed,
            output_dir=str(run_dir),
            resume=resume,
        )
    except ValueError as error:
        raise ValueError(f"method {spec.label!r}: {error}") from None


def plan_runs(specs: Sequence[MethodSpec], seeds: Sequence[int], output_dir: Path) -> list[PlannedRun]:
    """Seed-major order, so that an interrupted compare already has every method for the first seeds."""
    return [
        PlannedRun(spec=spec, seed=seed, run_dir=Path(output_dir) / "runs" / f"{spec.slug}-seed{seed}")
        for seed in seeds
        for spec in specs
    ]


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    """The fields that define what a run measures (not where it is written or how many threads it uses)."""
    return {key: value for key, value in config.items() if key not in RUN_INDEPENDENT_FIELDS}


def effective(config: dict[str, Any]) -> dict[str, Any]:
    """The settings a run actually uses: a field left to its automatic value (e.g. `max_completion_length`
    None) takes the value of the config's `resolved` entry, which older run records wrote as the field itself."""
    resolved = config.get("resolved") or {}
    values = {key: value for key, value in config.items() if key != "resolved"}
    for key, value in resolved.items():
        if key in values:
            values[key] = value
    return values


def is_done(run: PlannedRun, config: Any) -> bool:
    """Whether the run finished; an error if it finished with other settings.

    Settings are compared after resolving automatic values (`effective`). A field the finished run's record
    lacks (added to `TrainConfig` after it ran) is not compared: the run used the behaviour before that field
    existed, which the field's default keeps.
    """
    from bandpo.training.run_dir import read_json

    marker = run.run_dir / DONE_MARKER
    if not marker.exists() or not (run.run_dir / "summary.json").exists():
        return False
    again = (
        f"delete it and run the same compare again (the run {run.run_dir} resumes from its last checkpoint)"
    )
    record = read_json(marker, fix=again)
    read_json(run.run_dir / "summary.json", fix=f"{again}; or delete that run directory to train it anew")
    if not isinstance(record, dict) or not isinstance(record.get("config", {}), dict):
        raise ValueError(f"{marker} does not hold a finished run's record; {again}")
    _check_same_settings(run, "finished", effective(record.get("config", {})), config)
    return True


def check_resumable(run: PlannedRun, config: Any) -> None:
    """An interrupted run (config.json, no completion marker) resumes only with the settings it started with:
    checked here, before any run of the comparison starts, with the file and the fix named."""
    from bandpo.training.run_dir import read_json, to_json

    path = run.run_dir / "config.json"
    stored = read_json(
        path, fix=f"delete the run directory {run.run_dir} (that run is trained again from the start)"
    )
    if not isinstance(stored, dict):
        raise ValueError(f"{path} does not hold a run's settings; delete the run directory {run.run_dir}")
    # a field added after the run started: the run used its default, which `bandpo train --resume` assumes too
    defaults = json.loads(to_json(dataclasses.asdict(type(config)())))
    stored = {**{key: value for key, value in defaults.items() if key not in stored}, **stored}
    _check_same_settings(run, "interrupted", effective(comparable(stored)), config)


def _check_same_settings(run: PlannedRun, state: str, stored: dict[str, Any], config: Any) -> None:
    """A field the stored record lacks (added to `TrainConfig` after the run started) is not compared: the
    run used the behaviour before that field existed, which the field's default keeps."""
    planned = effective(comparable(config.to_dict()))
    different = sorted(key for key in planned if key in stored and stored[key] != planned[key])
    if different:
        details = ", ".join(
            f"{key}: {stored.get(key)!r} there, {planned[key]!r} now" for key in different[:4]
        )
        raise ValueError(
            f"{run.run_dir} holds an {state} run with other settings ({details}); run the compare with the "
            "settings it was started with, use another --output-dir, or remove that run directory"
            if state == "interrupted"
            else f"{run.run_dir} holds a {state} run with other settings ({details}); use another --output-dir "
            "or remove that run directory"
        )


def task_of(config: Any) -> str:
    """The task a config trains on: the embedded task's name, or the dataset file."""
    if getattr(config, "dataset", None):
        return f"dataset:{config.dataset}"
    return getattr(config, "task", "countdown")


def plan_record(
    specs: Sequence[MethodSpec],
    seeds: Sequence[int],
    configs: Sequence[Any],
    *,
    settings: dict[str, Any],
    quick: bool,
    jobs: int,
    sweep: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """compare.json: the task, every arm with all its method parameters resolved, the seeds, the settings."""
    arms = []
    for index, spec in enumerate(specs):
        method = spec.build()
        loss = {name: getattr(configs[index], name) for name in LOSS_PARAMS} if configs else {}
        fields = dataclasses.asdict(method) if dataclasses.is_dataclass(method) else {}
        arms.append(
            {
                "label": spec.label,
                "method": spec.name,
                "given": spec.params,  # what --methods set
                "params": method.params,  # get_method(method, **params) rebuilds the arm
                "resolved": {key: value for key, value in fields.items() if key != "name"} or method.params,
                "loss": loss,  # the loss settings an arm may set for itself (`methods_spec.LOSS_PARAMS`)
            }
        )
    record: dict[str, Any] = {
        "task": task_of(configs[0]) if configs else None,
        "methods": [spec.label for spec in specs],
        "arms": arms,
        "seeds": list(seeds),
        "settings": settings,
        "quick": quick,
        "jobs": jobs,
        "config": comparable(configs[0].to_dict()) if configs else {},
    }
    if quick:
        record["note"] = quick_note(settings)
    if sweep:
        record["sweep"] = sweep
    return record
