"""`bandpo train`: train a policy with BandPO or a baseline through TRL's GRPOTrainer.

With no arguments it builds and warms up a tiny model on the embedded Countdown task (cached after the first
run), runs BandPO for 250 RL steps on the CPU and prints reward, accuracy and entropy before vs after. Every
flag left out keeps the preset's value (``--preset default`` or ``paper``); ``--resume`` reads the run's own
``config.json`` and applies only the flags given (on a directory without a run it starts one, as
`bandpo.training.train` does, and says so).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

from bandpo import metric_names as mn
from bandpo.training.config import AGG_MODES, PRESETS, REWARD_NAMES, SCALE_REWARDS
from bandpo.training.tasks import EMBEDDED_TASKS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bandpo.losses import DUAL_CLIP_C
    from bandpo.methods import list_methods, method_parameter_specs, parameter_help
    from bandpo.training.config import METHOD_FIELDS

    method = parser.add_argument_group("method (per-token ratio bounds)")
    method.add_argument("--method", choices=list_methods(), help="bound method (default: band)")
    # one flag per method parameter; type, choices and help (with each method's default) from its declaration
    specs = {spec.name: spec for spec in method_parameter_specs("band")}
    for name in METHOD_FIELDS:
        spec, flag = specs[name], "--" + name.replace("_", "-")
        if spec.kind is bool:
            method.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=parameter_help(name)
            )
        else:
            method.add_argument(flag, type=spec.kind, choices=spec.choices, help=parameter_help(name))
    loss = parser.add_argument_group("loss")
    loss.add_argument(
        "--dual-clip-c",
        type=_dual_clip_c,
        metavar="C",
        help="dual-clip constant c > 1 (TRL's delta); 'off' or inf disables it, written as null in "
        f"config.json (default: {DUAL_CLIP_C:g})",
    )
    loss.add_argument(
        "--agg",
        choices=AGG_MODES,
        help="loss aggregation (default: seq_mean_token_mean)",
    )
    loss.add_argument(
        "--kl-coef", type=float, help="k3 KL weight to the initial policy (default: 0; paper 0.001)"
    )
    loss.add_argument("--entropy-coef", type=float, help="entropy bonus (default: 0)")
    loss.add_argument("--scale-rewards", choices=SCALE_REWARDS, help="advantage scaling (default: group)")
    schedule = parser.add_argument_group("schedule (a step is one rollout batch)")
    schedule.add_argument("--max-steps", type=int, help="RL steps (default: 250)")
    schedule.add_argument("--prompts-per-step", type=int, help="prompts per rollout batch (default: 32)")
    schedule.add_argument("--num-generations", type=int, help="samples per prompt (default: 8)")
    schedule.add_argument("--num-iterations", type=int, help="passes over each rollout batch (default: 2)")
    schedule.add_argument("--minibatches", type=int, help="optimiser steps per pass (default: 4)")
    schedule.add_argument(
        "--micro-batch-size",
        type=int,
        help="completions per forward/backward pass, accumulated into a minibatch; must divide it "
        "(default: the whole minibatch; paper preset 16)",
    )
    schedule.add_argument(
        "--learning-rate", "--lr", dest="learning_rate", type=float, help="Adam lr (default: 3e-4)"
    )
    schedule.add_argument("--temperature", type=float, help="sampling temperature (default: 1.0)")
    schedule.add_argument(
        "--max-completion-length", type=int, help="tokens per completion (default: 8 / 1024)"
    )
    data = parser.add_argument_group("model and data (local files only; nothing is downloaded)")
    data.add_argument(
        "--model",
        help="local HF checkpoint directory, or smollm2-135m-instruct (prepared once by `bandpo prepare-model`; "
        "default: the embedded tiny model)",
    )
    data.add_argument("--dataset", help="local .jsonl/.json/.parquet with prompt and answer columns")
    data.add_argument(
        "--task",
        choices=EMBEDDED_TASKS,
        help="embedded task without --dataset (default: countdown; sums needs --model)",
    )
    data.add_argument("--prompt-column", help="prompt column (default: prompt; also problem, question)")
    data.add_argument("--answer-column", help="answer column (default: answer; also solution, ground_truth)")
    data.add_argument("--reward", choices=REWARD_NAMES, help="verifier (default: countdown / math)")
    data.add_argument(
        "--reward-timeout", dest="reward_timeout_s", type=float, help="seconds per sample (default: 5)"
    )
    data.add_argument(
        "--chat-template",
        dest="use_chat_template",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="wrap prompts in the tokenizer's chat template when it has one (default: on)",
    )
    evaluation = parser.add_argument_group("evaluation (held-out prompts, before and after)")
    evaluation.add_argument("--eval-prompts", type=int, help="held-out prompts (default: 256)")
    evaluation.add_argument("--eval-samples", type=int, help="k samples per prompt (default: 16)")
    evaluation.add_argument("--eval-every", type=int, help="also evaluate every N steps (default: 0, off)")
    run = parser.add_argument_group("run")
    run.add_argument("--preset", choices=tuple(PRESETS), default="default", help="base settings")
    run.add_argument("--output-dir", help="run directory (default: runs/<method>-seed<seed>-<time>)")
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --output-dir from its last checkpoint (no run there: start one)",
    )
    run.add_argument("--save-every", type=int, help="RL steps between checkpoints (default: 25)")
    run.add_argument("--keep-checkpoints", type=int, help="checkpoints kept (default: 2)")
    run.add_argument("--seed", type=int, help="seed of data, warm-up, sampling and init (default: 0)")
    run.add_argument("--num-threads", type=int, help="torch CPU threads (default: 1)")
    run.add_argument("--cache-dir", help="warm-up cache (default: $BANDPO_CACHE or ~/.cache/bandpo)")
    run.add_argument(
        "--tensorboard",
        dest="report_tensorboard",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write TensorBoard events (default: on)",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")


DUAL_CLIP_OFF = ("off", "none", "inf", "+inf", "infinity")


def _dual_clip_c(text: str) -> float:
    """``--dual-clip-c``: a number, or off (returned as inf here, stored as None: the run's "off")."""
    if text.strip().lower() in DUAL_CLIP_OFF:
        return math.inf
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'off', got {text!r}") from None


def build_config(args: argparse.Namespace) -> Any:
    """The `TrainConfig` of the parsed flags (for --resume: the run's config plus the flags given).

    ``--resume`` on a directory without a run (no config.json: never started, or killed at once) builds the
    config from the preset and the flags and starts the run there, as `train(config)` with ``resume=True``.
    """
    from bandpo.training import TrainConfig

    # every flag is named after its TrainConfig field and defaults to None (= keep the preset's value)
    overrides = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(TrainConfig)
        if field.name not in {"preset", "resume"} and getattr(args, field.name, None) is not None
    }
    if args.output_dir is not None and not args.output_dir.strip():
        raise ValueError("--output-dir is empty; pass a folder for the run, or leave the flag out")
    if args.resume:
        if not args.output_dir:
            raise ValueError("--resume needs --output-dir RUN_DIR (the run to continue)")
        stored_path = Path(args.output_dir).expanduser() / "config.json"
        if stored_path.is_file():
            from bandpo.training.run_dir import read_json

            stored = read_json(stored_path, fix="delete the run directory and start again")
            if not isinstance(stored, dict):
                raise ValueError(f"{stored_path} does not hold a run's settings; delete it and start again")
            return _dual_clip_off(TrainConfig.from_dict({**stored, **overrides, "resume": True}))
    return _dual_clip_off(TrainConfig.from_preset(args.preset, **overrides, resume=args.resume or None))


