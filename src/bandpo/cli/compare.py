"""`bandpo compare`: several methods x seeds at equal budget, then report.md with tables and plots.

`--task countdown` (default; also `lm`) and `--task reach` train the embedded tiny language model on that
embedded task (or your --model / --dataset) once per method and seed with `bandpo.training.train`; finished
runs are skipped when the command is run again, so an interrupted compare resumes. `--sweep delta=...` varies
one method parameter; `--report-only DIR` rebuilds DIR/report.md from DIR/per_seed.json. `--task bandit` runs
the tabular softmax testbed (seconds, no language model).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bandpo.training.config import SETTINGS, Setting
from bandpo.training.tasks import DEFAULT_TASK, task_names

TASKS = ("lm", *task_names(), "bandit")  # lm: the default embedded task
DEFAULT_SEEDS = {"lm": 3, "bandit": 6}
PLAN_LIMIT = 1_000
"""Runs (arms x seeds, times scenarios for the bandit) a comparison plans without ``--large-plan``: the
preregistered study is 4 arms x 24 seeds per task; a plan beyond this is usually a typo in --seeds."""
JOBS = Setting(default=2, help="runs trained at the same time", section="compare", kind=int, low=1, high=256)
QUICK_BANDIT_STEPS = 100
"""``--quick``'s steps per bandit scenario (the LM tasks' quick budget is `lm_results.QUICK_SETTINGS`)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bandpo.experiments.arms import DEFAULT_METHODS
    from bandpo.experiments.bandit import DEFAULT_SCENARIOS, BanditScenario, list_scenarios
    from bandpo.experiments.lm_results import QUICK_SETTINGS
    from bandpo.experiments.studies import EMBEDDED_STUDY

    parser.add_argument(
        "--task",
        choices=TASKS,
        default="lm",
        help=f"lm (default, = {DEFAULT_TASK}) or an embedded task ("
        + ", ".join(task_names())
        + "): train and evaluate a policy; bandit: the tabular softmax testbed",
    )
    parser.add_argument(
        "--sweep",
        default=None,
        metavar="PARAM=V1,V2,...",
        help="LM tasks: one arm per value for every method that takes PARAM (e.g. delta=0.02,0.05,0.1,0.2); "
        "methods without it (clip) stay single reference arms; the report adds sweep_PARAM.png",
    )
    parser.add_argument(
        "--report-only",
        type=Path,
        default=None,
        metavar="DIR",
        help="rebuild DIR/report.md from DIR/per_seed.json (an LM compare) or DIR/results.json (bandit); no "
        "training",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=list(DEFAULT_METHODS),
        metavar="METHOD",
        help="methods to compare, each NAME or NAME:key=value,... (e.g. band:delta=0.1); default: "
        + " ".join(DEFAULT_METHODS),
    )
    parser.add_argument(
        "--seeds",
        type=parse_seeds,
        default=None,
        metavar="N|A-B",
        help=f"N: seeds 0..N-1; A-B: seeds A..B inclusive (default: {DEFAULT_SEEDS['lm']} for LM tasks, "
        f"{DEFAULT_SEEDS['bandit']} for bandit)",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="where runs, report.md and plots go (default: runs/compare-TASK)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"LM tasks: {QUICK_SETTINGS['max_steps']} RL steps and {QUICK_SETTINGS['eval_prompts']} evaluation "
        f"prompts instead of {SETTINGS['max_steps'].default} and {SETTINGS['eval_prompts'].default}, a smoke test: "
        f"at {QUICK_SETTINGS['max_steps']} steps and {DEFAULT_SEEDS['lm']} seeds the quick budget ranks noise; "
        f"bandit: {QUICK_BANDIT_STEPS} steps instead of {BanditScenario.steps}",
    )
    parser.add_argument(
        "--scenario",
        nargs="+",
        default=None,
        choices=list_scenarios(),
        metavar="NAME",
        help=f"bandit scenarios (default: {' '.join(DEFAULT_SCENARIOS)}; all: {' '.join(list_scenarios())})",
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="training steps per run (overrides the default)"
    )
    parser.add_argument(
        "--model",
        default=None,
        help="lm: a local HF checkpoint directory instead of the embedded tiny model (nothing is downloaded)",
    )
    parser.add_argument(
        "--dataset",
        default=None,
        help="lm: a local .jsonl/.json/.parquet file of prompts and answers instead of the embedded task",
    )
    parser.add_argument(
        "--set",
        dest="settings",
        nargs="+",
        default=None,
        metavar="FIELD=VALUE",
        help="LM tasks: TrainConfig fields fixed for every arm (e.g. learning_rate=3e-5 prompts_per_step=8 "
        "eval_prompts=32 eval_samples=8 for a real model; `bandpo train --help` lists them)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="LM tasks: TrainConfig fields fixed for every arm, from a YAML or JSON file as `bandpo train --config` "
        "reads it (not those the comparison sets: method, seed, output_dir, resume, max_steps, model, dataset, "
        "task); --set overrides it",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=min(JOBS.default, os.cpu_count() or 1),
        help=f"LM tasks: {JOBS.help}, one process each with one thread (default: {JOBS.default} on a machine "
        f"with {JOBS.default} or more cores); one progress bar with an ETA covers the whole plan",
    )
    parser.add_argument(
        "--reuse",
        type=Path,
        nargs="+",
        default=(),
        metavar="PER_SEED_JSON",
        help="LM tasks: finished runs of these per_seed.json files (same arm, seed, task and budget) are not "
        "trained again; their records join this comparison's per_seed.json with their source named",
    )
    parser.add_argument(
        "--collect",
        action="store_true",
        help="LM tasks: train nothing and write no report, only per_seed.json of the seeds whose every arm finished "
        "(to carry a preregistered study into a later session with --reuse without looking at its outcomes)",
    )
    parser.add_argument(
        "--confirmatory",
        nargs="+",
        type=Path,
        default=None,
        metavar="DIR",
        help="the preregistered confirmatory test of --study (docs/experiments.md) from one folder per task of "
        "the study (the embedded study: COUNTDOWN_DIR REACH_DIR), each with its per_seed.json: writes "
        "confirmatory.md to --output-dir; refused for any record not made with the study's settings, and before "
        "every task has all its seeds complete",
    )
    parser.add_argument(
        "--study",
        default=EMBEDDED_STUDY.name,
        help="--confirmatory: the declared study (bandpo.experiments.studies) whose preregistration is tested",
    )
    parser.add_argument("--svg", action="store_true", help="also write SVG plots")
    parser.add_argument(
        "--large-plan",
        action="store_true",
        help=f"run a plan of more than {PLAN_LIMIT:,} runs (refused without it: usually a typo in --seeds)",
    )


