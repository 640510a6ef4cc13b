"""`bandpo compare` (language model): methods x seeds at equal budget through `bandpo.training.train`, then
report.md with a table (mean ± standard error over seeds) and plots over training steps.

Layout of `output_dir`::

    compare.json                the plan: methods, seeds, the shared settings
    runs/<method>-seed<k>/      one `bandpo train` run directory each (config, metrics.jsonl, summary.json, ...)
    runs/<method>-seed<k>/compare_done.json   written after the run finished: the completion marker, with the
                                              run's wall time summed over every call that trained it
    runs/<method>-seed<k>/compare_wall.json   seconds spent by calls that were interrupted (until it finishes)
    report.md, compare_*.png    the comparison

Resuming: a run with a completion marker is skipped (its settings must match the plan, else the command stops
and says so); a run directory without one is continued from its last checkpoint (`TrainConfig(resume=True)`);
the others start fresh. So an interrupted compare, run again with the same arguments, redoes nothing that
finished.

Every run gets the same `TrainConfig` except the method and the seed (equal budget: steps, prompts, samples,
optimiser, evaluation). Seed k warms up (or loads the cached warm-up of) the embedded model with seed k, so
methods with the same seed start from the same policy and see the same prompts.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bandpo import metric_names as mn
from bandpo._atomic import write_text_atomic
from bandpo.experiments.methods_spec import MethodSpec
from bandpo.experiments.report import (
    VERDICT_RULE,
    format_values,
    import_pyplot,
    machine_info,
    markdown_table,
    mean_and_spread,
    moving_average,
    paired_verdict,
    plot_curves,
    prob_bin_headers,
    save_figure,
)
from bandpo.training.config import RUN_INDEPENDENT_FIELDS

__all__ = [
    "DONE_MARKER",
    "FULL_SETTINGS",
    "QUICK_SETTINGS",
    "WALL_LOG",
    "PlannedRun",
    "build_config",
    "plan_runs",
    "run_lm_compare",
    "write_lm_report",
]

DONE_MARKER = "compare_done.json"
WALL_LOG = "compare_wall.json"  # {"interrupted_calls_s": [...]}: time of calls that did not finish the run

# Shared settings of every run (on top of TrainConfig's "default" preset). The full comparison keeps the
# default budget (250 RL steps of 32 prompts x 8 samples); --quick trades steps and evaluation prompts for time.
FULL_SETTINGS: dict[str, Any] = {"eval_every": 50}
QUICK_SETTINGS: dict[str, Any] = {"max_steps": 60, "eval_prompts": 128, "eval_every": 30, "save_every": 20}

Progress = Callable[[str], None]
TrainFunction = Callable[..., Any]

# table columns: (metric key in the evaluation after training, header, digits)
EVAL_COLUMNS: tuple[tuple[str, str, int], ...] = (
    (mn.EVAL_MEAN_AT_K, "mean@{k} (= pass@1)", 3),
    (mn.EVAL_PASS_AT_K, "pass@{k}", 3),
    (mn.EVAL_MAJ_AT_K, "maj@{k}", 3),
    (mn.EVAL_DISTINCT_CORRECT, "distinct correct / prompt", 2),
    (mn.EVAL_RARE_PASS_AT_K, "pass@{k}, prompts needing the rare strategy", 3),
    (mn.EVAL_RARE_USAGE, "samples using the rare strategy", 3),
    (mn.EVAL_ENTROPY, "final entropy (eval, nats/token)", 3),
)


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


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in config.items() if key not in RUN_INDEPENDENT_FIELDS}


def _effective(config: dict[str, Any]) -> dict[str, Any]:
    """The settings a run actually uses: a field left to its automatic value (e.g. `max_completion_length`
    None) takes the value of the config's `resolved` entry, which older run records wrote as the field itself."""
    resolved = config.get("resolved") or {}
    values = {key: value for key, value in config.items() if key != "resolved"}
    for key, value in resolved.items():
        if key in values:
            values[key] = value
    return values


