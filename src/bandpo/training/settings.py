"""The table of ``bandpo train``'s settings: every `TrainConfig` field, declared once.

Each field is declared with `setting` (its default, one line of help, its valid values and its CLI flag: a
`bandpo.training.setting.Setting`, the one declaration type a method's parameters and the warm-up's values use
too). Everything that shows or checks a field reads that declaration (`SETTINGS`): `TrainConfig.__post_init__`,
the ``bandpo train`` flags and their help (`bandpo.cli.train`), the field list of `TrainConfig`'s docstring, and
the functions that take a run's default (`bandpo.training.rewards.GuardedReward`, `bandpo.training.evaluate`).
The bound-method fields (``divergence``, ``delta``, ...) are declared by the methods themselves
(`bandpo.methods`): their defaults are band's, their help and valid values the methods'; a registered method's
own parameter that has no field here goes in ``method_options``. The ``warmup_*`` fields set values the
warm-up declares (`bandpo.training.warmup.WarmupConfig`).

`TrainSettings` holds the fields only, and `PRESETS` the values each preset puts in place of their defaults;
`bandpo.training.config.TrainConfig` applies a preset and adds the checks across fields and the derived values.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from bandpo.declarations import declarations
from bandpo.integrations.trl_names import AGG_TO_LOSS_TYPE
from bandpo.losses import AGG_MODES as LOSS_AGG_MODES
from bandpo.losses import DUAL_CLIP_C
from bandpo.methods import list_methods, method_defaults_table
from bandpo.methods import settable_parameters as settable_method_parameters
from bandpo.training.loggers import LOGGERS
from bandpo.training.pretrained import PRETRAINED
from bandpo.training.rewards import ANSWER_COLUMN, REWARD_TIMEOUT_S, reward_names
from bandpo.training.setting import Setting, setting, setting_from
from bandpo.training.tasks import DEFAULT_TASK, get_task, task_names
from bandpo.training.warmup import WARMUP_DECLARATIONS

__all__ = [
    "AGG_MODES",
    "ALL_LINEAR",
    "AUTOCAST_MODES",
    "DATASET_COMPLETION_LENGTH",
    "LORA_FIELDS",
    "MAX_PROMPTS",
    "MAX_SAMPLES_PER_PROMPT",
    "MAX_SEED",
    "MAX_STEPS",
    "METHOD_FIELDS",
    "PRESETS",
    "RUN_INDEPENDENT_FIELDS",
    "SCALE_REWARDS",
    "SETTINGS",
    "TrainSettings",
    "default_text",
    "fields_doc",
    "method_option_names",
    "settable_method_parameters",
]

AGG_MODES: tuple[str, ...] = tuple(mode for mode in LOSS_AGG_MODES if mode in AGG_TO_LOSS_TYPE)
"""The aggregations `bandpo train` offers: `bandpo.losses.AGG_MODES` (the one list) less those TRL, which runs
the training loop, has no ``loss_type`` for (``seq_mean_token_sum``)."""
SCALE_REWARDS: tuple[str, ...] = ("group", "batch", "none")
AUTOCAST_MODES: tuple[str, ...] = ("auto", "bf16", "off")
"""``autocast``: bf16 autocast decided by the device (`bandpo.training.policy.autocast_dtype`), always, or never."""
_BAND_DEFAULTS: dict[str, Any] = method_defaults_table()["band"]  # the method's declaration is the one source
METHOD_FIELDS: tuple[str, ...] = tuple(_BAND_DEFAULTS)
"""TrainConfig fields that are bound-method parameters (passed when the method accepts them): band's, which
cover every built-in method's. Other registered methods' parameters go in ``method_options``."""
LORA_FIELDS: tuple[str, ...] = ("lora_alpha", "lora_dropout", "lora_target_modules")
"""The LoRA settings that only apply with ``lora_r`` (set one without it: an error)."""
ALL_LINEAR = "all-linear"
"""peft's name for "every linear layer but the output layer" in ``target_modules``."""
RUN_INDEPENDENT_FIELDS: frozenset[str] = frozenset(
    {"resume", "output_dir", "num_threads", "report_to", "project", "cache_dir", "eval_before_file"}
)
"""Fields that do not change what a run computes: a resumed or re-planned run may differ in them."""

