"""`bandpo compare` (language model): methods x seeds at equal budget through `bandpo.training.train`, then
report.md with the held-out evaluation (mean ± standard error over seeds), paired verdicts against clip and
plots over training steps.

Layout of `output_dir`::

    compare.json                the plan: task, arms (every method parameter resolved), seeds, shared settings
    per_seed.json               every run's final evaluation, wall time and clip fractions (small: commit it)
    runs/<method>-seed<k>/      one `bandpo train` run directory each (config, metrics.jsonl, summary.json, ...)
    runs/<method>-seed<k>/compare_done.json   written after the run finished: the completion marker, with the
                                              run's wall and CPU time summed over every call that trained it,
                                              each call's own times and code (`provenance.code_version`)
    runs/<method>-seed<k>/compare_wall.json   the calls that were interrupted (until it finishes)
    runs/<method>-seed<k>.call.json           a call is training the run (so a killed call is counted later)
    report.md, compare_*.png    the comparison (sweep_<param>.png for a sweep)
    compare.lock                flock-ed by the compare writing the folder (one at a time; its pid)
    before/seed<k>.json         the held-out evaluation before RL of seed k, computed by its first run and read
                                by the other arms (`training.shared_eval`)

This module plans the runs; `lm_workers` trains them; `lm_results` holds their records (completion markers,
per_seed.json, --reuse), `lm_report` writes report.md (with `stats`) and the sweep's plot; the arms come from
`arms` (method specs, --sweep).

Every run gets the same `TrainConfig` except the method and the seed (equal budget: steps, prompts, samples,
optimiser, evaluation). Seed k warms up (or loads the cached warm-up of) the embedded model with seed k, so
methods with the same seed start from the same policy and see the same prompts.

Resuming: a run with a completion marker is skipped (its settings must match the plan, else the command stops
and says so); a run directory without one is continued from its last checkpoint (`TrainConfig(resume=True)`);
the others start fresh. So an interrupted compare, run again with the same arguments, redoes nothing that
finished.

Training the pending runs (a process each, `jobs` at a time, under one progress bar, with each run's wall and
CPU time) is `lm_workers`' job.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bandpo.experiments.arms import LOSS_PARAMS, MethodSpec
from bandpo.experiments.lm_report import render_report
from bandpo.experiments.lm_results import (
    DONE_MARKER,
    FULL_SETTINGS,
    PER_SEED_FILE,
    QUICK_SETTINGS,
    PlannedRun,
    SeedResult,
    clip_logging,
    comparable,
    effective,
    load_run,
    quick_note,
    read_per_seed,
    reused_results,
    settings_difference,
    write_per_seed,
)
from bandpo.experiments.lm_workers import Progress, TrainFunction, execute
from bandpo.experiments.report import machine_info
from bandpo.training._atomic import write_text_atomic
from bandpo.training._lifetime import FolderLock
from bandpo.training.run_dir import read_json
from bandpo.training.tasks import DEFAULT_TASK

__all__ = [
    "build_config",
    "check_resumable",
    "is_done",
    "plan_record",
    "plan_runs",
    "report_only",
    "run_lm_compare",
    "write_lm_report",
]

COMPARE_LOCK = "compare.lock"  # flock-ed by the compare writing this folder; holds its pid
SHARED_BEFORE_DIR = "before"  # before/seed<k>.json: the evaluation before RL shared by the arms of seed k
PLAN_FILE = "compare.json"


# ---- the plan: which runs, with which settings, and which of them finished


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
            # the arms of a seed start from one policy: its evaluation before RL is computed once
            eval_before_file=str(Path(run_dir).parent.parent / SHARED_BEFORE_DIR / f"seed{seed}.json"),
        )
    except ValueError as error:
        raise ValueError(f"method {spec.label!r}: {error}") from None


def plan_runs(specs: Sequence[MethodSpec], seeds: Sequence[int], output_dir: Path) -> list[PlannedRun]:
    """Seed-major order, so that an interrupted compare already has every method for the first seeds."""
    return [PlannedRun.under(output_dir, spec, seed) for seed in seeds for spec in specs]


def is_done(run: PlannedRun, config: Any) -> bool:
    """Whether the run finished; an error if it finished with other settings (`settings_difference`)."""
    marker = run.run_dir / DONE_MARKER
    if not marker.exists() or not run.files.finished:
        return False
    again = (
        f"delete it and run the same compare again (the run {run.run_dir} resumes from its last checkpoint)"
    )
    record = read_json(marker, fix=again)
    run.files.read_summary(fix=f"{again}; or delete that run directory to train it anew")
    if not isinstance(record, dict) or not isinstance(record.get("config", {}), dict):
        raise ValueError(f"{marker} does not hold a finished run's record; {again}")
    details = settings_difference(effective(record.get("config", {})), config)
    if details:
        raise ValueError(
            f"{run.run_dir} holds a finished run with other settings ({details}); use another --output-dir or "
            "remove that run directory"
        )
    return True


def check_resumable(run: PlannedRun, config: Any) -> None:
    """An interrupted run (config.json, no completion marker) resumes only with the settings it started with:
    checked here, before any run of the comparison starts, with the file and the fix named."""
    # the comparison `bandpo train --resume` makes (a field added after the run started: its default)
    different = run.files.config_differences(config)
    details = ", ".join(f"{key}: {stored!r} there, {given!r} now" for key, stored, given in different[:4])
    if details:
        raise ValueError(
            f"{run.run_dir} holds an interrupted run with other settings ({details}); run the compare with the "
            "settings it was started with, use another --output-dir, or remove that run directory"
        )


def task_of(config: Any) -> str:
    """The task a config trains on: the embedded task's name, or the dataset file."""
    if getattr(config, "dataset", None):
        return f"dataset:{config.dataset}"
    return getattr(config, "task", DEFAULT_TASK)


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
                "loss": loss,  # the loss settings an arm may set for itself (`arms.LOSS_PARAMS`)
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