def _is_done(run: PlannedRun, config: Any) -> bool:
    """Whether the run finished; an error if it finished with other settings.

    Settings are compared after resolving automatic values (`_effective`). A field the finished run's record
    lacks (added to `TrainConfig` after it ran) is not compared: the run used the behaviour before that field
    existed, which the field's default keeps.
    """
    marker = run.run_dir / DONE_MARKER
    if not marker.exists() or not (run.run_dir / "summary.json").exists():
        return False
    stored = _effective(json.loads(marker.read_text()).get("config", {}))
    planned = _effective(_comparable(config.to_dict()))
    different = sorted(key for key in planned if key in stored and stored[key] != planned[key])
    if different:
        details = ", ".join(
            f"{key}: {stored.get(key)!r} there, {planned[key]!r} now" for key in different[:4]
        )
        raise ValueError(
            f"{run.run_dir} holds a finished run with other settings ({details}); use another --output-dir or "
            "remove that run directory"
        )
    return True


def run_lm_compare(
    specs: Sequence[MethodSpec],
    seeds: Sequence[int],
    output_dir: Path,
    *,
    quick: bool = False,
    steps: int | None = None,
    model: str | None = None,
    dataset: str | None = None,
    progress: Progress | None = None,
    svg: bool = False,
    jobs: int = 1,
    train_fn: TrainFunction | None = None,
    extra_settings: dict[str, Any] | None = None,
) -> tuple[Path, str]:
    """Train every (method, seed) not finished yet, then write report.md; returns (report path, main table).

    Args:
        jobs: runs trained at the same time. 1 trains in this process with progress bars; more start one
            process per run (each with `TrainConfig.num_threads` threads, 1 by default) and report progress
            as lines.
        train_fn: `train_fn(config, progress=...)`, default `bandpo.training.train`. A stand-in (tests) runs in
            threads when jobs > 1.
    """
    if jobs < 1:
        raise ValueError(f"--jobs {jobs}: must be >= 1")
    output_dir = Path(output_dir)
    settings = dict(QUICK_SETTINGS if quick else FULL_SETTINGS)
    if steps is not None:
        settings["max_steps"] = steps
    if model is not None:
        settings["model"] = model
    if dataset is not None:
        settings["dataset"] = dataset
    settings.update(extra_settings or {})
    runs = plan_runs(specs, seeds, output_dir)
    configs = [build_config(run.spec, run.seed, run.run_dir, settings) for run in runs]  # validate all first

    plan = {
        "methods": [spec.label for spec in specs],
        "seeds": list(seeds),
        "settings": settings,
        "quick": quick,
        "jobs": jobs,
        "config": _comparable(configs[0].to_dict()) if configs else {},
    }
    start = time.perf_counter()
    pending: list[tuple[int, PlannedRun, Any]] = []
    for index, (run, config) in enumerate(zip(runs, configs, strict=True), start=1):
        if _is_done(run, config):
            if progress:
                progress(f"[{index}/{len(runs)}] {run.name}: finished earlier, skipped")
            continue
        if (run.run_dir / "config.json").exists():  # interrupted: continue from its last checkpoint
            config = build_config(run.spec, run.seed, run.run_dir, settings, resume=True)
        pending.append((index, run, config))
    output_dir.mkdir(parents=True, exist_ok=True)  # after the checks: a refused compare leaves no trace
    (output_dir / "compare.json").write_text(json.dumps(plan, indent=2, default=str) + "\n")
    if pending:
        _execute(pending, len(runs), jobs=jobs, train_fn=train_fn, progress=progress)
    if progress:
        progress(
            f"all {len(runs)} runs finished ({time.perf_counter() - start:.0f} s in this call); writing report"
        )
    return write_lm_report(runs, output_dir, svg=svg, settings=settings, jobs=jobs)


def _default_train(config: Any, *, progress: bool = True) -> Any:
    from bandpo.training import train

    return train(config, progress=progress)