# the limits of the counts (`Setting.high`), shared by the settings and commands that count the same thing
MAX_STEPS = 1_000_000
MAX_PROMPTS = 16_384  # per rollout batch
MAX_SAMPLES_PER_PROMPT = 1_024  # num_generations, eval_samples, `bandpo tokens --samples`
MAX_EVAL_PROMPTS = 100_000
MAX_LORA_RANK = 65_536  # above any model's hidden size: a full-rank adapter of the widest published layer
MAX_SEED = 2**32 - 1  # numpy's seeds (transformers' set_seed seeds numpy) are 32-bit
DATASET_COMPLETION_LENGTH = 1024
"""``max_completion_length``'s default with ``--dataset`` (room to reason); an embedded task has its own."""

# the sections of the field list and of `bandpo train --help`
METHOD = "method (per-token ratio bounds)"
LOSS = "loss"
SCHEDULE = "schedule (a step is one rollout batch)"
DATA = "model and data (local files only; nothing is downloaded)"
LORA = "LoRA adapter (TRL's peft_config; needs pip install 'bandpo[lora]')"
EVALUATION = "evaluation (held-out prompts, before and after)"
RUN = "run"
WARMUP = "warm-up of the embedded model"


def _method_field(name: str, *, per_method: bool = False) -> Any:
    """A bound-method field: band's default (None if `per_method`: each method's own); its help and valid values
    are the methods' declaration (`settable_method_parameters`), checked by the method itself."""
    return field(default=None if per_method else _BAND_DEFAULTS[name])


def _warmup_setting(name: str, **declaration: Any) -> Any:
    """A ``warmup_<name>`` field: the warm-up's declaration of `name`, not on the command line."""
    return setting_from(WARMUP_DECLARATIONS[name], WARMUP, flag="", **declaration)


def _completion_length_text() -> str:
    by_length: dict[int, list[str]] = {}
    for name in task_names():
        by_length.setdefault(get_task(name).completion_length, []).append(name)
    tasks = "; ".join(f"{length} for {', '.join(names)}" for length, names in by_length.items())
    return f"the task's: {tasks}; {DATASET_COMPLETION_LENGTH} with --dataset"


