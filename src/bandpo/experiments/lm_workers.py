"""Training the pending runs of `bandpo compare` (language model), `jobs` at a time, a process each.

Each run trains in its own Python process (`python -m bandpo.experiments.lm_workers`, started with
`subprocess`; its `TrainConfig` comes as JSON on the process's stdin, so it is neither a long argument in
`ps` nor a file to clean up), watched by a thread of a `concurrent.futures.ThreadPoolExecutor`; a stand-in
`train_fn` (tests) runs in the thread itself. One progress bar counts RL steps over every run of the plan,
read from the runs' metrics.jsonl, so its rate and ETA cover the whole comparison. Each run's completion
marker (`DONE_MARKER`) is written as soon as it finishes, with its wall and CPU time summed over every call
that trained it: a call that stopped before the run finished (Ctrl-C, a failure) adds its times to the run's
`WALL_LOG`, and one killed outright (kill -9, a lost session) is added by the next call, from its start to
its last sign of life: the heartbeat it writes into the run's open-call record every `HEARTBEAT_S`, or the
run's last write if later (its CPU time unknown). A run's CPU time is its process's (and its reward workers'),
read when the thread reaps it.
"""

from __future__ import annotations

import concurrent.futures as futures
import contextlib
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
from bandpo.experiments.lm_results import (
    DONE_MARKER,
    OPEN_CALL_SUFFIX,
    WALL_LOG,
    PlannedRun,
    call_records,
    comparable,
    training_records,
)
from bandpo.experiments.provenance import code_version
from bandpo.experiments.report import machine_info
from bandpo.training._atomic import write_text_atomic
from bandpo.training._lifetime import (
    PARENT_PID_VARIABLE,
    die_with_parent,
    stop_process_group,
    wait_with_usage,
    watch_parent,
)
from bandpo.training.run_dir import RunDir

__all__ = ["RunFailed", "close_killed_calls", "execute", "last_step", "worker_command"]

Progress = Callable[[str], None]
TrainFunction = Callable[..., Any]

POLL_S = 1.0  # seconds between progress-bar updates
STOP_GRACE_S = 10.0  # seconds a stopped run gets between SIGTERM and SIGKILL
CODE_REFRESH_S = 30.0  # a run's code record is at most this old when its process starts
HEARTBEAT_S = 30.0  # a killed call's wall time is counted to within this of its end
KILLED = "killed (to its last sign of life)"  # a call's `ended` when the next call recorded it
WORKER_ERROR_PREFIX = "bandpo compare: run error:"  # a run's one-line error, on its last line
WORKER_MODULE = "bandpo.experiments.lm_workers"  # what a run's process runs (`worker_command`)


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
    now = time.time()
    record = {"started": now, "alive": now, "code": code, "machine": _processor()}
    write_text_atomic(path, json.dumps(record) + "\n")


def _heartbeat(run: PlannedRun) -> None:
    """Mark the call training `run` alive now, so that if it is killed outright the next call counts its time
    to here (the run may write nothing for minutes, e.g. while it evaluates)."""
    path = _open_call_path(run)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return  # closed meanwhile (the run ended) or unreadable: nothing to keep alive
    record["alive"] = time.time()
    write_text_atomic(path, json.dumps(record) + "\n")


def _processor() -> str:
    """The CPU model of this call, recorded per call: a run resumed on another machine shows it."""
    return str(machine_info()["processor"])


def _last_write(folder: Path) -> float | None:
    times = [path.stat().st_mtime for path in folder.rglob("*") if path.is_file()]
    return max(times) if times else None


def close_killed_calls(runs: Sequence[PlannedRun]) -> None:
    """Record the calls that were killed before they could record themselves: each counts from its start to
    its last heartbeat or the run directory's last write, whichever is later (a lower bound of its wall time,
    short by at most `HEARTBEAT_S`; its CPU time is unknown)."""
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
            alive = opened.get("alive")
            end = max(last, float(alive)) if isinstance(alive, (int, float)) else last
            _record_interrupted_call(
                run,
                max(0.0, end - started),
                None,
                opened.get("code"),
                ended=KILLED,
                machine=opened.get("machine"),
            )
        path.unlink(missing_ok=True)


