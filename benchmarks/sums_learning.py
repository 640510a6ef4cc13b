"""Does SmolLM2 learn the Sums task under `bandpo train`? Reward and held-out accuracy over a short run, beside
a negative control with a learning rate of ~0.

Two runs of ``bandpo train --model smollm2-135m-instruct --task sums`` with the same seed, so the same prompts
and, at step 1, the same samples: one at ``--lr`` (default 3e-5), one at 1e-12 (the config refuses 0: an
update of ~1e-12 per weight changes no sampled token). Both run at once, one thread each. The control shows
how much the reward moves by chance alone (sampling noise along the same prompt schedule); learning is the
difference between the two. Prints, and with ``--output`` writes (results.json, report.md, reward.png), the
training reward per step, the mean of the first and last ``--window`` steps, and held-out mean@8 / pass@8
(32 prompts) before and after, beside the CPU model and the command.

    PYTHONPATH=src .venv/bin/python benchmarks/sums_learning.py       # 15 steps of 4 x 8, about 15 min on 2 idle cores
    PYTHONPATH=src .venv/bin/python benchmarks/sums_learning.py --steps 30 --output docs/results/sums-learning
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_train import cpu_model

CONTROL_LR = 1e-12


def _train_command(args: argparse.Namespace, lr: float, run_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bandpo",
        "train",
        "--model",
        args.model,
        "--task",
        "sums",
        "--method",
        args.method,
        "--max-steps",
        str(args.steps),
        "--prompts-per-step",
        str(args.prompts_per_step),
        "--num-generations",
        str(args.num_generations),
        "--num-iterations",
        "2",
        "--minibatches",
        "2",
        "--lr",
        f"{lr:g}",
        "--eval-prompts",
        "32",
        "--eval-samples",
        "8",
        "--seed",
        str(args.seed),
        "--save-every",
        str(args.steps),
        "--output-dir",
        str(run_dir),
        "--no-tensorboard",
        "--no-progress",
        "--json",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--method", default="band")
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--prompts-per-step", type=int, default=4)
    parser.add_argument("--num-generations", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--window", type=int, default=5, help="steps averaged at the start and at the end")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()

    from bandpo import metric_names as mn

    command = "PYTHONPATH=src .venv/bin/python benchmarks/sums_learning.py " + shlex.join(sys.argv[1:])
    arms = {"learning": args.lr, "control (lr ~0)": CONTROL_LR}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sums-learning-") as scratch:
        processes = {
            name: subprocess.Popen(
                _train_command(args, lr, Path(scratch) / name.split()[0]),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name, lr in arms.items()
        }
        results = {}
        for name, process in processes.items():
            stdout, stderr = process.communicate()
            if process.returncode != 0:
                print(f"{name}: bandpo train failed:\n{stderr[-3000:]}", file=sys.stderr)
                return 1
            summary = json.loads(stdout)
            metrics_path = Path(summary["paths"]["metrics"])
            records = [json.loads(line) for line in metrics_path.read_text().splitlines()]
            rewards = [r[mn.TRAIN_REWARD] for r in records if mn.TRAIN_REWARD in r]
            window = min(args.window, len(rewards))
            results[name] = {
                "lr": arms[name],
                "reward_per_step": rewards,
                "reward_first": sum(rewards[:window]) / window,
                "reward_last": sum(rewards[-window:]) / window,
                "before": summary["before"]["metrics"],
                "after": summary["after"]["metrics"],
                "wall_time_s": summary["wall_time_s"],
            }
    wall = time.perf_counter() - start
    report = {"command": command, "cpu": cpu_model(), "wall_time_s": wall, "arms": results, **vars(args)}
    report["output"] = str(args.output) if args.output else None
    lines = [
        "# Sums: SmolLM2 learns under `bandpo train`, against a learning rate of ~0",
        "",
        f"`{command}`, {report['cpu']}, {wall / 60:.1f} min wall (both runs at once). {args.method}, "
        f"{args.steps} RL steps of {args.prompts_per_step} prompts x {args.num_generations} samples, 2 iterations x "
        f"2 minibatches, seed {args.seed}; held-out: 32 prompts x 8 samples, temperature 1.",
        "",
        f"| arm | lr | train reward, first {args.window} steps | last {args.window} steps | held-out mean@8 "
        "before → after | pass@8 before → after |",
        "|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        before, after = result["before"], result["after"]
        lines.append(
            f"| {name} | {result['lr']:g} | {result['reward_first']:.3f} | {result['reward_last']:.3f} | "
            f"{before[mn.EVAL_MEAN_AT_K]:.3f} → {after[mn.EVAL_MEAN_AT_K]:.3f} | "
            f"{before[mn.EVAL_PASS_AT_K]:.3f} → {after[mn.EVAL_PASS_AT_K]:.3f} |"
        )
    lines += ["", "Training reward per step:", ""]
    for name, result in results.items():
        lines.append(f"- {name}: " + ", ".join(f"{value:.3f}" for value in result["reward_per_step"]))
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output is not None:
        args.output.mkdir(parents=True, exist_ok=True)
        (args.output / "results.json").write_text(json.dumps(report, indent=2) + "\n")
        (args.output / "report.md").write_text(text)
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots(figsize=(6, 3.6))
        for name, result in results.items():
            steps = range(1, len(result["reward_per_step"]) + 1)
            axis.plot(steps, result["reward_per_step"], marker="o", label=f"{name}, lr {result['lr']:g}")
        axis.set_xlabel("RL step")
        axis.set_ylabel("mean training reward")
        axis.set_title("SmolLM2-135M-Instruct on Sums")
        axis.legend()
        note = command.replace(" --output", "\n--output") + f"; {report['cpu']}"
        figure.text(0.005, 0.005, note, fontsize=5, color="0.35")
        figure.tight_layout(rect=(0, 0.05, 1, 1))
        figure.savefig(args.output / "reward.png", dpi=120)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