@dataclass(frozen=True, kw_only=True)
class TrainSettings:
    """The fields of a training run (`bandpo.training.config.TrainConfig` is the class to use)."""

    # The field order is config.json's key order (`to_dict`): a new field goes where it belongs, the others
    # keep their places. method (the bound-method fields are declared by the methods, `bandpo.methods`)
    method: str = setting("band", "bound method", METHOD, choices=list_methods)
    divergence: str = _method_field("divergence")
    delta: float = _method_field("delta")
    ratio_max: float = _method_field("ratio_max")
    relax: bool = _method_field("relax")
    eps_low: float | None = _method_field("eps_low", per_method=True)
    eps_high: float | None = _method_field("eps_high", per_method=True)
    lower_side: str = _method_field("lower_side")
    upper_side: str = _method_field("upper_side")
    method_options: dict[str, Any] | None = None
    # loss
    agg: str = setting(
        "seq_mean_token_mean",
        "loss aggregation: seq_mean_token_mean (GRPO, paper), token_mean, seq_mean_token_sum_norm (Dr.GRPO)",
        LOSS,
        choices=AGG_MODES,
    )
    dual_clip_c: float | None = setting(
        DUAL_CLIP_C,
        "dual-clip constant c > 1 (TRL's delta); 'off' or inf disables it, written as null in config.json",
        LOSS,
        optional=True,
        low=1.0,
        low_open=True,
        metavar="C",
    )
    kl_coef: float = setting(
        0.0, "k3 KL weight to the initial policy (0 skips the reference model)", LOSS, low=0.0
    )
    entropy_coef: float = setting(0.0, "entropy bonus", LOSS, low=0.0)
    scale_rewards: str = setting(
        "group",
        "advantage scaling: group (std per group, paper), batch, none (Dr.GRPO)",
        LOSS,
        choices=SCALE_REWARDS,
    )
    # schedule
    # counts: each has a limit far above any published recipe (the paper: 1,020 steps of 256 prompts x 16
    # samples, k = 32), so only a slip (an extra zero, a seed pasted into a count) meets it
    max_steps: int = setting(250, "RL steps (generation batches)", SCHEDULE, low=1, high=MAX_STEPS)
    prompts_per_step: int = setting(32, "prompts per rollout batch", SCHEDULE, low=1, high=MAX_PROMPTS)
    num_generations: int = setting(
        8,
        "samples per prompt",
        SCHEDULE,
        low=2,
        high=MAX_SAMPLES_PER_PROMPT,
        fix="GRPO needs at least 2 samples per prompt",
    )
    num_iterations: int = setting(2, "passes over each rollout batch", SCHEDULE, low=1, high=64)
    minibatches: int = setting(4, "optimiser steps per pass", SCHEDULE, low=1, high=MAX_PROMPTS)
    micro_batch_size: int | None = setting(
        None,
        "completions per forward/backward pass, accumulated into a minibatch; must divide it",
        SCHEDULE,
        kind=int,
        low=1,
        high=MAX_PROMPTS * MAX_SAMPLES_PER_PROMPT,
        fix="use an integer >= 1 or None (the default)",
        default_text="the whole minibatch",
    )
    gradient_checkpointing: bool | None = setting(
        None,
        "recompute activations in the backward pass: less memory, one more forward pass per update",
        SCHEDULE,
        kind=bool,
        default_text="on with --model (TRL's default), off for the embedded model",
    )
    learning_rate: float = setting(3e-4, "Adam lr", SCHEDULE, low=0.0, low_open=True, aliases=("--lr",))
    max_grad_norm: float = setting(
        1.0, "gradient-norm clip", SCHEDULE, low=0.0, fix="use a value >= 0 (0 disables clipping)", flag=""
    )
    temperature: float = setting(1.0, "sampling temperature", SCHEDULE, low=0.0, low_open=True)
    max_completion_length: int | None = setting(
        None,
        "tokens per completion",
        SCHEDULE,
        kind=int,
        low=1,
        high=131_072,
        fix="use an integer >= 1 or None (the default)",
        default_text=_completion_length_text(),
    )
    # model and data
    model: str | None = setting(
        None,
        f"local HF checkpoint directory, or a short name prepared once by `bandpo prepare-model` "
        f"({', '.join(sorted(PRETRAINED))})",
        DATA,
        kind=str,
        default_text="the embedded tiny model",
    )
    dataset: str | None = setting(
        None,
        "local .jsonl/.json/.parquet with prompt and answer columns",
        DATA,
        kind=str,
        default_text="the embedded task",
    )
    task: str = setting(
        DEFAULT_TASK, "embedded task without --dataset (sums needs --model)", DATA, choices=task_names
    )
    prompt_column: str = setting(
        "prompt", "prompt column (also problem, question)", DATA, fix="use a non-empty column name"
    )
    answer_column: str = setting(
        ANSWER_COLUMN, "answer column (also solution, ground_truth)", DATA, fix="use a non-empty column name"
    )
    reward: str | None = setting(
        None,
        "verifier",
        DATA,
        kind=str,
        choices=reward_names,
        default_text="the embedded task's; math with --dataset",
    )
    reward_timeout_s: float | None = setting(
        REWARD_TIMEOUT_S,
        "seconds per sample (a timeout scores 0 and is counted)",
        DATA,
        optional=True,
        low=0.0,
        low_open=True,
        fix="use seconds > 0 or None",
        flag="--reward-timeout",
    )
    use_chat_template: bool = setting(
        True, "wrap prompts in the tokenizer's chat template when it has one", DATA, flag="--chat-template"
    )
    # LoRA adapter (`bandpo.training.lora`; docs/trl.md, "LoRA")
    lora_r: int | None = setting(
        None,
        "train a LoRA adapter of this rank (the base weights stay frozen) instead of every weight",
        LORA,
        kind=int,
        low=1,
        high=MAX_LORA_RANK,
        fix="use a rank >= 1 (16 is TRL's default), or leave it out to train every weight",
        default_text="off: every weight is trained",
    )
    lora_alpha: int = setting(
        32,
        "LoRA scaling numerator: the adapter's update is scaled by alpha / r",
        LORA,
        low=1,
        high=2 * MAX_LORA_RANK,  # alpha = 2r is a common choice
        default_text="32 (TRL's)",
    )
    lora_dropout: float = setting(
        0.0,
        "dropout on the adapter's input; above 0 the model's own dropout is on too (bandpo turns it off so the "
        "ratio is 1 on the sampled tokens)",
        LORA,
        low=0.0,
        high=1.0,
    )
    lora_target_modules: str | None = setting(
        None,
        "modules that get an adapter: comma-separated names (q_proj,k_proj,v_proj,o_proj) or all-linear",
        LORA,
        kind=str,
        fix="use comma-separated module names such as q_proj,v_proj, or all-linear",
        default_text="peft's default for the architecture: q_proj,v_proj for Llama and Qwen2",
        metavar="NAMES",
    )
    # evaluation
    eval_prompts: int = setting(256, "held-out prompts", EVALUATION, low=1, high=MAX_EVAL_PROMPTS)
    eval_samples: int = setting(
        16,
        "k samples per prompt (k of mean@k, pass@k, maj@k)",
        EVALUATION,
        low=1,
        high=MAX_SAMPLES_PER_PROMPT,
    )
    eval_every: int = setting(
        0, "also evaluate every N steps (0: only before and after)", EVALUATION, low=0, high=MAX_STEPS
    )
    eval_before_file: str | None = setting(
        None,
        "a JSON file shared by runs of the same policy and evaluation settings (bandpo compare: the arms of a "
        "seed): the evaluation before RL is read from it when it was made for this run's, else computed and "
        "stored there",
        EVALUATION,
        kind=str,
        default_text="none: every run evaluates",
    )
    # run directory
    output_dir: str | None = setting(
        None, "run directory", RUN, kind=str, default_text="runs/<method>-seed<seed>-<time>"
    )
    save_every: int = setting(25, "RL steps between checkpoints", RUN, low=1, high=MAX_STEPS)
    keep_checkpoints: int = setting(2, "checkpoints kept", RUN, low=1, high=1_000)
    resume: bool = setting(
        False, "continue the run in --output-dir from its last checkpoint (no run there: start one)", RUN
    )
    # warm-up of the embedded model
    warmup_target_accuracy: float = _warmup_setting("target_accuracy")
    warmup_max_steps: int = _warmup_setting("max_steps", high=MAX_STEPS)
    warmup_rare_fraction: float = _warmup_setting("rare_fraction")
    cache_dir: str | None = setting(
        None, "warm-up cache", RUN, kind=str, default_text="$BANDPO_CACHE or ~/.cache/bandpo"
    )
    # other
    seed: int = setting(0, "seed of data, warm-up, sampling and init", RUN, low=0, high=MAX_SEED)
    num_threads: int = setting(1, "torch CPU threads", RUN, low=1, high=1_024)
    autocast: str = setting(
        "auto",
        "bf16 autocast of the passes (weights stay float32): auto where the device has bf16 units, bf16 "
        "everywhere (emulated, slower, on a CPU without them), off",
        RUN,
        choices=AUTOCAST_MODES,
    )
    report_to: tuple[str, ...] = setting(
        ("tensorboard",),
        f"loggers the metrics also go to, by TRL's names: {', '.join(LOGGERS)} (several at once), or none "
        "(only metrics.jsonl); --no-tensorboard drops tensorboard",
        RUN,
        choices=tuple(LOGGERS),  # and "none" alone, which is stored as ()
        fix=f"use one or more of {list(LOGGERS)}, or 'none' alone",
        default_text="tensorboard",
        metavar="NAME",
    )
    project: str | None = setting(
        None,
        "the loggers' project (W&B project, Trackio project, MLflow experiment); the run name is the run "
        "directory's name",
        RUN,
        kind=str,
        default_text="$WANDB_PROJECT / $MLFLOW_EXPERIMENT_NAME, else bandpo",
    )
    preset: str = setting("default", "base settings", RUN, choices=lambda: tuple(PRESETS))


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "paper": {  # the rest (method, δ, advantages, aggregation, dual-clip, temperature) is the default
        "kl_coef": 0.001,
        "learning_rate": 1e-6,
        "prompts_per_step": 256,
        "num_generations": 16,
        "num_iterations": 1,
        "minibatches": 4,
        "max_steps": 1020,
        "eval_samples": 32,
        "micro_batch_size": 16,
    },
}
"""The presets, each the values it sets (``default``: none, the declared defaults)."""

