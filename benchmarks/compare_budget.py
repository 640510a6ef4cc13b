"""How long the LM comparison (arms x seeds, default budget, 2 runs at a time) takes on this machine.

Measures two runs trained at the same time, as ``bandpo compare --jobs 2`` trains them (one process each,
one thread each, two different seeds, each warming up its own seed on a fresh cache), and splits each run's
CPU time (from the OS, imports included) into its warm-up, its RL steps and the rest (imports, evaluation,
plots). From these it projects the comparison's wall time on an idle machine of this kind, where two
single-threaded runs on two cores take about their CPU time each:

    wall ~= (seeds x warm-up + arms x seeds x (rest + steps x CPU per RL step)) / jobs

and the same figure times the wall/CPU ratio measured here (the machine's load at the time). With ``--full``
it runs the comparison itself (``bandpo compare``, ``--steps`` RL steps per run, ``--cold``: with a fresh warm-up
cache) and prints its wall time. A short sample's CPU per RL step
includes the trainer's set-up (about 0.05 s per step at 40 steps): ``--sample-steps 250`` gives the exact
figure. It also prints the floor: the comparison's wall time if only the model's own arithmetic (forward,
backward, sampling, optimiser: `MODEL_PHASES`) took time. The CPU model is printed beside every figure.

    PYTHONPATH=src .venv/bin/python benchmarks/compare_budget.py                 # 40-step sample, projection
    PYTHONPATH=src .venv/bin/python benchmarks/compare_budget.py --sample-steps 250
    PYTHONPATH=src .venv/bin/python benchmarks/compare_budget.py --full --output-dir runs/budget
    PYTHONPATH=src .venv/bin/python benchmarks/compare_budget.py --full --cold --steps 140 --output-dir runs/s140
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_train import MODEL_PHASES, Phase, cpu_model

TARGET_S = 30 * 60.0
ARMS: tuple[str, ...] = (
    "clip",
    "clip_higher",
    "dcpo",
    "band",
    "band_upper",
    "band:ratio_max=inf,dual_clip_c=20",  # the DPPO-equivalent arm of docs/results/lm-countdown-8
)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _sample(steps: int, scratch: Path) -> list[dict]:
    """Two profiled runs at once (band seed 0, clip seed 1), each with its own fresh warm-up."""
    script = Path(__file__).resolve().parent / "profile_train.py"
    cache = scratch / "cache"
    runs = []
    for method, seed in (("band", 0), ("clip", 1)):
        report = scratch / f"{method}-{seed}.json"
        command = [sys.executable, str(script), "--max-steps", str(steps), "--json", str(report), "--"]
        command += ["--method", method, "--seed", str(seed), "--cache-dir", str(cache)]
        log = (scratch / f"{method}-{seed}.log").open("w")
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        runs.append({"report": report, "start": time.perf_counter(), "process": process, "log": log})
    for run in runs:
        # os.wait4 gives this child's own CPU time (RUSAGE_CHILDREN would mix the two)
        _, status, usage = os.wait4(run["process"].pid, 0)
        run["wall"] = time.perf_counter() - run["start"]
        run["cpu"] = usage.ru_utime + usage.ru_stime
        run["log"].close()
        if os.waitstatus_to_exitcode(status) != 0:
            tail = Path(run["log"].name).read_text()[-3000:]
            raise SystemExit(f"sample run failed (exit {os.waitstatus_to_exitcode(status)}):\n{tail}")
        run["profile"] = json.loads(run["report"].read_text())
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", type=int, default=len(ARMS), help="methods compared (default 6)")
    parser.add_argument("--seeds", type=int, default=8, help="seeds per method (default 8)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2, one per core)")
    parser.add_argument(
        "--steps", type=int, default=250, help="RL steps per run (default 250, the default run)"
    )
    parser.add_argument("--sample-steps", type=int, default=40, help="RL steps of the two measured runs")
    parser.add_argument("--full", action="store_true", help="run the whole comparison with bandpo compare")
    parser.add_argument("--output-dir", type=Path, default=None, help="with --full: its output directory")
    parser.add_argument(
        "--cold", action="store_true", help="with --full: a fresh warm-up cache (every seed warms up)"
    )
    args = parser.parse_args()
    cpu = cpu_model()
    load_before = os.getloadavg()[0]
    if args.full:
        return _full(args, cpu, load_before)

    with tempfile.TemporaryDirectory(prefix="bandpo-budget-") as scratch:
        start = time.perf_counter()
        runs = _sample(args.sample_steps, Path(scratch))
        pair_wall = time.perf_counter() - start
    print(f"CPU: {cpu}; load average (1 min) before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f}")
    print(
        f"sample: 2 runs at once, {args.sample_steps} RL steps each, fresh warm-up each: {pair_wall:.1f} s wall"
    )
    print(f"{'run':12}{'wall s':>9}{'CPU s':>9}{'warm-up':>9}{'RL CPU':>9}{'/step':>8}{'rest':>8}")
    per_step, rest, warmup, ratio, model_step = [], [], [], [], []
    for run, name in zip(runs, ("band seed 0", "clip seed 1"), strict=True):
        cpu_s = run["profile"]["cpu_s"]
        warm, rl = cpu_s.get(Phase.WARMUP, 0.0), cpu_s.get(Phase.RL, 0.0)
        steps = run["profile"]["steps"]
        per_step.append(rl / steps)
        model_step.append(sum(cpu_s.get(phase, 0.0) for phase in MODEL_PHASES) / steps)
        rest.append(run["cpu"] - warm - rl)
        warmup.append(warm)
        ratio.append(run["wall"] / run["cpu"])
        print(
            f"{name:12}{run['wall']:9.1f}{run['cpu']:9.1f}{warm:9.1f}{rl:9.1f}{rl / steps:8.3f}{run['cpu'] - warm - rl:8.1f}"
        )
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    run_cpu = mean(rest) + args.steps * mean(per_step)
    total_cpu = args.seeds * mean(warmup) + args.arms * args.seeds * run_cpu
    idle_wall = total_cpu / args.jobs
    print(
        f"one run of {args.steps} steps: {run_cpu:.0f} s CPU (+ {mean(warmup):.0f} s warm-up, once per seed)  [{cpu}]"
    )
    print(
        f"projected {args.arms} arms x {args.seeds} seeds, {args.jobs} at a time, idle machine: "
        f"{idle_wall / 60:.1f} min (target {TARGET_S / 60:.0f} min)  [{cpu}]"
    )
    print(
        f"at this sample's load (wall/CPU {mean(ratio):.2f}): {idle_wall * mean(ratio) / 60:.1f} min  [{cpu}]"
    )
    # the floor: the model's own arithmetic per RL step, everything else (and the warm-ups) free
    floor_wall = args.arms * args.seeds * args.steps * mean(model_step) / args.jobs
    print(
        f"model arithmetic alone ({', '.join(MODEL_PHASES)}): {mean(model_step):.3f} s CPU per RL step of "
        f"{mean(per_step):.3f} ({100 * mean(model_step) / mean(per_step):.0f}%); with every other cost and the "
        f"warm-ups at zero the comparison would still take {floor_wall / 60:.1f} min  [{cpu}]"
    )
    return 0


def _full(args: argparse.Namespace, cpu: str, load_before: float) -> int:
    methods = list(ARMS[: args.arms])
    output = args.output_dir or Path(tempfile.mkdtemp(prefix="bandpo-budget-full-"))
    command = [sys.executable, "-m", "bandpo", "compare", "--methods", *methods, "--seeds", str(args.seeds)]
    command += ["--jobs", str(args.jobs), "--output-dir", str(output)]
    if args.steps != 250:
        command += ["--steps", str(args.steps)]
    environment = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="bandpo-budget-cache-") as cache:
        if args.cold:  # every seed warms up, as on a fresh machine
            environment["BANDPO_CACHE"] = cache
        cpu_before = _children_cpu()
        start = time.perf_counter()
        code = subprocess.run(command, check=False, env=environment).returncode
        wall = time.perf_counter() - start
    print(f"CPU: {cpu}; load average (1 min) before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f}")
    print(
        f"bandpo compare, {len(methods)} arms x {args.seeds} seeds, {args.steps} RL steps, {args.jobs} at a time, "
        f"{'cold' if args.cold else 'shared'} warm-up cache: {wall / 60:.1f} min wall, "
        f"{(_children_cpu() - cpu_before) / 60:.1f} min CPU (target {TARGET_S / 60:.0f} min wall)  [{cpu}]"
    )
    return code


if __name__ == "__main__":
    raise SystemExit(main())