# ---- the comparison


def run_lm_compare(
    specs: Sequence[MethodSpec],
    seeds: Sequence[int],
    output_dir: Path,
    *,
    quick: bool = False,
    steps: int | None = None,
    model: str | None = None,
    dataset: str | None = None,
    task: str | None = None,
    progress: Progress | None = None,
    svg: bool = False,
    jobs: int = 1,
    train_fn: TrainFunction | None = None,
    extra_settings: dict[str, Any] | None = None,
    sweep: dict[str, Any] | None = None,
    reuse: Sequence[Path] = (),
    collect_only: bool = False,
) -> tuple[Path, str]:
    """Train every (method, seed) not finished yet, then write per_seed.json and report.md; returns (report
    path, main table).

    Args:
        task: an embedded task (`bandpo.training.tasks`), default countdown.
        jobs: runs trained at the same time, each in its own process (with `TrainConfig.num_threads` threads,
            1 by default); one progress bar covers the whole plan.
        train_fn: `train_fn(config, progress=...)`, a stand-in for training (tests), run in threads.
        sweep: `{"param": ..., "values": [...]}` when the arms are a sweep (adds its plot to the report).
        reuse: per_seed.json files whose finished runs stand for planned runs of the same arm, seed and
            settings (`lm_results.reused_results`): those are not trained, and their records go into this per_seed.json.
        collect_only: train nothing and write no report: only per_seed.json of the seeds whose every arm has
            finished, to carry a study into a later session (`--reuse`) without looking at its outcomes. Returns
            (per_seed.json path, ""). It reads finished runs only, so it may run beside the compare training
            the folder.
    """
    if jobs < 1:
        raise ValueError(f"--jobs {jobs}: must be >= 1")
    output_dir = Path(output_dir)
    settings = dict(QUICK_SETTINGS if quick else FULL_SETTINGS)
    for name, value in (("max_steps", steps), ("model", model), ("dataset", dataset), ("task", task)):
        if value is not None:
            settings[name] = value
    settings.update(extra_settings or {})
    runs = plan_runs(specs, seeds, output_dir)
    configs = [build_config(run.spec, run.seed, run.run_dir, settings) for run in runs]  # validate all first
    plan = plan_record(specs, seeds, configs, settings=settings, quick=quick, jobs=jobs, sweep=sweep)
    reused = reused_results(reuse, runs, configs) if reuse else {}
    start = time.perf_counter()
    # every check before the first write: a refused compare leaves no trace
    pending, _ = _pending(runs, configs, settings, None, reused)
    if collect_only:
        # whole seeds only: a seed's arms are compared with each other, so all of them train on one machine
        unfinished = {run.seed for _, run, _ in pending}
        complete = [run for run in runs if run.seed not in unfinished]
        if not complete:
            raise ValueError(f"--collect: no seed of {output_dir} has every arm finished yet")
        output_dir.mkdir(parents=True, exist_ok=True)
        path = write_lm_report(
            complete, output_dir, settings=settings, jobs=jobs, reused=reused, report=False, plan=plan
        )[0]
        if progress:
            seeds = sorted({run.seed for run in complete})
            progress(
                f"seeds {seeds} have every arm finished ({len(complete)} runs); wrote {path} (no report)"
            )
        return path, ""
    if progress and quick:
        progress(f"note: {quick_note(settings)}")
    output_dir.mkdir(parents=True, exist_ok=True)
    # one compare per output folder at a time (the lock dies with its holder); its runs lock themselves too
    with FolderLock(
        output_dir / COMPARE_LOCK,
        what=f"comparison {str(output_dir)!r}",
        fix="wait for that compare to end (or stop it), or choose another --output-dir",
    ):
        pending, steps_finished = _pending(runs, configs, settings, progress, reused)  # again, under the lock
        write_text_atomic(output_dir / PLAN_FILE, json.dumps(plan, indent=2, default=str) + "\n")
        if pending:
            execute(
                pending,
                len(runs),
                jobs=jobs,
                train_fn=train_fn,
                progress=progress,
                steps_finished=steps_finished,
            )
        if progress:
            progress(
                f"all {len(runs)} runs finished ({time.perf_counter() - start:.0f} s in this call); writing report"
            )
        return write_lm_report(runs, output_dir, svg=svg, settings=settings, jobs=jobs, reused=reused)


