"""`bandpo train`: train a policy with BandPO or a baseline through TRL's GRPOTrainer.

With no arguments it builds and warms up a tiny model on the embedded Countdown task (cached after the first
run), runs BandPO on the CPU with `TrainConfig`'s defaults and prints reward, accuracy and entropy before vs
after. The flags and their help are derived from the `TrainConfig` declarations (`SETTINGS`). Every flag
left out keeps the preset's value (``--preset default`` or ``paper``); ``--config FILE`` (YAML or JSON, a
run's config.json too: `bandpo.training.config_file`) sets fields between the preset and the flags, so a flag
overrides the file; ``--resume`` reads the run's own ``config.json`` and applies only the file and the flags
given (on a directory without a run it starts one, as `bandpo.training.train` does, and says so).
``--report-to`` takes TRL's logger names; ``--tensorboard`` / ``--no-tensorboard`` add or drop tensorboard
from whatever ``report_to`` the preset, file or flag gave.
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
from bandpo.training.config import (
    METHOD_FIELDS,
    PRESETS,
    SETTINGS,
    TrainConfig,
    default_text,
    method_option_names,
    settable_method_parameters,
    upgrade_report_tensorboard,
)
from bandpo.training.config_file import parse_dual_clip_c, read_config_file
from bandpo.training.loggers import normalize_report_to
from bandpo.training.run_dir import RunDir

CLI_ONLY_FLAGS = {"preset", "resume"}
"""Fields whose flag is not a plain "value or keep the preset's": the base preset itself, and a switch."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per `TrainConfig` field and per settable method parameter, from their declarations.

    Every value flag defaults to None (= keep the preset's value); its help shows the declared default.
    """
    from bandpo.methods import parameter_help

    groups: dict[str, argparse._ArgumentGroup] = {}
    for name, spec in SETTINGS.items():
        if spec.flag == "":  # not on the command line
            continue
        if spec.section not in groups:
            groups[spec.section] = parser.add_argument_group(spec.section)
        group = groups[spec.section]
        flags = (spec.flag or "--" + name.replace("_", "-"), *spec.aliases)
        if name == "preset":
            group.add_argument(
                *flags,
                choices=spec.valid_choices(),
                default=None,
                help=f"{spec.help} (default: the --config file's preset, else {TrainConfig.preset})",
            )
        elif name == "resume":
            group.add_argument(*flags, action="store_true", help=spec.help)
        elif name == "report_to":  # several names, TRL's way; checked by TrainConfig (commas allowed)
            group.add_argument(
                *flags,
                dest=name,
                nargs="+",
                metavar=spec.metavar,
                help=f"{spec.help} (default: {default_text(name)})",
            )
            group.add_argument(
                "--tensorboard",
                dest="tensorboard",
                action=argparse.BooleanOptionalAction,
                default=None,
                help="add tensorboard to report_to (or drop it: --no-tensorboard)",
            )
        elif spec.kind is bool:
            group.add_argument(
                *flags,
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"{spec.help} (default: {default_text(name)})",
            )
        else:
            group.add_argument(
                *flags,
                dest=name,
                type=_dual_clip_c if name == "dual_clip_c" else spec.kind,
                choices=spec.valid_choices(),
                metavar=spec.metavar,
                help=f"{spec.help} (default: {default_text(name)}{_limit(spec)})",
            )
        if name == "method":  # its parameters follow: every registered method's, with each one's default
            parameters = settable_method_parameters()
            for parameter_name in [*METHOD_FIELDS, *_option_flags()]:
                _add_method_flag(group, parameters[parameter_name], parameter_help(parameter_name))
    groups[RUN_SECTION].add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="settings from a YAML or JSON file (field names as in config.json; a run's config.json works); "
        "flags given override it",
    )
    groups[RUN_SECTION].add_argument("--no-progress", action="store_true", help="no progress bars")
    groups[RUN_SECTION].add_argument(
        "--json", action="store_true", help="print the summary as JSON instead of a table"
    )


RUN_SECTION = SETTINGS["output_dir"].section


def _limit(spec: Any) -> str:
    """A count's upper limit for its help ("; at most 1,024"), from its declaration."""
    return f"; at most {int(spec.high):,}" if spec.kind is int and math.isfinite(spec.high) else ""


def _option_flags() -> list[str]:
    """The method options with a flag of their own: a parameter named like another TrainConfig field
    (``seed``) has none (set it in method_options)."""
    return [name for name in method_option_names() if name not in SETTINGS]


def _add_method_flag(group: argparse._ArgumentGroup, parameter: Any, help_text: str) -> None:
    """``--<parameter>`` of a bound method: type and choices from the method's declaration."""
    flag = "--" + parameter.name.replace("_", "-")
    if parameter.kind is bool:
        group.add_argument(
            flag, dest=parameter.name, action=argparse.BooleanOptionalAction, default=None, help=help_text
        )
    else:  # a plain factory's parameter with a None default has no type: take the text
        kind = parameter.kind if parameter.kind in (float, str) else str
        group.add_argument(flag, dest=parameter.name, type=kind, choices=parameter.choices, help=help_text)


def _dual_clip_c(text: str) -> float:
    """``--dual-clip-c``: a number, or off (returned as inf here, stored as None: the run's "off")."""
    try:
        return parse_dual_clip_c(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'off', got {text!r}") from None


def build_config(args: argparse.Namespace) -> Any:
    """The `TrainConfig` of the parsed flags: the preset, then the ``--config`` file, then the flags given
    (for --resume: the run's config.json, then the file and the flags).

    ``--resume`` on a directory without a run (no config.json: never started, or killed at once) builds the
    config from the preset, the file and the flags and starts the run there, as `train(config)` with
    ``resume=True``.
    """
    # every flag is named after its TrainConfig field and defaults to None (= keep the preset's value);
    # `--dual-clip-c off` arrives as inf, which TrainConfig stores as None, its one "off" (null in config.json)
    overrides: dict[str, Any] = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(TrainConfig)
        if field.name not in CLI_ONLY_FLAGS and getattr(args, field.name, None) is not None
    }
    # a registered method's own parameters (no TrainConfig field): its method_options
    options = {name: getattr(args, name) for name in _option_flags() if getattr(args, name, None) is not None}
    file_values = read_config_file(args.config) if args.config is not None else {}
    options = {**file_values.pop("method_options", {}), **options}
    if options:
        overrides["method_options"] = options
    output_dir = overrides.get("output_dir", file_values.get("output_dir"))
    if output_dir is not None and not str(output_dir).strip():
        raise ValueError("--output-dir is empty; pass a folder for the run, or leave the flag out")
    base: dict[str, Any] | None = None
    if args.resume:
        if not output_dir:
            raise ValueError("--resume needs --output-dir RUN_DIR (the run to continue)")
        stored = RunDir(Path(output_dir).expanduser()).read_config()
        if stored is not None:
            base = {**stored, "resume": True}
    if base is None:
        preset = args.preset or file_values.get("preset") or TrainConfig.preset
        base = {**PRESETS[preset], "preset": preset}
        if args.resume:
            base["resume"] = True
    values = {**base, **file_values, **overrides}
    if args.preset is not None:
        values["preset"] = args.preset
    if args.tensorboard is not None:
        values["report_to"] = _toggle_tensorboard(values, on=args.tensorboard)
    return TrainConfig.from_dict(values)


def _toggle_tensorboard(values: dict[str, Any], *, on: bool) -> tuple[str, ...]:
    """``report_to`` of `values` with tensorboard added (``--tensorboard``) or dropped (``--no-tensorboard``)."""
    upgrade_report_tensorboard(values)  # a config.json written before report_to
    names = normalize_report_to(values["report_to"]) if "report_to" in values else TrainConfig.report_to
    if not isinstance(names, tuple):
        return names  # not valid: TrainConfig names it
    names = tuple(name for name in names if name != "tensorboard")
    return (*names, "tensorboard") if on else names


def starts_fresh(args: argparse.Namespace, config: Any) -> bool:
    """True when --resume names a directory without a run, so the run starts from the beginning."""
    return bool(args.resume and config.output_dir) and not RunDir.for_config(config).started


RARE_STRATEGY_TEXT = "'*'"  # the embedded tasks' rare strategy (multiplication), as the summary names it


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
    # the catalogue's summary rows, each value with 3 decimals (the summary's format, not a report's digits)
    for key in mn.RUN_SUMMARY_ROWS:
        if key in before or key in after:
            label = mn.metric(key).text("summary", k=k, rare=RARE_STRATEGY_TEXT)
            lines.append(f"{label:34}{_fmt(before.get(key)):>9}{_fmt(after.get(key)):>9}")
    if summary.before is None:
        lines.append("(no held-out prompts: evaluation skipped)")
    paths = summary.paths
    lines += [
        f"run directory: {paths['run_dir']}",
        f"  metrics {paths['metrics']}, plots {paths['plots']}/, model {paths['model']}/",
        f"  summary {paths['summary']}"
        + (
            f", TensorBoard: tensorboard --logdir {paths['tensorboard']}"
            if "tensorboard" in config.report_to
            else ""
        ),
    ]
    if (Path(paths["model"]) / "README.md").is_file():
        lines.append(
            f"  model card {Path(paths['model']) / 'README.md'} (hf upload USER/REPO {paths['model']})"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from bandpo.training.processes import offline_environment

    with offline_environment():  # before transformers is imported: nothing reaches the network
        from bandpo.training import train
        from bandpo.training.processes import Processes

        config = build_config(args)
        main = Processes.from_environment().is_main  # under torchrun / accelerate launch only the main prints
        if starts_fresh(args, config) and main:
            print(
                f"bandpo train: no run in {config.output_dir} yet; starting a new one there", file=sys.stderr
            )
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