def parse_seeds(text: str) -> range:
    """`--seeds`: "N" is seeds 0..N-1, "A-B" seeds A..B inclusive (a comparison continued on new seeds).

    A range, not a list: nothing is made before `check_seeds` has checked it (an empty one too).
    """
    first, dash, last = text.partition("-")
    try:
        return range(int(first), int(last) + 1) if dash else range(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected N (seeds 0..N-1) or A-B (seeds A..B)") from None


def check_seeds(seeds: range) -> None:
    """One line unless `seeds` is not empty and each is a valid `TrainConfig` seed (`SETTINGS["seed"]`)."""
    if seeds.stop <= seeds.start:
        raise ValueError("--seeds: need at least 1 seed (N for seeds 0..N-1, or A-B with A <= B)")
    spec = SETTINGS["seed"]
    for seed in (seeds.start, seeds.stop - 1):
        if not spec.low <= seed <= spec.high:
            raise ValueError(
                f"--seeds: seed {seed} is out of range; {spec.int_range()} (N for seeds 0..N-1, or A-B)"
            )


def check_plan(runs: int, description: str, *, large_plan: bool) -> None:
    """Refuse a plan of more than `PLAN_LIMIT` runs unless `large_plan` (``--large-plan``) asks for it."""
    if runs > PLAN_LIMIT and not large_plan:
        raise ValueError(
            f"this comparison plans {runs:,} runs ({description}), more than {PLAN_LIMIT:,}; check --seeds, or "
            "pass --large-plan to run it anyway"
        )


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from bandpo.experiments.arms import parse_method_specs

    if args.report_only is not None:
        return _report_only(args)
    if args.confirmatory is not None:
        return _confirmatory(args)
    kind = "bandit" if args.task == "bandit" else "lm"
    seeds = range(DEFAULT_SEEDS[kind]) if args.seeds is None else args.seeds
    check_seeds(seeds)
    JOBS.check("--jobs", args.jobs)
    if args.steps is not None:
        SETTINGS["max_steps"].check("--steps", args.steps)
    specs = parse_method_specs(args.methods)
    output_dir = args.output_dir or Path("runs") / f"compare-{args.task}"
    if args.task == "bandit":
        if args.sweep:
            raise ValueError("--sweep applies to LM tasks only (drop --task bandit)")
        return _run_bandit(args, specs, seeds, output_dir)
    return _run_lm(args, specs, seeds, output_dir)


def _run_bandit(args: argparse.Namespace, specs, seeds: range, output_dir: Path) -> int:
    import torch

    from bandpo.experiments.bandit import (
        DEFAULT_SCENARIOS,
        get_scenario,
        headline_table,
        run_bandit_compare,
        scenario_tables,
    )

    if args.model or args.dataset:
        raise ValueError("--model and --dataset apply to --task lm (or another LM task) only")
    steps = args.steps if args.steps is not None else (QUICK_BANDIT_STEPS if args.quick else None)
    names = args.scenario or DEFAULT_SCENARIOS
    scenarios = [get_scenario(name) for name in dict.fromkeys(names)]
    if steps is not None:
        scenarios = [scenario.replace(steps=steps) for scenario in scenarios]
    shape = f"{len(scenarios)} scenario(s) x {len(specs)} method(s) x {len(seeds):,} seed(s)"
    check_plan(len(scenarios) * len(specs) * len(seeds), shape, large_plan=args.large_plan)
    seeds = list(seeds)
    torch.set_num_threads(1)  # tiny tensors: one thread is fastest and leaves the other cores alone
    results = run_bandit_compare(scenarios, specs, seeds, output_dir, progress=_progress, svg=args.svg)
    print("fraction of contexts that found the best action (mean ± s.e. over seeds):")
    print(headline_table(results, "found", 2))
    print()
    print("final expected reward:")
    print(headline_table(results, "final_expected_reward", 3))
    for name, result in results["scenarios"].items():
        print(f"\nscenario {name}:")
        print(scenario_tables(name, result))
    print(f"\nwrote {output_dir / 'report.md'} ({results['wall_time_s']:.1f} s)")
    return 0


def _run_lm(args: argparse.Namespace, specs, seeds: range, output_dir: Path) -> int:
    if args.scenario:
        raise ValueError("--scenario applies to --task bandit only")
    from bandpo.experiments.lm_compare import run_lm_compare

    sweep = None
    if args.sweep:
        from bandpo.experiments.arms import expand_sweep, parse_sweep

        param, values = parse_sweep(args.sweep)
        specs = expand_sweep(specs, param, values)
        sweep = {"param": param, "values": values}
    shape = f"{len(specs)} arm(s) x {len(seeds):,} seed(s)"
    check_plan(len(specs) * len(seeds), shape, large_plan=args.large_plan)
    seeds = list(seeds)
    task = None if args.task == "lm" else args.task
    extra_settings = shared_settings(args)
    if task is not None and args.dataset:
        raise ValueError(f"--task {task} is an embedded task; with --dataset use --task lm")
    report, table = run_lm_compare(
        specs,
        seeds,
        output_dir,
        quick=args.quick,
        steps=args.steps,
        model=args.model,
        dataset=args.dataset,
        progress=_progress,
        svg=args.svg,
        jobs=args.jobs,
        task=task,
        sweep=sweep,
        reuse=args.reuse,
        collect_only=args.collect,
        extra_settings=extra_settings,
    )
    if args.collect:
        print(f"wrote {report} (whole seeds only; no report)")
        return 0
    print(table)
    print(f"\nwrote {report}")
    return 0


def _confirmatory(args: argparse.Namespace) -> int:
    from bandpo.experiments.confirmatory import confirmatory_report
    from bandpo.experiments.studies import get_study
    from bandpo.training._atomic import write_text_atomic

    study = get_study(args.study)
    if len(args.confirmatory) != len(study.tasks):
        raise ValueError(
            f"--confirmatory: the study {study.name!r} needs {len(study.tasks)} folder(s), one per task in the order "
            f"{' '.join(t.upper() + '_DIR' for t in study.tasks)}; got {len(args.confirmatory)}"
        )
    text = confirmatory_report(dict(zip(study.tasks, args.confirmatory, strict=True)), study=study)
    output_dir = args.output_dir or Path("runs") / "confirmatory"
    output_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(output_dir / "confirmatory.md", text)
    print(text)
    return 0


COMPARISON_FIELDS = frozenset(
    {"method", "seed", "output_dir", "resume", "max_steps", "model", "dataset", "task"}
)
"""TrainConfig fields the comparison sets itself (its own flags, or --methods): not in --set or --config."""


def shared_settings(args: argparse.Namespace) -> dict[str, object]:
    """The TrainConfig fields fixed for every arm: ``--config``'s, then ``--set``'s over them."""
    return {**_file_settings(args.config), **_parse_settings(args.settings or [])}


def _file_settings(path: Path | None) -> dict[str, object]:
    """``--config FILE``: the file's settings (checked as `bandpo train --config` checks them)."""
    if path is None:
        return {}
    from bandpo.training.config_file import read_config_file

    settings = read_config_file(path)
    fixed = sorted(set(settings) & COMPARISON_FIELDS)
    if fixed:
        raise ValueError(
            f"{path}: {', '.join(fixed)} set by the comparison itself; drop them from the file and use the "
            "comparison's own flags (--methods, --seeds, --output-dir, --steps, --model, --dataset, --task)"
        )
    return settings


def _parse_settings(items: list[str]) -> dict[str, object]:
    """``--set FIELD=VALUE ...`` as TrainConfig overrides (values read as bool, int, float or text)."""
    from dataclasses import fields

    from bandpo.experiments.arms import parse_value
    from bandpo.training import TrainConfig

    known = {field.name for field in fields(TrainConfig)}
    settings: dict[str, object] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in known:
            raise ValueError(
                f"--set {item!r}: expected FIELD=VALUE with a TrainConfig field ({sorted(known)})"
            )
        if name in COMPARISON_FIELDS:
            raise ValueError(f"--set {name}: set by the comparison itself; use its own flag (or --methods)")
        settings[name] = parse_value(value.strip())
    return settings


def _report_only(args: argparse.Namespace) -> int:
    bandit_results = args.report_only / "results.json"
    if bandit_results.exists() and not (args.report_only / "per_seed.json").exists():
        from bandpo.experiments.bandit import read_bandit_results, write_bandit_report

        report = write_bandit_report(read_bandit_results(bandit_results), args.report_only, svg=args.svg)
        print(f"wrote {report}")
        return 0
    from bandpo.experiments.lm_compare import report_only

    report, table = report_only(args.report_only, svg=args.svg)
    print(table)
    print(f"\nwrote {report}")
    return 0
