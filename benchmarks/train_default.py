"""Wall time of the whole default `bandpo train` (warm-up included), and its before/after numbers.

Runs ``bandpo train`` with no method flags in a subprocess, with a fresh warm-up cache (``--cold``, the
default: what a first run costs) or the shared cache (``--warm``: what later runs cost), and prints the wall
time and the summary's before/after metrics. The budget is 10 minutes on a 2-core CPU; other processes on
the machine slow it down, so note the load average printed with the result.

    .venv/bin/python benchmarks/train_default.py            # cold cache: warm-up + RL + evaluation
    .venv/bin/python benchmarks/train_default.py --warm     # reuse the cached warm-up
    .venv/bin/python benchmarks/train_default.py -- --method clip   # extra flags for bandpo train
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm", action="store_true", help="reuse the warm-up cache instead of a fresh one")
    parser.add_argument("extra", nargs="*", help="extra flags passed to bandpo train (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bandpo-bench-") as scratch:
        command = [
            sys.executable,
            "-m",
            "bandpo",
            "train",
            "--output-dir",
            str(Path(scratch) / "run"),
            "--json",
        ]
        if not args.warm:
            command += ["--cache-dir", str(Path(scratch) / "cache")]
        command += args.extra
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
        if result.returncode != 0:
            print(result.stderr[-3000:], file=sys.stderr)
            return result.returncode
        summary = json.loads(result.stdout)
    cache = "warm" if args.warm else "cold"
    print(f"bandpo train (default{' ' + ' '.join(args.extra) if args.extra else ''}), {cache} cache")
    print(f"wall time: {wall:.1f} s ({wall / 60:.2f} min; budget 10 min)")
    print(
        f"load average (1 min) before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    )
    if summary.get("warmup"):
        w = summary["warmup"]
        print(
            f"warm-up: {w['steps']} steps, sampled pass@1 {w['sampled_accuracy']:.3f}, {w['seconds']:.1f} s, "
            f"from cache: {w['from_cache']}"
        )
    before, after = summary["before"]["metrics"], summary["after"]["metrics"]
    print(f"{'metric':28}{'before':>9}{'after':>9}")
    for key in before:
        print(f"{key:28}{before[key]:9.3f}{after[key]:9.3f}")
    final = summary["final_metrics"]
    print(
        f"final train reward {final.get('train/reward', float('nan')):.3f}, entropy {final.get('train/entropy', float('nan')):.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
