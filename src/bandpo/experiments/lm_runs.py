"""The runs of an LM comparison: which runs, with which `TrainConfig`, which of them already finished, and
training the others, `jobs` at a time, under one progress bar for the whole plan.

Every run gets the same `TrainConfig` except the method and the seed (equal budget: steps, prompts, samples,
optimiser, evaluation). Seed k warms up (or loads the cached warm-up of) the embedded model with seed k, so
methods with the same seed start from the same policy and see the same prompts.

Each run trains in its own Python process (`python -m bandpo.experiments.lm_runs CONFIG_JSON`, started with
`subprocess`), watched by a thread of a `concurrent.futures.ThreadPoolExecutor`; a stand-in `train_fn` (tests)
runs in the thread itself. The progress bar counts RL steps over every run of the plan, read from the runs'
metrics.jsonl, so its rate and ETA cover the whole comparison.

Each run's completion marker (`DONE_MARKER`) is written as soon as it finishes, with its wall time summed over
every call that trained it: a call that stopped before the run finished (Ctrl-C, a failure) adds its time to
the run's `WALL_LOG`.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bandpo import metric_names as mn
from bandpo._atomic import write_text_atomic
from bandpo._lifetime import PARENT_PID_VARIABLE, die_with_parent, stop_process_group, watch_parent
from bandpo.experiments.arms import LOSS_PARAMS, MethodSpec
from bandpo.training.config import RUN_INDEPENDENT_FIELDS
from bandpo.training.metrics_log import read_metrics
from bandpo.training.run_dir import read_json, to_json

__all__ = [
    "DONE_MARKER",
    "FULL_SETTINGS",
    "QUICK_NOTE",
    "QUICK_SETTINGS",
    "WALL_LOG",
    "PlannedRun",
    "RunFailed",
    "build_config",
    "check_resumable",
    "comparable",
    "effective",
    "execute",
    "interrupted_calls",
    "is_done",
    "last_step",
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


# ---- training the pending runs

Progress = Callable[[str], None]
TrainFunction = Callable[..., Any]
POLL_S = 1.0  # seconds between progress-bar updates
STOP_GRACE_S = 10.0  # seconds a stopped run gets between SIGTERM and SIGKILL
WORKER_ERROR_PREFIX = "bandpo compare: run error:"  # a run's one-line error, on its last line


def last_step(run: PlannedRun) -> int:
    records = [
        r for r in read_metrics(run.run_dir / "metrics.jsonl", missing_ok=True) if mn.TRAIN_REWARD in r
    ]
    return int(records[-1][mn.TRAIN_STEP]) if records else 0


def interrupted_calls(run: PlannedRun) -> list[float]:
    path = run.run_dir / WALL_LOG
    if not path.exists():
        return []
    try:
        return [float(value) for value in json.loads(path.read_text()).get("interrupted_calls_s", [])]
    except (json.JSONDecodeError, TypeError, ValueError):
        return []


def _record_interrupted_call(run: PlannedRun, seconds: float) -> None:
    """Add the time of a call that stopped before the run finished, so the run's total wall time keeps it."""
    if not run.run_dir.exists():
        return  # nothing was started there
    calls = [*interrupted_calls(run), round(float(seconds), 3)]
    write_text_atomic(run.run_dir / WALL_LOG, json.dumps({"interrupted_calls_s": calls}) + "\n")


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


