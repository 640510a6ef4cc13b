"""What BandPO costs over stock TRL at a real vocabulary: `BandPOTrainer` vs `GRPOTrainer`, same settings, time
per RL step with SmolLM2-135M-Instruct (49,152 tokens), side by side in one process, and the bounds' share.

Both trainers get the same TRL arguments (`bandpo.training.trl_args.grpo_arguments`: the same sampling,
schedule, optimiser, dual-clip ``delta``), the same Sums prompts and verifier, and fresh copies of the same
weights; they differ only in the ratio bounds (stock: clip ε = 0.2; bandpo: ``--method``, default band). They
run in rounds, ABBA (stock, bandpo, bandpo, stock, ...), so drift in the machine's load hits both alike;
each round trains ``--steps`` RL steps and the first is left out (start-up). Per RL step: CPU seconds of the
process (``time.process_time``; one torch thread, so ≈ the work) and wall seconds; on CUDA, wall seconds
after a synchronize. The bounds' share is the time spent in the bound method (``BandPOTrainer.bound_method``,
once per generation batch) and in bandpo's diagnostics, over the step's time. Goal: ratio ≤ 1.01.

    PYTHONPATH=src .venv/bin/python benchmarks/trl_overhead.py                           # 2 rounds x 3 steps
    PYTHONPATH=src .venv/bin/python benchmarks/trl_overhead.py --rounds 4 --json out.json
    PYTHONPATH=src .venv/bin/python benchmarks/trl_overhead.py --device cuda --steps 11  # on a GPU
"""

from __future__ import annotations

import argparse
import copy
import itertools
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_train import cpu_model, write_json


