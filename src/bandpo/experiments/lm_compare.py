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

This module plans the runs and trains them; `lm_results` holds their records (completion markers,
per_seed.json, --reuse), `lm_report` writes report.md (with `stats`) and the sweep's plot; the arms come from
`arms` (method specs, --sweep).

Every run gets the same `TrainConfig` except the method and the seed (equal budget: steps, prompts, samples,
optimiser, evaluation). Seed k warms up (or loads the cached warm-up of) the embedded model with seed k, so
methods with the same seed start from the same policy and see the same prompts.

Resuming: a run with a completion marker is skipped (its settings must match the plan, else the command stops
and says so); a run directory without one is continued from its last checkpoint (`TrainConfig(resume=True)`);
the others start fresh. So an interrupted compare, run again with the same arguments, redoes nothing that
finished.

Each run trains in its own Python process (`python -m bandpo.experiments.lm_compare CONFIG_JSON`, started with
`subprocess`), watched by a thread of a `concurrent.futures.ThreadPoolExecutor`; a stand-in `train_fn` (tests)
runs in the thread itself. One progress bar counts RL steps over every run of the plan, read from the runs'
metrics.jsonl, so its rate and ETA cover the whole comparison. Each run's completion marker (`DONE_MARKER`) is
written as soon as it finishes, with its wall and CPU time summed over every call that trained it: a call that
stopped before the run finished (Ctrl-C, a failure) adds its times to the run's `WALL_LOG`, and one killed
outright (kill -9, a lost session) is added by the next call, from its start to the run's last write (its CPU
time unknown). A run's CPU time is its process's (and its reward workers'), read when the thread reaps it.
"""

from __future__ import annotations

import concurrent.futures as futures
import dataclasses
import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bandpo import metric_names as mn
from bandpo._atomic import write_text_atomic
from bandpo._lifetime import (
    PARENT_PID_VARIABLE,
    FolderLock,
    die_with_parent,
    stop_process_group,
    wait_with_usage,
    watch_parent,
)
from bandpo.experiments.arms import LOSS_PARAMS, MethodSpec
from bandpo.experiments.lm_report import render_report
from bandpo.experiments.lm_results import (
    DONE_MARKER,
    FULL_SETTINGS,
    OPEN_CALL_SUFFIX,
    PER_SEED_FILE,
    QUICK_SETTINGS,
    WALL_LOG,
    PlannedRun,
    SeedResult,
    call_records,
    clip_logging,
    comparable,
    effective,
    load_run,
    quick_note,
    read_per_seed,
    reused_results,
    settings_difference,
    training_records,
    write_per_seed,
)
from bandpo.experiments.provenance import code_version
from bandpo.experiments.report import machine_info
from bandpo.training.run_dir import RunDir, read_json

__all__ = [
    "RunFailed",
    "build_config",
    "check_resumable",
    "execute",
    "is_done",
    "last_step",
    "plan_record",
    "plan_runs",
    "report_only",
    "run_lm_compare",
    "write_lm_report",
]

Progress = Callable[[str], None]
TrainFunction = Callable[..., Any]
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
        "task": plan.get("task") or "countdown",
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


# ---- training the pending runs

POLL_S = 1.0  # seconds between progress-bar updates
STOP_GRACE_S = 10.0  # seconds a stopped run gets between SIGTERM and SIGKILL
CODE_REFRESH_S = 30.0  # a run's code record is at most this old when its process starts
WORKER_ERROR_PREFIX = "bandpo compare: run error:"  # a run's one-line error, on its last line


def last_step(run: PlannedRun) -> int:
    records = training_records(run.run_dir)
    return int(records[-1][mn.TRAIN_STEP]) if records else 0


def _open_call_path(run: PlannedRun) -> Path:
    """Beside the run directory (which `bandpo train` creates itself): the record of a call training the run."""
    return run.run_dir.with_name(run.run_dir.name + OPEN_CALL_SUFFIX)


def _open_call(run: PlannedRun, code: dict[str, Any]) -> None:
    """Note that this call starts training `run`, so that a call killed outright (kill -9, a lost session)
    still has its time counted by the next call (`close_killed_calls`)."""
    path = _open_call_path(run)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps({"started": time.time(), "code": code}) + "\n")


def _last_write(folder: Path) -> float | None:
    times = [path.stat().st_mtime for path in folder.rglob("*") if path.is_file()]
    return max(times) if times else None


def close_killed_calls(runs: Sequence[PlannedRun]) -> None:
    """Record the calls that were killed before they could record themselves: each counts from its start to
    the run directory's last write (a lower bound of its wall time; its CPU time is unknown)."""
    for run in runs:
        path = _open_call_path(run)
        if not path.exists():
            continue
        try:
            opened = json.loads(path.read_text())
            started = float(opened["started"])
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)
            continue
        last = _last_write(run.run_dir) if run.run_dir.exists() else None
        if last is not None:
            _record_interrupted_call(
                run, max(0.0, last - started), None, opened.get("code"), ended="killed (to its last write)"
            )
        path.unlink(missing_ok=True)