def _train_worker(config_dict: dict[str, Any]) -> None:
    """Target of a worker process: one run without progress bars (its summary.json is the result)."""
    from bandpo.training import TrainConfig

    _default_train(TrainConfig.from_dict(config_dict), progress=False)


class _ProcessJob:
    """One run in its own process (spawned: a fresh interpreter, no state shared with this one)."""

    def __init__(self, config: Any) -> None:
        import multiprocessing

        self.config = config
        self.process = multiprocessing.get_context("spawn").Process(
            target=_train_worker, args=(config.to_dict(),), daemon=False
        )
        self.process.start()

    def done(self) -> bool:
        return not self.process.is_alive()

    def result(self) -> dict[str, Any]:
        self.process.join()
        if self.process.exitcode != 0:
            raise RuntimeError(
                f"run {self.config.output_dir} failed (exit code {self.process.exitcode}; its error is printed "
                "above); run the same compare again to resume"
            )
        summary = json.loads((Path(self.config.output_dir) / "summary.json").read_text())
        return {"wall_time_s": summary.get("wall_time_s"), "warmup": summary.get("warmup")}

    def cancel(self) -> None:
        if self.process.is_alive():
            self.process.terminate()  # SIGTERM: the run keeps its last checkpoint and resumes from it later
        self.process.join()


class _ThreadJob:
    """One run of a stand-in `train_fn` in a thread (tests)."""

    def __init__(self, executor: Any, train_fn: TrainFunction, config: Any) -> None:
        self.future = executor.submit(train_fn, config, progress=False)

    def done(self) -> bool:
        return self.future.done()

    def result(self) -> Any:
        return self.future.result()

    def cancel(self) -> None:
        self.future.cancel()


def _interrupted_calls(run: PlannedRun) -> list[float]:
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
    calls = [*_interrupted_calls(run), round(float(seconds), 3)]
    write_text_atomic(run.run_dir / WALL_LOG, json.dumps({"interrupted_calls_s": calls}) + "\n")


def _result_record(result: Any) -> dict[str, Any]:
    """Training wall time of a finished run, without a warm-up it had to do first (shared by its seed)."""
    if isinstance(result, dict):
        wall, warmup = result.get("wall_time_s"), result.get("warmup")
    else:
        wall, warmup = getattr(result, "wall_time_s", None), getattr(result, "warmup", None)
    wall = math.nan if wall is None else float(wall)
    if isinstance(warmup, dict) and not warmup.get("from_cache", True):
        wall -= float(warmup.get("seconds", 0.0))
    return {"wall_time_s": wall}


def _last_step(run: PlannedRun) -> int:
    records = [r for r in _read_jsonl(run.run_dir / "metrics.jsonl") if mn.TRAIN_REWARD in r]
    return int(records[-1][mn.TRAIN_STEP]) if records else 0


HEARTBEAT_S = 60.0  # seconds between progress lines while runs train in other processes
POLL_S = 0.5