def _clock(device: str) -> tuple[float, float]:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
    return time.process_time(), time.perf_counter()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--method", default="band")
    parser.add_argument("--steps", type=int, default=3, help="RL steps per round (the first is not timed)")
    parser.add_argument("--rounds", type=int, default=2, help="ABBA rounds of both trainers")
    parser.add_argument("--prompts-per-step", type=int, default=4)
    parser.add_argument("--num-generations", type=int, default=4)
    parser.add_argument("--max-completion-length", type=int, default=16)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--num-threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from bandpo.integrations.trl import BandPOTrainer
    from bandpo.training.config import TrainConfig
    from bandpo.training.data import adapt_rows, read_run_rows
    from bandpo.training.pretrained import resolve_model
    from bandpo.training.processes import offline_environment, quiet_and_threads, silence
    from bandpo.training.rewards import GuardedReward, get_verifier
    from bandpo.training.trl_args import grpo_arguments, trl_arguments

    command = "PYTHONPATH=src .venv/bin/python benchmarks/trl_overhead.py " + shlex.join(sys.argv[1:])
    config = TrainConfig(
        model=args.model,
        task="sums",
        method=args.method,
        max_steps=args.steps,
        prompts_per_step=args.prompts_per_step,
        num_generations=args.num_generations,
        num_iterations=2,
        minibatches=2,
        max_completion_length=args.max_completion_length,
        learning_rate=1e-6,
        eval_prompts=1,
        save_every=10_000,
        num_threads=args.num_threads,
    )

    class StepClock(TrainerCallback):
        """Time at the end of every RL step."""

        def __init__(self) -> None:
            self.marks: list[tuple[float, float]] = []

        def on_train_begin(self, *unused: Any, **kwargs: Any) -> None:
            self.marks = [_clock(args.device)]

        def on_step_end(self, unused_args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if state.global_step % config.optimizer_steps_per_rl_step == 0:
                self.marks.append(_clock(args.device))
            control.should_save = False
            return control

    class Timed:
        """Wraps a callable and adds up the time spent in it."""

        def __init__(self, function: Any) -> None:
            self.function, self.cpu, self.wall = function, 0.0, 0.0

        def __call__(self, *a: Any, **k: Any) -> Any:
            cpu, wall = _clock(args.device)
            try:
                return self.function(*a, **k)
            finally:
                cpu_end, wall_end = _clock(args.device)
                self.cpu += cpu_end - cpu
                self.wall += wall_end - wall

    results: dict[str, dict[str, list[float]]] = {
        name: {"cpu": [], "wall": [], "bounds_cpu": [], "metrics_cpu": []} for name in ("grpo", "bandpo")
    }
    with offline_environment(), quiet_and_threads(args.num_threads), tempfile.TemporaryDirectory() as scratch:
        path = resolve_model(args.model)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
        tokenizer.padding_side = "left"
        base = AutoModelForCausalLM.from_pretrained(
            path, local_files_only=True, dtype=torch.float32, trust_remote_code=False
        )
        train_rows, _ = read_run_rows(config.prompt_source)
        rows = adapt_rows(train_rows, tokenizer, use_chat_template=True)
        from datasets import Dataset

        dataset = Dataset.from_list([{"prompt": r.prompt, "answer": r.answer} for r in rows])
        reward = GuardedReward(get_verifier("sums").score, timeout_s=None, name="sums")
        order = [
            name
            for index in range(args.rounds)
            for name in (("grpo", "bandpo"), ("bandpo", "grpo"))[index % 2]
        ]
        for round_index, name in enumerate(order):
            model = copy.deepcopy(base).to(args.device)
            clock = StepClock()
            directory = Path(scratch) / f"{name}-{round_index}"
            if name == "grpo":
                grpo_args = GRPOConfig(
                    **grpo_arguments(config, directory), epsilon=0.2, delta=config.dual_clip_c
                )
                trainer: Any = GRPOTrainer(
                    model=model,
                    reward_funcs=[reward],
                    args=grpo_args,
                    train_dataset=dataset,
                    processing_class=tokenizer,
                    callbacks=[clock],
                )
            else:
                trainer = BandPOTrainer(
                    model=model,
                    reward_funcs=[reward],
                    args=trl_arguments(config, directory),
                    train_dataset=dataset,
                    processing_class=tokenizer,
                    callbacks=[clock],
                )
                trainer.bound_method = bounds = Timed(trainer.bound_method)
                trainer._log_band_metrics = metrics = Timed(trainer._log_band_metrics)
            silence(trainer)
            trainer.train()
            marks = clock.marks[1:]  # from the end of the first RL step
            for (cpu0, wall0), (cpu1, wall1) in itertools.pairwise(marks):
                results[name]["cpu"].append(cpu1 - cpu0)
                results[name]["wall"].append(wall1 - wall0)
            if name == "bandpo":
                steps = config.max_steps  # the bounds and metrics of every step, the first included
                results[name]["bounds_cpu"].append(bounds.cpu / steps)
                results[name]["metrics_cpu"].append(metrics.cpu / steps)
            print(
                f"round {round_index + 1}/{len(order)} {name}: "
                + ", ".join(f"{c:.2f}" for c in results[name]["cpu"][-(len(marks) - 1) :])
                + " s CPU per RL step",
                file=sys.stderr,
                flush=True,
            )
            del trainer, model
        reward.close()

    grpo_cpu, band_cpu = statistics.mean(results["grpo"]["cpu"]), statistics.mean(results["bandpo"]["cpu"])
    grpo_wall, band_wall = (
        statistics.mean(results["grpo"]["wall"]),
        statistics.mean(results["bandpo"]["wall"]),
    )
    bounds_share = statistics.mean(results["bandpo"]["bounds_cpu"]) / band_cpu
    metrics_share = statistics.mean(results["bandpo"]["metrics_cpu"]) / band_cpu
    report = {
        "command": command,
        "cpu": cpu_model(),
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(0),
        "load_average": os.getloadavg(),
        "settings": {
            "model": args.model,
            "method": args.method,
            "prompts_x_generations": f"{args.prompts_per_step} x {args.num_generations}",
            "max_completion_length": args.max_completion_length,
            "iterations_x_minibatches": "2 x 2",
            "rounds": args.rounds,
            "timed_steps_per_round": args.steps - 1,
        },
        "grpo_cpu_s_per_step": grpo_cpu,
        "bandpo_cpu_s_per_step": band_cpu,
        "cpu_ratio": band_cpu / grpo_cpu,
        "grpo_wall_s_per_step": grpo_wall,
        "bandpo_wall_s_per_step": band_wall,
        "wall_ratio": band_wall / grpo_wall,
        "bounds_share_of_step": bounds_share,
        "diagnostics_share_of_step": metrics_share,
        "per_step": results,
    }
    print(
        f"{report['cpu']} ({report['device']}), load average {report['load_average'][0]:.1f}; {command}\n"
        f"stock GRPOTrainer: {grpo_cpu:.2f} s CPU ({grpo_wall:.2f} s wall) per RL step; BandPOTrainer "
        f"({args.method}): {band_cpu:.2f} s CPU ({band_wall:.2f} s wall); ratio {band_cpu / grpo_cpu:.3f} CPU, "
        f"{band_wall / grpo_wall:.3f} wall (goal <= 1.01)\n"
        f"bounds: {100 * bounds_share:.3f}% of a BandPO step; bandpo's diagnostics: {100 * metrics_share:.3f}%"
    )
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