def _record_interrupted_call(
    run: PlannedRun, seconds: float, cpu: float | None, code: dict[str, Any] | None, *, ended: str = "stopped"
) -> None:
    """Add a call that stopped before the run finished, so the run's total wall and CPU time keep it."""
    _open_call_path(run).unlink(missing_ok=True)
    if not run.run_dir.exists():
        return  # nothing was started there
    call = {"wall_s": round(float(seconds), 3), "cpu_s": _rounded(cpu), "code": code, "ended": ended}
    calls = [*call_records(run), call]
    record = {"interrupted_calls_s": [c["wall_s"] for c in calls], "interrupted_calls": calls}
    write_text_atomic(run.run_dir / WALL_LOG, json.dumps(record) + "\n")


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(float(seconds), 3)


def _training_seconds(result: Any) -> float:
    """Training wall time of a finished run, without a warm-up it had to do first (shared by its seed)."""
    if isinstance(result, dict):
        wall, warmup = result.get("wall_time_s"), result.get("warmup")
    else:
        wall, warmup = getattr(result, "wall_time_s", None), getattr(result, "warmup", None)
    wall = math.nan if wall is None else float(wall)
    if isinstance(warmup, dict) and not warmup.get("from_cache", True):
        wall -= float(warmup.get("seconds", 0.0))
    return wall


def _write_done_marker(run: PlannedRun, config: Any, result: Any, code: dict[str, Any]) -> None:
    last_call = _training_seconds(result)
    cpu = result.get("cpu_time_s") if isinstance(result, dict) else None
    earlier = call_records(run)
    calls = [*earlier, {"wall_s": last_call, "cpu_s": _rounded(cpu), "code": code, "ended": "finished"}]
    known_cpu = [call["cpu_s"] for call in calls if call.get("cpu_s") is not None]
    from bandpo import __version__

    record = {
        "label": run.spec.label,
        "seed": run.seed,
        "config": comparable(config.to_dict()),
        "wall_time_s": sum(float(call["wall_s"]) for call in calls),  # every call that trained this run
        "wall_time_calls_s": [call["wall_s"] for call in calls],
        # CPU of the run's process and its reward workers (model load included), where measured
        "cpu_time_s": _rounded(sum(known_cpu)) if known_cpu else None,
        "calls": calls,
        "code": code,
        "bandpo_version": __version__,
        "machine": machine_info(),  # CPU training is deterministic on one machine, not across machines
    }
    write_text_atomic(run.run_dir / DONE_MARKER, json.dumps(record, indent=2, default=str) + "\n")
    _open_call_path(run).unlink(missing_ok=True)


class _CodeVersion:
    """`code_version`, read again when its last reading is older than `CODE_REFRESH_S` (a run takes minutes;
    reading git between two submits of one moment would delay the second for nothing)."""

    def __init__(self) -> None:
        self._read_at, self._code = -math.inf, {}

    def __call__(self) -> dict[str, Any]:
        if time.monotonic() - self._read_at > CODE_REFRESH_S:
            self._read_at, self._code = time.monotonic(), code_version()
        return self._code


class RunFailed(ValueError):
    """A run of the comparison failed; the message names the run, its error and whether a rerun helps."""