def _execute(
    pending: list[tuple[int, PlannedRun, Any]],
    total: int,
    *,
    jobs: int,
    train_fn: TrainFunction | None,
    progress: Progress | None,
) -> None:
    """Train the pending runs, `jobs` at a time; write each run's completion marker as soon as it finishes.

    Two runs of the same seed do not start together while neither has finished: with the embedded model, the
    first one warms up (and caches) the seed's starting policy, which the others then load.
    """
    import concurrent.futures as futures

    def finish(index: int, run: PlannedRun, config: Any, result: Any, started: float) -> None:
        last_call = _result_record(result)["wall_time_s"]
        earlier = _interrupted_calls(run)
        record = {
            "label": run.spec.label,
            "seed": run.seed,
            "config": _comparable(config.to_dict()),
            "wall_time_s": last_call + sum(earlier),  # every call that trained this run
            "wall_time_calls_s": [*earlier, last_call],
        }
        write_text_atomic(run.run_dir / DONE_MARKER, json.dumps(record, indent=2, default=str) + "\n")
        if progress:
            progress(f"[{index}/{total}] {run.name}: done in {time.perf_counter() - started:.0f} s")

    def announce(index: int, run: PlannedRun, config: Any) -> None:
        if progress:
            verb = "resuming" if config.resume else "training"
            progress(f"[{index}/{total}] {run.name}: {verb} ({config.max_steps} steps) in {run.run_dir}")

    if jobs == 1:
        for index, run, config in pending:
            announce(index, run, config)
            started = time.perf_counter()
            try:
                result = (train_fn or _default_train)(config, progress=progress is not None)
            except BaseException:  # interrupted (Ctrl-C) or failed: keep the time this call spent on the run
                _record_interrupted_call(run, time.perf_counter() - started)
                raise
            finish(index, run, config, result, started)
        return

    executor = None
    if train_fn is not None:
        executor = futures.ThreadPoolExecutor(max_workers=jobs)
    waiting = list(pending)
    running: list[tuple[Any, int, PlannedRun, Any, float]] = []
    finished_seeds: set[int] = set()
    last_heartbeat = time.perf_counter()
    try:
        while waiting or running:
            while len(running) < jobs:
                busy = {run.seed for _, _, run, _, _ in running}
                choice = next(
                    (item for item in waiting if item[1].seed in finished_seeds or item[1].seed not in busy),
                    None,
                )
                if choice is None:
                    break
                waiting.remove(choice)
                announce(*choice)
                index, run, config = choice
                job = _ProcessJob(config) if executor is None else _ThreadJob(executor, train_fn, config)
                running.append((job, index, run, config, time.perf_counter()))
            time.sleep(POLL_S)
            for item in [item for item in running if item[0].done()]:
                running.remove(item)
                job, index, run, config, started = item
                try:
                    result = job.result()
                except BaseException:
                    _record_interrupted_call(run, time.perf_counter() - started)
                    raise
                finish(index, run, config, result, started)
                finished_seeds.add(run.seed)
            if progress and running and time.perf_counter() - last_heartbeat > HEARTBEAT_S:
                last_heartbeat = time.perf_counter()
                states = ", ".join(
                    f"{run.name} step {_last_step(run)}/{config.max_steps}"
                    for _, _, run, config, _ in running
                )
                progress(f"  running: {states}")
    finally:
        for job, _, run, _, started in running:
            job.cancel()
            _record_interrupted_call(run, time.perf_counter() - started)
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