SETTINGS: dict[str, Setting] = declarations(TrainSettings)
"""{field: its declaration} for every TrainConfig field but the bound-method ones (declared by the methods)."""


def method_option_names() -> tuple[str, ...]:
    """The registered methods' parameters that are no `METHOD_FIELDS` field: set in ``method_options`` (on the
    command line, those not named like another TrainConfig field)."""
    return tuple(sorted(set(settable_method_parameters()) - set(METHOD_FIELDS)))


def _check_presets() -> None:
    """Each preset names fields and valid values (checked at import, not when a user first picks it)."""
    for name, values in PRESETS.items():
        unknown = sorted(set(values) - {f.name for f in fields(TrainSettings)})
        if unknown:
            raise ValueError(f"preset {name!r} sets unknown TrainConfig field(s) {unknown}")
        for key, value in values.items():
            if key in SETTINGS:
                SETTINGS[key].check(f"preset {name!r}: {key}", value)


def default_text(name: str) -> str:
    """The default of field `name` in words, with the paper preset's value where it differs."""
    spec = SETTINGS[name]
    default = spec.default
    if spec.default_text is not None:
        text = spec.default_text
    elif isinstance(default, bool):
        text = "on" if default else "off"
    else:
        text = f"{default:g}" if isinstance(default, float) else str(default)
    paper = PRESETS["paper"].get(name, default)
    return text if paper == default else f"{text}; paper preset {paper:g}"


def fields_doc() -> str:
    """The field list of `TrainConfig`'s docstring, from the declarations (`SETTINGS` and the methods')."""
    methods = settable_method_parameters()
    sections: dict[str, list[str]] = {}
    for f in fields(TrainSettings):
        if f.name in SETTINGS:
            spec = SETTINGS[f.name]
            line = f"{f.name}: {spec.help} (default: {default_text(f.name)})."
            sections.setdefault(spec.section, []).append(line)
        elif f.name in methods:
            sections.setdefault(METHOD, []).append(f"{f.name}: {methods[f.name].help}.")
        else:  # method_options
            sections.setdefault(METHOD, []).append(
                f"{f.name}: parameters of a registered method that have no field here (a user-registered "
                "method's own), as {name: value}; None: none."
            )
    lines = ["", "", "    Fields (generated from the declarations):"]
    for section, entries in sections.items():
        lines.append(f"        {section[0].upper()}{section[1:]}:")
        lines += [f"            {entry}" for entry in entries]
    return "\n".join(lines) + "\n"


_check_presets()