class _Subprocesses:
    """The training processes started by this call, each in its own process group, so that a stop ends them
    and everything they started (their reward workers).

    A child dies with this process however it ends: `stop` (on Ctrl-C, SIGTERM, a failure) terminates each
    group, and on Linux the kernel kills a child whose parent was killed with SIGKILL (parent-death signal,
    armed by the child at start, `bandpo._lifetime.die_with_parent`); elsewhere the child watches its parent.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, tuple[subprocess.Popen, threading.Event]] = {}
        self.stopping = False
        self.cpu_seconds: dict[str, float | None] = {}  # run directory -> CPU of its last process

    def train(self, config: Any) -> dict[str, Any]:
        """Train `config` in a fresh interpreter and wait for it; its summary.json and the process's CPU time
        (`cpu_seconds`, also kept when it fails) are the result."""
        command = [sys.executable, "-m", "bandpo.experiments.lm_compare", config.to_json()]
        env = {**os.environ, PARENT_PID_VARIABLE: str(os.getpid())}
        with self._lock:
            if self.stopping:
                raise RunFailed(f"run {config.output_dir}: compare stopped before it started")
            process = subprocess.Popen(
                command, env=env, start_new_session=True, stderr=subprocess.PIPE, text=True, errors="replace"
            )
            reaped = threading.Event()  # this thread reaps the child, so it keeps its resource usage
            self._running[config.output_dir] = (process, reaped)
        last_line = ""
        try:
            for line in process.stderr:  # passed on as it comes; a failed run's error is said once, below
                if not line.startswith(WORKER_ERROR_PREFIX):
                    sys.stderr.write(line)
                last_line = line.strip() or last_line
            code, self.cpu_seconds[config.output_dir] = wait_with_usage(process)
        finally:
            reaped.set()
            process.stderr.close()
            with self._lock:
                self._running.pop(config.output_dir, None)
        if code != 0:
            raise RunFailed(_failure_message(config.output_dir, code, last_line, stopping=self.stopping))
        summary = RunDir.for_config(config).read_summary(fix=_DELETE_RUN.format(config.output_dir))
        return {
            "wall_time_s": summary.get("wall_time_s"),
            "warmup": summary.get("warmup"),
            "cpu_time_s": self.cpu_seconds.get(config.output_dir),
        }

    def stop(self) -> None:
        """End every running child and its process group (SIGTERM, then SIGKILL after a grace period); the
        runs keep their last checkpoints and resume from them later."""
        with self._lock:
            self.stopping = True
            running = list(self._running.values())
        for process, reaped in running:
            stop_process_group(process, grace_s=STOP_GRACE_S, reaped=reaped)


_DELETE_RUN = "delete the run directory {} and run the same compare again (that run is trained again)"


def _failure_message(run_dir: str, code: int, last_line: str, *, stopping: bool) -> str:
    """Why a run's process failed, and whether running the compare again helps."""
    if code < 0 or stopping:
        how = f"killed by signal {-code}" if code < 0 else f"stopped (exit status {code})"
        return f"run {run_dir} was {how}; run the same compare again to resume it from its last checkpoint"
    if code == 2 and last_line.startswith(WORKER_ERROR_PREFIX):
        cause = last_line[len(WORKER_ERROR_PREFIX) :].strip()
        return f"run {run_dir} failed: {cause} (rerunning the same compare fails the same way until that is fixed)"
    return (
        f"run {run_dir} failed (exit status {code}; its traceback is printed above); this is a bug or a problem "
        "of the environment: running the same compare again resumes it from its last checkpoint"
    )


