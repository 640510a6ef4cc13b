"""What a LoRA adapter costs and saves per RL step: full fine-tuning vs ``--lora-r`` on SmolLM2-135M-Instruct.

Each arm runs in its own child Python (so each has its own peak RSS), one after the other, in ABBA rounds
(full, lora, lora, full, ...) so drift in the machine's load hits both alike. A child loads the model as
`bandpo train` does (`load_policy`), builds the run's own trainer (`bandpo.training.trl_args.build_trainer`,
with TRL's ``peft_config`` for the LoRA arm) on the Sums task and trains ``--steps`` RL steps; the first step is
left out of the per-step figures (start-up). Per RL step: CPU seconds of the process (``time.process_time``;
one torch thread, so ≈ the work) and wall seconds. Per arm: peak RSS of the process (``ru_maxrss``; the model
load included) and RSS after loading, trainable parameters, optimiser state and the size of the last
checkpoint on disk. Gradient checkpointing is on in both (`bandpo train`'s default with ``--model``).

    PYTHONPATH=src .venv/bin/python benchmarks/lora_cost.py                    # 1 round x 3 steps, r=16
    PYTHONPATH=src .venv/bin/python benchmarks/lora_cost.py --rounds 2 --json out.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_train import cpu_model, write_json

ARMS = ("full", "lora")


def _rss_mib() -> float:
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _folder_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def run_arm(args: argparse.Namespace) -> dict[str, Any]:
    """One arm in this process: load, build the run's trainer, train, measure."""
    from bandpo.training.config import TrainConfig
    from bandpo.training.data import adapt_rows, read_run_rows
    from bandpo.training.policy import load_policy
    from bandpo.training.processes import offline_environment, quiet_and_threads
    from bandpo.training.rewards import GuardedReward, get_verifier

    lora = {"lora_r": args.lora_r} if args.arm == "lora" else {}
    config = TrainConfig(
        model=args.model,
        task="sums",
        max_steps=args.steps,
        prompts_per_step=args.prompts_per_step,
        num_generations=args.num_generations,
        num_iterations=2,
        minibatches=2,
        max_completion_length=args.max_completion_length,
        learning_rate=1e-6,
        eval_prompts=1,
        save_every=10_000,  # the run's callback still saves the last step: that checkpoint is measured
        num_threads=args.num_threads,
        **lora,
    )
    marks: list[tuple[float, float]] = []
    with offline_environment(), quiet_and_threads(args.num_threads), tempfile.TemporaryDirectory() as scratch:
        from bandpo.training.trl_args import build_trainer

        policy = load_policy(config.policy_source, False)
        model, tokenizer = policy.model, policy.tokenizer
        rss_loaded = _rss_mib()
        train_rows, _ = read_run_rows(config.prompt_source)
        rows = adapt_rows(train_rows, tokenizer, use_chat_template=True)
        reward = GuardedReward(get_verifier("sums").score, timeout_s=None, name="sums")
        checkpoints = Path(scratch) / "checkpoints"
        trainer = build_trainer(
            config,
            model,
            tokenizer,
            rows,
            reward,
            checkpoints,
            lambda step, logs: marks.append((time.process_time(), time.perf_counter())),
        )
        parameters = list(trainer.model.parameters())
        trainable = sum(p.numel() for p in parameters if p.requires_grad)
        marks.append((time.process_time(), time.perf_counter()))
        try:
            trainer.train()
        finally:
            reward.close()
        optimiser_bytes = sum(
            tensor.numel() * tensor.element_size()
            for state in trainer.optimizer.state.values()
            for tensor in state.values()
            if hasattr(tensor, "numel")
        )
        checkpoint = next(checkpoints.glob("checkpoint-*"))
        timed = marks[1:]  # from the end of the first RL step
        return {
            "arm": args.arm,
            "cpu_s_per_step": [b[0] - a[0] for a, b in itertools.pairwise(timed)],
            "wall_s_per_step": [b[1] - a[1] for a, b in itertools.pairwise(timed)],
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_after_load_mib": rss_loaded,
            "parameters": sum(p.numel() for p in parameters),
            "trainable_parameters": trainable,
            "optimiser_state_mib": optimiser_bytes / 2**20,
            "checkpoint_mib": _folder_mib(checkpoint),
            "checkpoint_files": sorted(f.name for f in checkpoint.iterdir()),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3, help="RL steps per arm (the first is not timed)")
    parser.add_argument("--rounds", type=int, default=1, help="ABBA rounds of both arms")
    parser.add_argument("--prompts-per-step", type=int, default=4)
    parser.add_argument("--num-generations", type=int, default=4)
    parser.add_argument("--max-completion-length", type=int, default=16)
    parser.add_argument("--num-threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)  # a child: run this arm only
    args = parser.parse_args()
    if args.arm is not None:
        print(json.dumps(run_arm(args)))
        return 0

    command = "PYTHONPATH=src .venv/bin/python benchmarks/lora_cost.py " + shlex.join(sys.argv[1:])
    start_cpu, start_wall = time.process_time(), time.perf_counter()
    order = [arm for index in range(args.rounds) for arm in (ARMS, ARMS[::-1])[index % 2]]
    results: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    child_argv = [
        *("--model", args.model, "--lora-r", str(args.lora_r), "--steps", str(args.steps)),
        *("--prompts-per-step", str(args.prompts_per_step), "--num-generations", str(args.num_generations)),
        *("--max-completion-length", str(args.max_completion_length), "--num-threads", str(args.num_threads)),
    ]
    for index, arm in enumerate(order):
        done = subprocess.run(
            [sys.executable, __file__, *child_argv, "--arm", arm], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"lora_cost: the {arm} arm failed (exit status {done.returncode})")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        results[arm].append(result)
        print(
            f"round {index + 1}/{len(order)} {arm}: "
            + ", ".join(f"{c:.2f}" for c in result["cpu_s_per_step"])
            + f" s CPU per RL step, peak RSS {result['peak_rss_mib']:.0f} MiB\n{json.dumps(result)}",
            file=sys.stderr,
            flush=True,
        )
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    total_cpu = (
        time.process_time()
        - start_cpu
        + (children.ru_utime + children.ru_stime - children_before.ru_utime - children_before.ru_stime)
    )
    summary: dict[str, dict[str, float]] = {}
    for arm, runs in results.items():
        summary[arm] = {
            "cpu_s_per_step": statistics.mean(c for run in runs for c in run["cpu_s_per_step"]),
            "wall_s_per_step": statistics.mean(c for run in runs for c in run["wall_s_per_step"]),
            "peak_rss_mib": max(run["peak_rss_mib"] for run in runs),
            "rss_after_load_mib": max(run["rss_after_load_mib"] for run in runs),
            "trainable_parameters": runs[0]["trainable_parameters"],
            "parameters": runs[0]["parameters"],
            "optimiser_state_mib": runs[0]["optimiser_state_mib"],
            "checkpoint_mib": runs[0]["checkpoint_mib"],
        }
    full, lora = summary["full"], summary["lora"]
    report = {
        "command": command,
        "cpu": cpu_model(),
        "load_average": os.getloadavg(),
        "settings": {
            "model": args.model,
            "lora_r": args.lora_r,
            "prompts_x_generations": f"{args.prompts_per_step} x {args.num_generations}",
            "max_completion_length": args.max_completion_length,
            "iterations_x_minibatches": "2 x 2",
            "rounds": args.rounds,
            "timed_steps_per_arm": args.steps - 1,
            "gradient_checkpointing": True,
        },
        "summary": summary,
        "cpu_ratio_lora_over_full": lora["cpu_s_per_step"] / full["cpu_s_per_step"],
        "wall_ratio_lora_over_full": lora["wall_s_per_step"] / full["wall_s_per_step"],
        "benchmark_wall_s": time.perf_counter() - start_wall,
        "benchmark_cpu_s": total_cpu,
        "runs": results,
    }
    lines = [f"{report['cpu']}, load average {report['load_average'][0]:.1f}; {command}"]
    lines.append(f"{'':28}{'full':>12}{f'LoRA r={args.lora_r}':>12}")
    rows = [
        ("CPU s per RL step", "cpu_s_per_step", "{:.2f}"),
        ("wall s per RL step", "wall_s_per_step", "{:.2f}"),
        ("peak RSS (MiB)", "peak_rss_mib", "{:.0f}"),
        ("RSS after loading (MiB)", "rss_after_load_mib", "{:.0f}"),
        ("trainable parameters", "trainable_parameters", "{:,}"),
        ("optimiser state (MiB)", "optimiser_state_mib", "{:.1f}"),
        ("checkpoint on disk (MiB)", "checkpoint_mib", "{:.1f}"),
    ]
    for label, key, fmt in rows:
        lines.append(f"{label:28}{fmt.format(full[key]):>12}{fmt.format(lora[key]):>12}")
    lines.append(
        f"LoRA / full: {report['cpu_ratio_lora_over_full']:.3f} CPU, {report['wall_ratio_lora_over_full']:.3f} "
        f"wall per RL step; benchmark {report['benchmark_wall_s']:.0f} s wall, {total_cpu:.0f} s CPU"
    )
    print("\n".join(lines))
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
