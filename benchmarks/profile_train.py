"""Where the time of a `bandpo train` run goes: wall seconds per phase, printed with the CPU model.

Runs `bandpo.training.train` in this process with timers wrapped around the library calls that make up a
run, and prints per phase its wall seconds (inclusive and self) and the process's CPU seconds (inclusive; on a
loaded machine the CPU seconds are the steadier figure):

    warm-up            supervised warm-up of the embedded model (0 with a cached warm-up)
    evaluation         held-out evaluation before and after (generate / score)
    rl                 trainer.train(): every RL step, split into
      rollout          TRL's _generate_and_score_completions: generate, rewards, old log-probs, bounds
      update           forward (log-probs), backward, grad clip, optimiser step
      checkpoint       checkpoint writing
      logging          metrics.jsonl / TensorBoard per RL step
    other              what no timer covers: imports, model loading, plots, TRL bookkeeping

The timers change nothing that is computed (they only read the clock), so the run's evaluation is the one
`bandpo train` with the same flags produces. Other processes on the machine slow it down: note the load
average printed with the result, and compare two settings side by side, not across calls.

    PYTHONPATH=src .venv/bin/python benchmarks/profile_train.py --max-steps 10          # short sample
    PYTHONPATH=src .venv/bin/python benchmarks/profile_train.py                          # the default run
    PYTHONPATH=src .venv/bin/python benchmarks/profile_train.py --cold --max-steps 10   # fresh warm-up cache
    PYTHONPATH=src .venv/bin/python benchmarks/profile_train.py --json out.json -- --method clip
    PYTHONPATH=src .venv/bin/python benchmarks/profile_train.py --max-steps 80 --autocast bf16  # force bf16
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any


class Phase:
    """The phase names this profiler prints, shared by train_default.py and compare_budget.py (a rename here
    renames them there too, instead of silently zeroing their tables)."""

    WARMUP = "warm-up"
    LOAD_MODEL = "load model"
    EVALUATION = "evaluation"
    EVAL_SCORE = "eval: score"
    GENERATE_EVAL = "generate (eval)"
    GENERATE_ROLLOUT = "generate (rollout)"
    RL = "rl (trainer.train)"
    ROLLOUT = "rollout"
    REWARDS = "rewards"
    BAND_METRICS = "band metrics"
    BOUNDS_AND_ROLLOUT = "bounds + rollout"
    OLD_LOGPS = "old log-probs"
    FORWARD = "forward (log-probs)"
    LOSS = "loss (forward + loss)"
    TRAINING_STEP = "training_step"
    BACKWARD = "backward"
    GRAD_CLIP = "grad clip"
    OPTIMISER = "optimiser step"
    CHECKPOINT = "checkpoint"
    LOGGING = "logging (metrics/tensorboard)"
    SAVE_MODEL = "save final model"
    PLOTS = "plots"


# the phases that are the model's own arithmetic (forward, backward, sampling, optimiser): what is left of an RL
# step if every other cost (TRL, HF Trainer, rewards, metrics, logging) took no time at all
MODEL_PHASES: tuple[str, ...] = (
    Phase.FORWARD,
    Phase.BACKWARD,
    Phase.GENERATE_ROLLOUT,
    Phase.OLD_LOGPS,
    Phase.OPTIMISER,
    Phase.GRAD_CLIP,
)


def cpu_model() -> str:
    """The CPU's model name (`bandpo.experiments.report.cpu_name`) and its core count."""
    from bandpo.experiments.report import cpu_name

    return f"{cpu_name()} ({os.cpu_count()} CPUs)"


