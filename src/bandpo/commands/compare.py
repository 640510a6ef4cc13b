"""`bandpo compare`: several methods x seeds at equal budget, then report.md with tables and plots.

`--task lm` (default) trains the embedded tiny language model (or your --model / --dataset) once per method and
seed with `bandpo.training.train`; finished runs are skipped when the command is run again, so an interrupted
compare resumes. `--task bandit` runs the tabular softmax testbed (seconds, no language model).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

TASKS = ("lm", "bandit")
DEFAULT_SEEDS = {"lm": 3, "bandit": 6}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bandpo.experiments.methods_spec import DEFAULT_METHODS
    from bandpo.experiments.scenarios import DEFAULT_SCENARIOS, list_scenarios

    parser.add_argument(
        "--task",
        choices=TASKS,
        default="lm",
        help="lm (default): train and evaluate a policy; bandit: the tabular softmax testbed",
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
        type=int,
        default=None,
        metavar="N",
        help=f"number of seeds, 0..N-1 (default: {DEFAULT_SEEDS['lm']} for lm, {DEFAULT_SEEDS['bandit']} for bandit)",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="where runs, report.md and plots go (default: runs/compare-lm or runs/compare-bandit)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="lm: 60 RL steps and 128 evaluation prompts instead of 250 and 256 (about 15 min for the default "
        "5 methods x 3 seeds on a 2-core CPU); bandit: 100 steps instead of 200",
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
        "--jobs",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="lm: runs trained at the same time, one process each with one thread (default: 2 on a machine with "
        "2 or more cores); 1 trains in this process with progress bars",
    )
    parser.add_argument("--svg", action="store_true", help="also write SVG plots")


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from bandpo.experiments.methods_spec import parse_method_specs

    seeds_count = DEFAULT_SEEDS[args.task] if args.seeds is None else args.seeds
    if seeds_count < 1:
        raise ValueError(f"--seeds {seeds_count}: need at least 1 seed")
    if args.jobs < 1:
        raise ValueError(f"--jobs {args.jobs}: must be >= 1")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps {args.steps}: must be >= 1")
    seeds = list(range(seeds_count))
    specs = parse_method_specs(args.methods)
    output_dir = args.output_dir or Path("runs") / f"compare-{args.task}"
    if args.task == "bandit":
        return _run_bandit(args, specs, seeds, output_dir)
    return _run_lm(args, specs, seeds, output_dir)


def _run_bandit(args: argparse.Namespace, specs, seeds: list[int], output_dir: Path) -> int:
    import torch

    from bandpo.experiments.bandit_compare import headline_table, run_bandit_compare, scenario_tables
    from bandpo.experiments.scenarios import DEFAULT_SCENARIOS, get_scenario

    if args.model or args.dataset:
        raise ValueError("--model and --dataset apply to --task lm only")
    steps = args.steps if args.steps is not None else (100 if args.quick else None)
    names = args.scenario or DEFAULT_SCENARIOS
    scenarios = [get_scenario(name) for name in dict.fromkeys(names)]
    if steps is not None:
        scenarios = [scenario.replace(steps=steps) for scenario in scenarios]
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


def _run_lm(args: argparse.Namespace, specs, seeds: list[int], output_dir: Path) -> int:
    if args.scenario:
        raise ValueError("--scenario applies to --task bandit only")
    from bandpo.experiments.lm_compare import run_lm_compare

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
    )
    print(table)
    print(f"\nwrote {report}")
    return 0