def _pending(
    runs: Sequence[PlannedRun],
    configs: Sequence[Any],
    settings: dict[str, Any],
    progress: Progress | None,
    reused: dict[str, SeedResult],
) -> tuple[list[tuple[int, PlannedRun, Any]], int]:
    """The runs still to train, as `(index in the plan, run, config)`, and the RL steps of those finished.

    A finished run is skipped (its settings must match the plan); an interrupted one (config.json, no
    completion marker) resumes when its settings match; each refusal names the run directory and the fix.
    """
    pending: list[tuple[int, PlannedRun, Any]] = []
    steps_finished = 0
    for index, (run, config) in enumerate(zip(runs, configs, strict=True), start=1):
        if is_done(run, config):
            steps_finished += config.max_steps
            if progress:
                progress(f"[{index}/{len(runs)}] {run.name}: finished earlier, skipped")
            continue
        if run.name in reused:
            if progress:
                progress(f"[{index}/{len(runs)}] {run.name}: reused from {reused[run.name].source}")
            continue
        if run.files.started:  # interrupted: continue from its last checkpoint
            check_resumable(run, config)
            config = build_config(run.spec, run.seed, run.run_dir, settings, resume=True)
        pending.append((index, run, config))
    return pending, steps_finished


def write_lm_report(
    runs: Sequence[PlannedRun],
    output_dir: Path,
    *,
    svg: bool = False,
    settings: dict[str, Any] | None = None,
    jobs: int | None = None,
    reused: dict[str, SeedResult] | None = None,
    report: bool = True,
    plan: dict[str, Any] | None = None,
) -> tuple[Path, str]:
    """Read the finished run directories (and the `reused` records of runs without one), write per_seed.json,
    report.md and the plots; returns (path, table). `report=False`: per_seed.json alone, (its path, "").
    `plan`: the plan record of these runs (default: the folder's compare.json)."""
    output_dir = Path(output_dir)
    reused = reused or {}
    results, records, missing, run_dirs = [], [], [], {}
    for run in runs:
        loaded = load_run(run)
        if loaded is None and run.name in reused:
            results.append(reused[run.name])
            continue
        if loaded is None:
            missing.append(run.name)
            continue
        results.append(loaded[0])
        records += loaded[1]
        run_dirs.setdefault(run.spec.label, []).append(run.run_dir)
    if not results:
        raise ValueError(f"no finished run under {output_dir / 'runs'}: nothing to report")
    plan_path = output_dir / PLAN_FILE
    if plan is None:
        plan = json.loads(plan_path.read_text()) if plan_path.exists() else {}
    first_run = next((run.files for run in runs if run.files.finished), None)
    first = {}
    if first_run is not None:
        fix = f"delete the run directory {first_run.path} and run the compare again"
        first = first_run.read_summary(fix=fix)
    header = {
        "task": plan.get("task") or DEFAULT_TASK,
        "arms": plan.get("arms"),
        "config": comparable(first.get("config") or plan.get("config") or {}),
        "settings": settings if settings is not None else plan.get("settings"),
        "quick": bool(plan.get("quick")),
        "sweep": plan.get("sweep"),
        "jobs": jobs,
        "machine": machine_info(),
        "clip_logging": clip_logging(records),
        "missing": missing,
    }
    write_per_seed(output_dir / PER_SEED_FILE, results, header)
    if not report:
        return output_dir / PER_SEED_FILE, ""
    return render_report(results, header, output_dir, run_dirs=run_dirs, svg=svg)


def report_only(output_dir: Path, *, svg: bool = False) -> tuple[Path, str]:
    """Rebuild report.md from `output_dir`/per_seed.json alone (plots of the training curves are kept, and redrawn
    only where the run directories are there)."""
    output_dir = Path(output_dir)
    results, header = read_per_seed(output_dir / PER_SEED_FILE)
    run_dirs: dict[str, list[Path]] | None = {}
    for result in results:
        run = PlannedRun.under(output_dir, MethodSpec(result.method, result.given), result.seed)
        if not run.files.metrics.exists():
            run_dirs = None
            break
        run_dirs.setdefault(result.label, []).append(run.run_dir)
    return render_report(results, header, output_dir, run_dirs=run_dirs, svg=svg)