def write_json(path: Path | None, report: dict) -> None:
    """Write `report` to `path` as indented JSON, creating its folder; nothing when `path` is None."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")


class PhaseTimer:
    """Inclusive and exclusive wall seconds of nested, named phases (a stack of open phases)."""

    def __init__(self) -> None:
        self.inclusive: dict[str, float] = defaultdict(float)
        self.exclusive: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.parent: dict[str, str] = {}
        self.stack: list[list[Any]] = []  # [name, start, child seconds, cpu start]

    def wrap(self, owner: Any, attribute: str, name: str | None = None, *, when: Any = None) -> None:
        """Time every call of ``owner.attribute`` as phase `name` (`when(args, kwargs)` may pick a name)."""
        original = getattr(owner, attribute)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            label = when(args, kwargs) if when is not None else name
            if label is None or any(entry[0] == Phase.WARMUP for entry in self.stack):
                # the warm-up is one phase: its own HF Trainer, backward, generate are not split out
                return original(*args, **kwargs)
            self.enter(label)
            try:
                return original(*args, **kwargs)
            finally:
                self.leave()

        setattr(owner, attribute, timed)

    def wrap_any(self, candidates: list[tuple[Any, str]], name: str) -> None:
        """`wrap` each (owner, attribute) of `candidates` that exists."""
        for owner, attribute in candidates:
            if owner is not None and hasattr(owner, attribute):
                self.wrap(owner, attribute, name)

    def enter(self, name: str) -> None:
        if self.stack:
            self.parent.setdefault(name, self.stack[-1][0])
        self.stack.append([name, time.perf_counter(), 0.0, time.process_time()])

    def leave(self) -> None:
        name, start, children, cpu_start = self.stack.pop()
        elapsed = time.perf_counter() - start
        if any(entry[0] == name for entry in self.stack):  # recursive call: counted by the outer one
            if self.stack:
                self.stack[-1][2] += elapsed
            return
        self.inclusive[name] += elapsed
        self.cpu[name] += time.process_time() - cpu_start
        self.exclusive[name] += elapsed - children
        self.calls[name] += 1
        if self.stack:
            self.stack[-1][2] += elapsed

    def rows(self) -> list[tuple[int, str]]:
        """(depth, name) in tree order: children after their parent, by first appearance."""
        order = list(self.inclusive)
        out: list[tuple[int, str]] = []

        def visit(name: str, depth: int) -> None:
            out.append((depth, name))
            for child in order:
                if self.parent.get(child) == name:
                    visit(child, depth + 1)

        for name in order:
            if name not in self.parent:
                visit(name, 0)
        return out


def instrument(timer: PhaseTimer) -> None:
    """Wrap the calls that make up a run (library internals: TRL 1.16, transformers 5)."""
    import torch
    from transformers import GenerationMixin, Trainer
    from trl import GRPOTrainer

    from bandpo.integrations.trl import BandPOTrainer
    from bandpo.training import evaluate as evaluate_module
    from bandpo.training import metrics_log, runner, warmup

    timer.wrap(warmup, "_warm_up", Phase.WARMUP)
    # the run's own steps, under the names of either layout of bandpo.training (runner.py alone, or split
    # into policy / run_dir / metrics_log modules): whichever exist are timed
    timer.wrap_any([(runner, "_load_policy"), (runner, "load_policy")], Phase.LOAD_MODEL)
    timer.wrap_any([(runner, "_run_evaluation"), (runner, "_evaluate_rows")], Phase.EVALUATION)
    timer.wrap(evaluate_module.GuardedReward, "score_one", Phase.EVAL_SCORE)

    def generate_phase(args: tuple, kwargs: dict) -> str:
        inside = [entry[0] for entry in timer.stack]
        return Phase.GENERATE_EVAL if Phase.EVALUATION in inside else Phase.GENERATE_ROLLOUT

    timer.wrap(GenerationMixin, "generate", when=generate_phase)
    timer.wrap(Trainer, "train", Phase.RL)
    timer.wrap(GRPOTrainer, "_generate_and_score_completions", Phase.ROLLOUT)
    timer.wrap(GRPOTrainer, "_calculate_rewards", Phase.REWARDS)
    timer.wrap(BandPOTrainer, "_log_band_metrics", Phase.BAND_METRICS)
    timer.wrap(BandPOTrainer, "_generate_and_score_completions", Phase.BOUNDS_AND_ROLLOUT)

    def logps_phase(args: tuple, kwargs: dict) -> str:
        return Phase.OLD_LOGPS if not torch.is_grad_enabled() else Phase.FORWARD

    timer.wrap(GRPOTrainer, "_get_per_token_logps_and_entropies", when=logps_phase)
    timer.wrap(GRPOTrainer, "_compute_loss", Phase.LOSS)
    timer.wrap(Trainer, "training_step", Phase.TRAINING_STEP)
    timer.wrap(torch.Tensor, "backward", Phase.BACKWARD)
    timer.wrap(torch.autograd, "backward", Phase.BACKWARD)
    timer.wrap(Trainer, "_clip_grad_norm", Phase.GRAD_CLIP)
    timer.wrap(torch.optim.AdamW, "step", Phase.OPTIMISER)
    timer.wrap(Trainer, "_save_checkpoint", Phase.CHECKPOINT)
    timer.wrap_any(
        [(getattr(runner, "_Run", None), "record_step"), (metrics_log.MetricsLog, "record_step")],
        Phase.LOGGING,
    )
    timer.wrap_any(
        [(runner, "_save_pretrained_atomic"), (runner, "save_pretrained_atomic")], Phase.SAVE_MODEL
    )
    timer.wrap(metrics_log, "plot_run", Phase.PLOTS)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=None, help="RL steps (default: the config's 250)")
    parser.add_argument("--cold", action="store_true", help="fresh warm-up cache (times the warm-up too)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    parser.add_argument("--keep", type=Path, default=None, help="run directory to keep (default: a temp dir)")
    parser.add_argument(
        "--ops",
        type=int,
        default=0,
        metavar="N",
        help="also profile the operators of RL steps 3 to 3+N with torch.profiler and print the top ones",
    )
    parser.add_argument(
        "--autocast",
        choices=("auto", "bf16", "off"),
        default="auto",
        help="bandpo train's --autocast: bf16 where the device has bf16 units (auto), always (bf16), or never "
        "(off); changes the run's numbers",
    )
    parser.add_argument("extra", nargs="*", help="bandpo train flags, after --  (e.g. -- --method clip)")
    args = parser.parse_args()

    timer = PhaseTimer()
    instrument(timer)
    op_profile = _profile_ops(args.ops) if args.ops else None
    from bandpo.cli import main as bandpo_main

    with tempfile.TemporaryDirectory(prefix="bandpo-profile-") as scratch:
        run_dir = args.keep or Path(scratch) / "run"
        flags = [
            "train",
            "--output-dir",
            str(run_dir),
            "--no-progress",
            "--json",
            "--autocast",
            args.autocast,
        ]
        flags += args.extra
        if args.max_steps is not None:
            flags += ["--max-steps", str(args.max_steps)]
        if args.cold:
            flags += ["--cache-dir", str(Path(scratch) / "cache")]
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        timer.enter("total")
        with contextlib.redirect_stdout(io.StringIO()):
            code = bandpo_main(flags)
        timer.leave()
        wall = time.perf_counter() - start
        if code != 0:
            return code
        summary = json.loads((run_dir / "summary.json").read_text())
    after = (summary.get("after") or {}).get("metrics", {})
    steps = summary["steps"]
    threads = summary["config"]["num_threads"]

    cpu = cpu_model()
    print(
        f"CPU: {cpu}; torch threads {threads}; load average (1 min) before/after "
        f"{load_before:.2f}/{os.getloadavg()[0]:.2f}"
    )
    print(
        f"bandpo train {' '.join(flags[3:])}: {steps} RL steps, wall {wall:.1f} s, "
        f"process CPU {timer.cpu['total']:.1f} s"
    )
    print(f"{'phase':44}{'wall s':>9}{'self s':>9}{'cpu s':>9}{'calls':>7}{'% wall':>8}")
    for depth, name in timer.rows():
        if name == "total":
            continue
        label = "  " * (depth - 1) + name
        print(
            f"{label:44}{timer.inclusive[name]:9.1f}{timer.exclusive[name]:9.1f}{timer.cpu[name]:9.1f}"
            f"{timer.calls[name]:7d}"
            f"{100 * timer.inclusive[name] / wall:7.1f}%"
        )
    print(f"{'other (not timed: imports, TRL bookkeeping)':44}{timer.exclusive['total']:9.1f}")
    rl = timer.inclusive.get("rl (trainer.train)", 0.0)
    if steps:
        rl_cpu = timer.cpu.get("rl (trainer.train)", 0.0)
        print(f"per RL step: wall {rl / steps:.2f} s, CPU {rl_cpu / steps:.2f} s  [{cpu}]")
        floor = sum(timer.cpu.get(name, 0.0) for name in MODEL_PHASES)
        print(
            f"model arithmetic (the floor: {', '.join(MODEL_PHASES)}): CPU {floor / steps:.2f} s per RL step, "
            f"{100 * floor / rl_cpu if rl_cpu else 0.0:.1f}% of the step  [{cpu}]"
        )
    print("after: " + ", ".join(f"{k.split('/')[-1]} {v:.4f}" for k, v in after.items()))
    if op_profile is not None and op_profile:
        print(f"torch.profiler, {args.ops} RL steps (self CPU time per operator):")
        print(op_profile[0].key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "cpu": cpu,
                    "flags": flags[3:],
                    "wall_s": wall,
                    "steps": steps,
                    "load_before": load_before,
                    "inclusive_s": timer.inclusive,
                    "exclusive_s": timer.exclusive,
                    "cpu_s": timer.cpu,
                    "calls": timer.calls,
                    "after": after,
                    "before": (summary.get("before") or {}).get("metrics", {}),
                    "warmup": summary.get("warmup"),
                    "final_metrics": summary.get("final_metrics", {}),
                },
                indent=2,
            )
        )
    return 0


def _profile_ops(steps: int) -> list[Any]:
    """Run torch.profiler over the training steps of RL steps 3 .. 3 + `steps` (filled in when done)."""
    import torch
    from transformers import Trainer

    done: list[Any] = []
    state = {"calls": 0, "profiler": None}
    original = Trainer.training_step

    def training_step(self: Any, *args: Any, **kwargs: Any) -> Any:
        per_rl_step = self.args.steps_per_generation * self.args.num_iterations  # training_step calls
        first, last = 2 * per_rl_step, (2 + steps) * per_rl_step
        if state["calls"] == first:
            state["profiler"] = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            state["profiler"].__enter__()
        try:
            return original(self, *args, **kwargs)
        finally:
            state["calls"] += 1
            if state["calls"] == last and state["profiler"] is not None:
                state["profiler"].__exit__(None, None, None)
                done.append(state["profiler"])

    Trainer.training_step = training_step
    return done


if __name__ == "__main__":
    sys.exit(main())