# --- reading run directories -------------------------------------------------------------------------


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl (`bandpo.training.plots.read_metrics`: a torn last line is skipped); [] for
    a run that has not written one yet."""
    from bandpo.training.plots import read_metrics

    return read_metrics(path) if path.exists() else []


@dataclass
class _RunData:
    run: PlannedRun
    summary: dict[str, Any]
    records: list[dict[str, Any]]  # training records (those with a reward), in step order
    wall_time_s: float

    def after(self, key: str) -> float:
        metrics = (self.summary.get("after") or {}).get("metrics", {})
        value = metrics.get(key)
        return math.nan if value is None else float(value)

    def before(self, key: str) -> float:
        metrics = (self.summary.get("before") or {}).get("metrics", {})
        value = metrics.get(key)
        return math.nan if value is None else float(value)

    def mean_over_steps(self, key: str, weight_key: str | None = None) -> float:
        """Mean of `key` over the training steps that logged a finite value (absent or nan: left out).

        With `weight_key` present in those steps (e.g. a bin's token count), the mean is weighted by it, so that
        it is the fraction among all tokens of the bin over the run rather than a mean of per-step fractions.
        """
        pairs = [
            (_finite(r.get(key)), _finite(r.get(weight_key)) if weight_key else None) for r in self.records
        ]
        pairs = [(value, weight) for value, weight in pairs if value is not None]
        if not pairs:
            return math.nan
        if weight_key and all(weight is not None for _, weight in pairs):
            total = sum(weight for _, weight in pairs)
            if total > 0:
                return sum(value * weight for value, weight in pairs) / total
        return sum(value for value, _ in pairs) / len(pairs)

    @property
    def k(self) -> int | None:
        return (self.summary.get("after") or {}).get("k")


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _load(run: PlannedRun) -> _RunData | None:
    summary_path = run.run_dir / "summary.json"
    if not summary_path.exists():
        return None
    summary = json.loads(summary_path.read_text())
    records = [r for r in _read_jsonl(run.run_dir / "metrics.jsonl") if mn.TRAIN_REWARD in r]
    records.sort(key=lambda r: r.get(mn.TRAIN_STEP, 0))
    marker = run.run_dir / DONE_MARKER
    wall = json.loads(marker.read_text()).get("wall_time_s") if marker.exists() else None
    if wall is None:  # no marker: the run's last call, plus the interrupted ones compare recorded
        wall = float(summary.get("wall_time_s", math.nan)) + sum(_interrupted_calls(run))
    return _RunData(run=run, summary=summary, records=records, wall_time_s=wall)


# --- the report ----------------------------------------------------------------------------------------


def lm_tables(data: dict[str, list[_RunData]]) -> tuple[str, str, str]:
    """(main table, paired-difference table, clip-fraction table) in Markdown."""
    k = next((run.k for runs in data.values() for run in runs if run.k), None)
    k_text = str(k) if k else "k"
    headers = [
        "method",
        "seeds",
        *(header.format(k=k_text) for _, header, _ in EVAL_COLUMNS),
        "wall min / run (all calls)",
    ]
    rows = []
    all_runs = [run for runs in data.values() for run in runs]
    if all_runs:
        before_row = ["before RL (warm-up policy)", str(len({r.run.seed for r in all_runs}))]
        by_seed = {r.run.seed: r for r in all_runs}  # the policy before RL depends on the seed only
        for key, _, digits in EVAL_COLUMNS:
            before_row.append(format_values([r.before(key) for r in by_seed.values()], digits))
        rows.append([*before_row, ""])
    for label, runs in data.items():
        row = [label, str(len(runs))]
        for key, _, digits in EVAL_COLUMNS:
            row.append(format_values([run.after(key) for run in runs], digits))
        row.append(format_values([run.wall_time_s / 60 for run in runs], 1))
        rows.append(row)
    main = markdown_table(headers, rows)

    labels = list(data)
    paired = ""
    if len(labels) > 1:
        reference = labels[0]
        ref_by_seed = {run.run.seed: run for run in data[reference]}
        keys = [(mn.EVAL_MEAN_AT_K, f"mean@{k_text}"), (mn.EVAL_PASS_AT_K, f"pass@{k_text}"),
                (mn.EVAL_DISTINCT_CORRECT, "distinct correct"), (mn.EVAL_RARE_PASS_AT_K, f"rare pass@{k_text}")]  # fmt: skip
        paired_rows = []
        for label in labels[1:]:
            row = [label]
            for key, _ in keys:
                paired_runs = [run for run in data[label] if run.run.seed in ref_by_seed]
                values = [run.after(key) for run in paired_runs]
                reference_values = [ref_by_seed[run.run.seed].after(key) for run in paired_runs]
                row.append(paired_verdict(values, reference_values, 3))
            paired_rows.append(row)
        paired = markdown_table(["method", *(f"Δ {name} vs {reference}" for _, name in keys)], paired_rows)

    clip_rows = []
    for label, runs in data.items():
        cells = []
        for bin_label in mn.PROB_BIN_LABELS:
            weight = mn.clip_tokens_bin(bin_label)
            up = mean_and_spread(
                [run.mean_over_steps(mn.clip_frac_up_bin(bin_label), weight) for run in runs]
            )[0]
            down = mean_and_spread(
                [run.mean_over_steps(mn.clip_frac_down_bin(bin_label), weight) for run in runs]
            )[0]
            cells.append("–" if not math.isfinite(up) else f"{up:.3f}/{down:.3f}")
        overall_up = mean_and_spread([run.mean_over_steps(mn.CLIP_FRAC_UP) for run in runs])[0]
        overall_down = mean_and_spread([run.mean_over_steps(mn.CLIP_FRAC_DOWN) for run in runs])[0]
        overall = "–" if not math.isfinite(overall_up) else f"{overall_up:.3f}/{overall_down:.3f}"
        clip_rows.append([label, overall, *cells])
    clip = markdown_table(["method", "all tokens", *prob_bin_headers()], clip_rows)
    return main, paired, clip


def _clip_rule(data: dict[str, list[_RunData]]) -> str:
    """How the clip-fraction table averages, including what the runs' logs say about empty bins."""
    records = [r for runs in data.values() for run in runs for r in run.records]
    weighted = any(mn.clip_tokens_bin(label) in r for r in records for label in mn.PROB_BIN_LABELS)
    every_bin_logged = all(
        _finite(r.get(mn.clip_frac_up_bin(label))) is not None
        for r in records
        for label in mn.PROB_BIN_LABELS
    )
    text = (
        "the fraction among the tokens of the bin, over the RL steps that logged a value for the bin "
        + ("(weighted by the bin's token count per step)" if weighted else "(mean of the per-step fractions)")
        + ", then the mean over seeds. A step that logged no value (or nan) for a bin, as a step with no token "
        "in the bin should, is left out of that bin's mean rather than counted as 0"
    )
    if records and every_bin_logged:
        text += (
            "; every step of these runs logged every bin, so if their trainer wrote 0 for an empty bin, such "
            "steps count as 0 here"
        )
    return text + ":"


def write_lm_report(
    runs: Sequence[PlannedRun],
    output_dir: Path,
    *,
    svg: bool = False,
    settings: dict[str, Any] | None = None,
    jobs: int | None = None,
) -> tuple[Path, str]:
    """Read the finished run directories and write report.md and compare_*.png; returns (path, main table)."""
    output_dir = Path(output_dir)
    data: dict[str, list[_RunData]] = {}
    missing = []
    for run in runs:
        loaded = _load(run)
        if loaded is None:
            missing.append(run.name)
            continue
        data.setdefault(run.spec.label, []).append(loaded)
    if not data:
        raise ValueError(f"no finished run under {output_dir / 'runs'}: nothing to report")
    main, paired, clip = lm_tables(data)
    first = next(iter(data.values()))[0]
    config = first.summary.get("config", {})
    seeds = sorted({run.run.seed for runs_ in data.values() for run in runs_})
    lines = [
        "# bandpo compare",
        "",
        f"{len(data)} methods x {len(seeds)} seeds ({', '.join(map(str, seeds))}), equal budget: "
        f"{config.get('max_steps')} RL steps of {config.get('prompts_per_step')} prompts x "
        f"{config.get('num_generations')} samples, {config.get('num_iterations')} x {config.get('minibatches')} "
        f"updates per batch, lr {config.get('learning_rate')}; model: {config.get('model') or 'embedded tiny'}, "
        f"dataset: {config.get('dataset') or 'embedded Countdown'}.",
        f"Held-out evaluation after training: {config.get('eval_prompts')} prompts x {first.k} samples. "
        "Figures are the mean ± standard error over seeds.",
    ]
    if settings:
        lines.append(f"Settings shared by every run: `{json.dumps(settings, default=str)}`.")
    machine = machine_info()
    lines.append(
        f"Machine: {machine['processor']}, {machine['platform']}, torch {machine['torch']}"
        + (f"; {jobs} run(s) trained at a time, so wall times include that contention." if jobs else ".")
    )
    if missing:
        lines += ["", f"**Missing (not finished): {', '.join(missing)}.**"]
    lines += ["", "## Held-out evaluation after training", "", main]
    if paired:
        lines += [
            "",
            "Paired differences (same seed, so same starting policy and prompts): mean difference ± its standard "
            f"error; {VERDICT_RULE}:",
            "",
            paired,
        ]
    lines += [
        "",
        "## Clip fractions by p_old bin",
        "",
        "Upward/downward (up: A > 0 and ratio > ratio_high; down: A < 0 and ratio < ratio_low): "
        + _clip_rule(data),
        "",
        clip,
        "",
        "## Training curves",
        "",
        "![training curves](compare_training.png)",
    ]
    _plot_training(data, output_dir, svg=svg)
    if any(len([r for r in _read_jsonl(run.run.run_dir / "metrics.jsonl") if mn.EVAL_PASS_AT_K in r]) > 2
           for runs_ in data.values() for run in runs_):  # fmt: skip
        _plot_eval(data, output_dir, svg=svg)
        lines += ["", "![held-out evaluation during training](compare_eval.png)"]
    path = output_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path, main


def _step_grid(runs: list[_RunData]) -> list[int]:
    return sorted({int(r[mn.TRAIN_STEP]) for run in runs for r in run.records})


def _plot_training(data: dict[str, list[_RunData]], output_dir: Path, *, svg: bool) -> None:
    plt = import_pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    panels = (
        (axes[0, 0], mn.TRAIN_REWARD, "training reward", "reward"),
        (axes[0, 1], mn.TRAIN_ENTROPY, "token entropy of the samples", "nats"),
        (axes[1, 0], mn.CLIP_FRAC_UP, "clipped up (A > 0, ratio > high)", "fraction of tokens"),
        (axes[1, 1], mn.CLIP_FRAC_DOWN, "clipped down (A < 0, ratio < low)", "fraction of tokens"),
    )
    steps_all = _step_grid([run for runs in data.values() for run in runs])
    window = max(1, len(steps_all) // 25)
    for ax, key, title, ylabel in panels:
        curves = {}
        for label, runs in data.items():
            per_seed = []
            for run in runs:
                by_step = {
                    int(r[mn.TRAIN_STEP]): float(r[key]) for r in run.records if r.get(key) is not None
                }
                per_seed.append(moving_average([by_step.get(step, math.nan) for step in steps_all], window))
            curves[label] = (steps_all, per_seed)
        suffix = f" (moving avg. {window} steps)" if window > 1 else ""
        plot_curves(ax, curves, title=title + suffix, ylabel=ylabel, xlabel="RL step")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("training curves: mean ± s.e. over seeds")
    fig.tight_layout()
    save_figure(fig, output_dir / "compare_training.png", svg=svg)


def _plot_eval(data: dict[str, list[_RunData]], output_dir: Path, *, svg: bool) -> None:
    plt = import_pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    k = next((run.k for runs in data.values() for run in runs if run.k), "k")
    for ax, key, title in (
        (axes[0], mn.EVAL_MEAN_AT_K, f"held-out mean@{k} (= pass@1)"),
        (axes[1], mn.EVAL_PASS_AT_K, f"held-out pass@{k}"),
        (axes[2], mn.EVAL_DISTINCT_CORRECT, "distinct correct answers per prompt"),
    ):
        curves = {}
        for label, runs in data.items():
            series = []
            for run in runs:
                records = [r for r in _read_jsonl(run.run.run_dir / "metrics.jsonl") if key in r]
                series.append({int(r[mn.TRAIN_STEP]): float(r[key]) for r in records})
            steps = sorted({step for points in series for step in points})
            curves[label] = (steps, [[points.get(step, math.nan) for step in steps] for points in series])
        plot_curves(
            ax, curves, title=title, ylabel=title.split(" (")[0].replace("held-out ", ""), xlabel="RL step"
        )
    axes[0].legend(fontsize=8)
    fig.suptitle("held-out evaluation during training: mean ± s.e. over seeds", y=1.02)
    fig.tight_layout()
    save_figure(fig, output_dir / "compare_eval.png", svg=svg)