def _dual_clip_off(config: Any) -> Any:
    """``--dual-clip-c off``/``inf`` as the config's "off" (None): null in config.json, read back as off."""
    return config.replace(dual_clip_c=None) if config.dual_clip_c == math.inf else config


def starts_fresh(args: argparse.Namespace) -> bool:
    """True when --resume names a directory without a run, so the run starts from the beginning."""
    return (
        bool(args.resume and args.output_dir)
        and not (Path(args.output_dir).expanduser() / "config.json").is_file()
    )


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def format_summary(summary: Any) -> str:
    """The short before/after table printed at the end of a run."""
    from bandpo.training.metrics_log import read_metrics

    config = summary.config
    rewards = [r[mn.TRAIN_REWARD] for r in read_metrics(summary.paths["metrics"]) if mn.TRAIN_REWARD in r]
    window = max(1, min(10, len(rewards) // 2))  # one step's reward is noisy: average a few steps
    first = sum(rewards[:window]) / window if rewards else None
    last = sum(rewards[-window:]) / window if rewards else None
    before = summary.before.metrics if summary.before else {}
    after = summary.after.metrics if summary.after else {}
    k = summary.after.k if summary.after else config.eval_samples
    task = (
        f"the embedded {config.task} task"
        if config.embedded
        else (config.dataset or f"the {config.task} task")
    )
    minutes, seconds = divmod(round(summary.wall_time_s), 60)
    lines = [
        f"bandpo train: {config.method} on {task}, {summary.steps} steps in {minutes}m{seconds:02d}s",
        f"{'':34}{'before':>9}{'after':>9}",
        f"{f'train reward (first/last {window} steps)':34}{_fmt(first):>9}{_fmt(last):>9}",
    ]
    rows = [
        (f"mean@{k}", mn.EVAL_MEAN_AT_K),
        (f"pass@{k}", mn.EVAL_PASS_AT_K),
        (f"maj@{k}", mn.EVAL_MAJ_AT_K),
        ("entropy (nats/token)", mn.EVAL_ENTROPY),
        ("distinct correct answers/prompt", mn.EVAL_DISTINCT_CORRECT),
        (f"pass@{k}, prompts needing '*'", mn.EVAL_RARE_PASS_AT_K),
        (f"mean@{k}, prompts needing '*'", mn.EVAL_RARE_MEAN_AT_K),
        ("samples using '*'", mn.EVAL_RARE_USAGE),
    ]
    for label, key in rows:
        if key in before or key in after:
            lines.append(f"{label:34}{_fmt(before.get(key)):>9}{_fmt(after.get(key)):>9}")
    if summary.before is None:
        lines.append("(no held-out prompts: evaluation skipped)")
    paths = summary.paths
    lines += [
        f"run directory: {paths['run_dir']}",
        f"  metrics {paths['metrics']}, plots {paths['plots']}/, model {paths['model']}/",
        f"  summary {paths['summary']}, TensorBoard: tensorboard --logdir {paths['tensorboard']}",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from bandpo.training.environment import offline_environment

    with offline_environment():  # before transformers is imported: nothing reaches the network
        from bandpo.training import train
        from bandpo.training.processes import Processes

        config = build_config(args)
        main = Processes.from_environment().is_main  # under torchrun / accelerate launch only the main prints
        if starts_fresh(args) and main:
            print(f"bandpo train: no run in {args.output_dir} yet; starting a new one there", file=sys.stderr)
        summary = train(config, progress=not args.no_progress)
    if not main:
        return 0
    failures = summary.reward_failures or {}
    if failures.get("errors"):
        print(
            f"bandpo train: warning: {failures['errors']} of {failures['samples']} training rewards failed and "
            f"scored 0 ({failures['timeouts']} timed out; last error: {failures['last_error']}); see "
            "reward/errors in metrics.jsonl",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        print(format_summary(summary))
    return 0
