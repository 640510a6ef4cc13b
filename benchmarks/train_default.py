"""Wall and CPU time of the whole default `bandpo train` (warm-up included), per phase, with the CPU model.

Runs the default ``bandpo train`` in a subprocess (through ``benchmarks/profile_train.py``, whose timers
only read the clock), with a fresh warm-up cache (``--cold``, the default: what a first run costs) or the
shared one (``--warm``), and prints, each beside the CPU model:

- the wall time, and the process's CPU time (user + system, imports included) from the OS;
- per phase (warm-up, evaluation, generation, old log-probs, forward, backward, optimiser, TRL's own
  bookkeeping): wall and CPU seconds;
- the summary's before/after metrics, so a speed-up can be checked to leave them unchanged.

The run is single-threaded (``num_threads`` 1), so on an idle machine the wall time is about the CPU time.
Other processes on the machine slow the wall time down, not the CPU time much: the load average and the
wall/CPU ratio are printed with the result; quote CPU times when the ratio is well above 1. The budget is
5 minutes on a 2-core CPU.

    PYTHONPATH=src .venv/bin/python benchmarks/train_default.py            # cold cache: warm-up + RL + evaluation
    PYTHONPATH=src .venv/bin/python benchmarks/train_default.py --warm     # reuse the cached warm-up
    PYTHONPATH=src .venv/bin/python benchmarks/train_default.py -- --method clip   # extra bandpo train flags
    PYTHONPATH=src .venv/bin/python benchmarks/train_default.py --autocast bf16    # bf16 autocast, any CPU
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
from profile_train import Phase, cpu_model

BUDGET_S = 300.0
PHASES: tuple[tuple[str, str], ...] = (
    (Phase.WARMUP, "warm-up (cold cache only)"),
    (Phase.EVALUATION, "evaluation before + after"),
    (Phase.RL, "RL steps (trainer.train)"),
    (Phase.GENERATE_ROLLOUT, "  generation"),
    (Phase.OLD_LOGPS, "  old log-probs"),
    (Phase.FORWARD, "  update: forward"),
    (Phase.BACKWARD, "  update: backward"),
    (Phase.OPTIMISER, "  update: optimiser"),
    (Phase.PLOTS, "plots"),
)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm", action="store_true", help="reuse the warm-up cache instead of a fresh one")
    parser.add_argument(
        "--max-steps", type=int, default=None, help="RL steps (default: the default run's 250)"
    )
    parser.add_argument(
        "--autocast",
        choices=("auto", "bf16", "off"),
        default="auto",
        help="bf16 autocast: as bandpo decides it (where the device has bf16 units), forced on, or off",
    )
    parser.add_argument("extra", nargs="*", help="extra flags passed to bandpo train (after --)")
    args = parser.parse_args()
    cpu = cpu_model()
    with tempfile.TemporaryDirectory(prefix="bandpo-bench-") as scratch:
        report = Path(scratch) / "profile.json"
        command = [
            sys.executable,
            str(Path(__file__).resolve().parent / "profile_train.py"),
            "--json",
            str(report),
        ]
        if not args.warm:
            command.append("--cold")
        command += ["--autocast", args.autocast]
        if args.max_steps is not None:
            command += ["--max-steps", str(args.max_steps)]
        if args.extra:
            command += ["--", *args.extra]
        load_before = os.getloadavg()[0]
        cpu_before = _children_cpu()
        start = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
        process_cpu = _children_cpu() - cpu_before
        if result.returncode != 0:
            print(result.stdout[-2000:] + result.stderr[-3000:], file=sys.stderr)
            return result.returncode
        profile = json.loads(report.read_text())
    load_after = os.getloadavg()[0]
    cache = "warm" if args.warm else "cold"
    flags = " ".join(args.extra)
    print(
        f"bandpo train (default{' ' + flags if flags else ''}), {cache} warm-up cache, {profile['steps']} RL steps, "
        f"bf16 autocast {args.autocast}"
    )
    print(f"CPU: {cpu}; load average (1 min) before / after: {load_before:.2f} / {load_after:.2f}")
    print(
        f"wall time: {wall:.1f} s ({wall / 60:.2f} min; budget {BUDGET_S / 60:.0f} min)  [{cpu}]"
        f"\nprocess CPU time (user + system, imports included): {process_cpu:.1f} s "
        f"({process_cpu / 60:.2f} min)  [{cpu}]"
        f"\nwall / CPU: {wall / process_cpu:.2f} (about 1 on an idle machine; above 1: other processes took the CPU)"
    )
    inclusive, cpu_s = profile["inclusive_s"], profile["cpu_s"]
    print(f"{'phase':34}{'wall s':>9}{'CPU s':>9}")
    for key, label in PHASES:
        if key in inclusive:
            print(f"{label:34}{inclusive[key]:9.1f}{cpu_s[key]:9.1f}")
    rl_cpu = cpu_s.get("rl (trainer.train)", 0.0)
    if profile["steps"]:
        print(
            f"per RL step: wall {inclusive.get('rl (trainer.train)', 0.0) / profile['steps']:.2f} s, "
            f"CPU {rl_cpu / profile['steps']:.2f} s  [{cpu}]"
        )
    warmup = profile.get("warmup")
    if warmup:
        print(
            f"warm-up: {warmup['steps']} steps, sampled pass@1 {warmup['sampled_accuracy']:.3f}, "
            f"{warmup['seconds']:.1f} s wall, from cache: {warmup['from_cache']}"
        )
    before, after = profile.get("before", {}), profile.get("after", {})
    print(f"{'metric':28}{'before':>9}{'after':>9}")
    for key in after:
        print(f"{key:28}{before.get(key, float('nan')):9.4f}{after[key]:9.4f}")
    final = profile.get("final_metrics", {})
    print(
        f"final train reward {final.get('train/reward', float('nan')):.3f}, "
        f"entropy {final.get('train/entropy', float('nan')):.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