def _record_interrupted_call(
    run: PlannedRun,
    seconds: float,
    cpu: float | None,
    code: dict[str, Any] | None,
    *,
    ended: str = "stopped",
    machine: str | None,
) -> None:
    """Add a call that stopped before the run finished, so the run's total wall and CPU time keep it.
    `machine`: the CPU model it ran on (None: not recorded, a call killed before calls recorded it)."""
    _open_call_path(run).unlink(missing_ok=True)
    if not run.run_dir.exists():
        return  # nothing was started there
    call = {
        "wall_s": round(float(seconds), 3),
        "cpu_s": _rounded(cpu),
        "code": code,
        "ended": ended,
        "machine": machine,
    }
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
    last = {
        "wall_s": last_call,
        "cpu_s": _rounded(cpu),
        "code": code,
        "ended": "finished",
        "machine": _processor(),
    }
    calls = [*earlier, last]
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
    armed by the child at start, `bandpo.training._lifetime.die_with_parent`); elsewhere the child watches its parent.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, tuple[subprocess.Popen, threading.Event]] = {}
        self.stopping = False
        self.cpu_seconds: dict[str, float | None] = {}  # run directory -> CPU of its last process

    def train(self, config: Any) -> dict[str, Any]:
        """Train `config` in a fresh interpreter and wait for it; its summary.json and the process's CPU time
        (`cpu_seconds`, also kept when it fails) are the result."""
        env = {**os.environ, PARENT_PID_VARIABLE: str(os.getpid())}
        with self._lock:
            if self.stopping:
                raise RunFailed(f"run {config.output_dir}: compare stopped before it started")
            process = subprocess.Popen(
                worker_command(),
                env=env,
                start_new_session=True,
                stdin=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
            )
            reaped = threading.Event()  # this thread reaps the child, so it keeps its resource usage
            self._running[config.output_dir] = (process, reaped)
        last_line = ""
        try:
            # the config goes on stdin; a child that ended before reading it says why in its exit status
            with contextlib.suppress(BrokenPipeError):
                process.stdin.write(config.to_json())
            with contextlib.suppress(BrokenPipeError):
                process.stdin.close()
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
    beats: dict[Path, float] = {}  # run directory -> when its open-call record was last marked alive
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
                beats[run.run_dir] = time.monotonic()
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
                    _record_interrupted_call(
                        run, time.perf_counter() - started, cpu, code, machine=_processor()
                    )
                    raise
                _write_done_marker(run, config, result, code)
                finished_seeds.add(run.seed)
                finished_steps += config.max_steps - before[run.run_dir]
                say(f"[{index}/{total}] {run.name}: done in {time.perf_counter() - started:.0f} s")
            for _, run, _, _, _ in active.values():
                if time.monotonic() - beats.get(run.run_dir, -math.inf) >= HEARTBEAT_S:
                    beats[run.run_dir] = time.monotonic()
                    _heartbeat(run)
            if bar is not None:
                running = sum(
                    max(0, last_step(run) - before[run.run_dir]) for _, run, _, _, _ in active.values()
                )
                bar.update(max(0, min(steps_total, finished_steps + running) - bar.n))  # respects mininterval
    finally:
        processes.stop()  # every child has been reaped when it returns
        for _, run, config, started, code in active.values():
            cpu = processes.cpu_seconds.get(config.output_dir)
            _record_interrupted_call(run, time.perf_counter() - started, cpu, code, machine=_processor())
        executor.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()


def worker_command() -> list[str]:
    """The command line of a run's process. The run's `TrainConfig` is not on it (a few kB of JSON, shown by
    `ps` to every user of the machine): `_worker` reads it from stdin."""
    return [sys.executable, "-m", WORKER_MODULE]


def _worker(argv: list[str]) -> int:
    """`python -m bandpo.experiments.lm_workers < CONFIG_JSON`: one run, without progress bars.

    It dies with the compare that started it (`bandpo.training._lifetime.die_with_parent`); a bad input or state is
    reported as one last line, ``WORKER_ERROR_PREFIX`` and the cause, with exit status 2.
    """
    parent = os.environ.get(PARENT_PID_VARIABLE)
    if parent and parent.isdigit() and not die_with_parent(int(parent)):
        watch_parent(int(parent))
    from bandpo.training import TrainConfig, train

    if argv or sys.stdin.isatty():
        print(
            f"usage: python -m {WORKER_MODULE} < CONFIG_JSON (a TrainConfig's JSON on stdin)", file=sys.stderr
        )
        return 2
    try:
        values = json.loads(sys.stdin.read())
        if not isinstance(values, dict):
            raise ValueError(f"stdin holds a JSON {type(values).__name__}, not a TrainConfig's JSON object")
        train(TrainConfig.from_dict(values), progress=False)
    except KeyboardInterrupt:
        return 130
    except (ValueError, ImportError, OSError) as error:
        print(f"{WORKER_ERROR_PREFIX} {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