def _write_done_marker(run: PlannedRun, config: Any, result: Any) -> None:
    last_call = _training_seconds(result)
    earlier = interrupted_calls(run)
    from bandpo import __version__
    from bandpo.experiments.report import machine_info

    record = {
        "label": run.spec.label,
        "seed": run.seed,
        "config": comparable(config.to_dict()),
        "wall_time_s": last_call + sum(earlier),  # every call that trained this run
        "wall_time_calls_s": [*earlier, last_call],
        "bandpo_version": __version__,
        "machine": machine_info(),  # CPU training is deterministic on one machine, not across machines
    }
    write_text_atomic(run.run_dir / DONE_MARKER, json.dumps(record, indent=2, default=str) + "\n")


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
        self._running: dict[str, subprocess.Popen] = {}
        self.stopping = False

    def train(self, config: Any) -> dict[str, Any]:
        """Train `config` in a fresh interpreter and wait for it; its summary.json is the result."""
        command = [sys.executable, "-m", "bandpo.experiments.lm_runs", config.to_json()]
        env = {**os.environ, PARENT_PID_VARIABLE: str(os.getpid())}
        with self._lock:
            if self.stopping:
                raise RunFailed(f"run {config.output_dir}: compare stopped before it started")
            process = subprocess.Popen(
                command, env=env, start_new_session=True, stderr=subprocess.PIPE, text=True, errors="replace"
            )
            self._running[config.output_dir] = process
        last_line = ""
        try:
            for line in process.stderr:  # passed on as it comes; a failed run's error is said once, below
                if not line.startswith(WORKER_ERROR_PREFIX):
                    sys.stderr.write(line)
                last_line = line.strip() or last_line
            code = process.wait()
        finally:
            process.stderr.close()
            with self._lock:
                self._running.pop(config.output_dir, None)
        if code != 0:
            raise RunFailed(_failure_message(config.output_dir, code, last_line, stopping=self.stopping))
        summary = read_json(
            Path(config.output_dir) / "summary.json", fix=_DELETE_RUN.format(config.output_dir)
        )
        return {"wall_time_s": summary.get("wall_time_s"), "warmup": summary.get("warmup")}

    def stop(self) -> None:
        """End every running child and its process group (SIGTERM, then SIGKILL after a grace period); the
        runs keep their last checkpoints and resume from them later."""
        with self._lock:
            self.stopping = True
            running = list(self._running.values())
        for process in running:
            stop_process_group(process, grace_s=STOP_GRACE_S)


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

    processes = _Subprocesses()
    waiting = list(pending)
    active: dict[futures.Future, tuple[int, PlannedRun, Any, float]] = {}
    finished_seeds: set[int] = set()
    executor = futures.ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="bandpo-compare")
    try:
        while waiting or active:
            while len(active) < jobs:
                busy = {run.seed for _, run, _, _ in active.values()}
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
                started = time.perf_counter()  # before the submit: the run may start before it returns
                if train_fn is None:
                    future = executor.submit(processes.train, config)
                else:
                    future = executor.submit(train_fn, config, progress=False)
                active[future] = (index, run, config, started)
            done, _ = futures.wait(list(active), timeout=POLL_S, return_when=futures.FIRST_COMPLETED)
            for future in done:
                index, run, config, started = active.pop(future)
                try:
                    result = future.result()
                except BaseException:  # failed: keep the time this call spent on the run
                    _record_interrupted_call(run, time.perf_counter() - started)
                    raise
                _write_done_marker(run, config, result)
                finished_seeds.add(run.seed)
                finished_steps += config.max_steps - before[run.run_dir]
                say(f"[{index}/{total}] {run.name}: done in {time.perf_counter() - started:.0f} s")
            if bar is not None:
                running = sum(
                    max(0, last_step(run) - before[run.run_dir]) for _, run, _, _ in active.values()
                )
                bar.update(max(0, min(steps_total, finished_steps + running) - bar.n))  # respects mininterval
    finally:
        processes.stop()
        for _, run, _, started in active.values():
            _record_interrupted_call(run, time.perf_counter() - started)
        executor.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()


def _worker(argv: list[str]) -> int:
    """`python -m bandpo.experiments.lm_runs CONFIG_JSON`: one run, without progress bars.

    It dies with the compare that started it (`bandpo._lifetime.die_with_parent`); a bad input or state is
    reported as one last line, ``WORKER_ERROR_PREFIX`` and the cause, with exit status 2.
    """
    parent = os.environ.get(PARENT_PID_VARIABLE)
    if parent and parent.isdigit() and not die_with_parent(int(parent)):
        watch_parent(int(parent))
    from bandpo.training import TrainConfig, train

    if len(argv) != 1:
        print("usage: python -m bandpo.experiments.lm_runs CONFIG_JSON", file=sys.stderr)
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