def _bar(total: int, initial: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    interactive = sys.stderr.isatty()
    return tqdm(
        total=total,
        initial=initial,
        unit="step",
        desc="compare (RL steps, all runs)",
        dynamic_ncols=True,
        file=sys.stderr,
        mininterval=0.5 if interactive else 60.0,  # a log file gets a line a minute
    )


def execute(
    pending: list[tuple[int, PlannedRun, Any]],
    total: int,
    *,
    jobs: int,
    train_fn: TrainFunction | None,
    progress: Progress | None,
    steps_finished: int = 0,
) -> None:
    """Train the pending runs `(index in the plan, run, config)`, `jobs` at a time.

    Two runs of the same seed do not start together while neither has finished: with the embedded model, the
    first one warms up (and caches) the seed's starting policy, which the others then load.

    Args:
        total: runs in the whole plan (for the `[i/total]` lines).
        steps_finished: RL steps of the plan's runs that finished before this call (progress bar).
    """
    before = {run.run_dir: last_step(run) for _, run, _ in pending}  # resumed runs start at their checkpoint
    steps_total = steps_finished + sum(config.max_steps for _, _, config in pending)
    finished_steps = steps_finished + sum(before.values())
    bar = _bar(steps_total, finished_steps, progress is not None and steps_total > 0)

    def say(message: str) -> None:
        if progress is None:
            return
        if bar is None:
            progress(message)
            return
        with bar.external_write_mode(file=sys.stderr):
            progress(message)

    close_killed_calls([run for _, run, _ in pending])
    code_now = _CodeVersion()
    processes = _Subprocesses()
    waiting = list(pending)
    active: dict[futures.Future, tuple[int, PlannedRun, Any, float, dict[str, Any]]] = {}
    finished_seeds: set[int] = set()
    executor = futures.ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="bandpo-compare")
    try:
        while waiting or active:
            while len(active) < jobs:
                busy = {run.seed for _, run, _, _, _ in active.values()}
                choice = next(
                    (item for item in waiting if item[1].seed in finished_seeds or item[1].seed not in busy),
                    None,
                )
                if choice is None:
                    break
                waiting.remove(choice)
                index, run, config = choice
                verb = "resuming" if config.resume else "training"
                say(f"[{index}/{total}] {run.name}: {verb} ({config.max_steps} steps) in {run.run_dir}")
                code = code_now()  # what the run's process imports as it starts
                _open_call(run, code)
                started = time.perf_counter()  # before the submit: the run may start before it returns
                if train_fn is None:
                    future = executor.submit(processes.train, config)
                else:
                    future = executor.submit(train_fn, config, progress=False)
                active[future] = (index, run, config, started, code)
            done, _ = futures.wait(list(active), timeout=POLL_S, return_when=futures.FIRST_COMPLETED)
            for future in done:
                index, run, config, started, code = active.pop(future)
                try:
                    result = future.result()
                except BaseException:  # failed: keep the time this call spent on the run
                    cpu = processes.cpu_seconds.get(config.output_dir)
                    _record_interrupted_call(run, time.perf_counter() - started, cpu, code)
                    raise
                _write_done_marker(run, config, result, code)
                finished_seeds.add(run.seed)
                finished_steps += config.max_steps - before[run.run_dir]
                say(f"[{index}/{total}] {run.name}: done in {time.perf_counter() - started:.0f} s")
            if bar is not None:
                running = sum(
                    max(0, last_step(run) - before[run.run_dir]) for _, run, _, _, _ in active.values()
                )
                bar.update(max(0, min(steps_total, finished_steps + running) - bar.n))  # respects mininterval
    finally:
        processes.stop()  # every child has been reaped when it returns
        for _, run, config, started, code in active.values():
            cpu = processes.cpu_seconds.get(config.output_dir)
            _record_interrupted_call(run, time.perf_counter() - started, cpu, code)
        executor.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()


def _worker(argv: list[str]) -> int:
    """`python -m bandpo.experiments.lm_compare CONFIG_JSON`: one run, without progress bars.

    It dies with the compare that started it (`bandpo._lifetime.die_with_parent`); a bad input or state is
    reported as one last line, ``WORKER_ERROR_PREFIX`` and the cause, with exit status 2.
    """
    parent = os.environ.get(PARENT_PID_VARIABLE)
    if parent and parent.isdigit() and not die_with_parent(int(parent)):
        watch_parent(int(parent))
    from bandpo.training import TrainConfig, train

    if len(argv) != 1:
        print("usage: python -m bandpo.experiments.lm_compare CONFIG_JSON", file=sys.stderr)
        return 2
    try:
        train(TrainConfig.from_dict(json.loads(argv[0])), progress=False)
    except KeyboardInterrupt:
        return 130
    except (ValueError, ImportError, OSError) as error:
        print(f"{WORKER_ERROR_PREFIX} {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
