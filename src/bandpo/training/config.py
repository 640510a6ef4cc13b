"""`TrainConfig`: every setting of a `bandpo train` run, declared once, validated, with presets.

Each field is declared with `setting` (its default, one line of help, its valid values and its CLI flag), the
way a method's parameters are declared with `bandpo.method_params.param`. Everything that shows or checks a
field reads that declaration (`SETTINGS`): `TrainConfig.__post_init__`, the ``bandpo train`` flags and their
help (`bandpo.cli.train`), and the field list appended to this class's docstring. The bound-method fields
(``divergence``, ``delta``, ...) are declared by the methods themselves (`bandpo.methods`): their defaults are
band's, their help and valid values the methods', and a registered method's own parameter that has no field
here goes in ``method_options``.

The defaults are the embedded CPU run (docs/experiments.md, "The embedded tasks"); the class docstring lists
them.

A *step* here is one RL step: one generation batch and its ``num_iterations × minibatches`` optimiser steps
(TRL counts optimiser steps; ``trl_max_steps`` converts).

Presets (`PRESETS`, applied with `TrainConfig.from_preset`): ``default`` (the declared defaults) and ``paper``:
the paper's algorithm on a real model (its values are ``PRESETS["paper"]``, shown beside each default by the
class docstring and ``bandpo train --help``; the rest is the default). Its micro-batches of 16 completions of
up to 4k tokens must fit the accelerator's memory at once (lower ``--micro-batch-size`` if not). Use it with
``--model`` and ``--dataset`` (and ``--max-completion-length 4096`` for the paper's response length).

Derived values are properties (`resolved_reward`, `resolved_max_completion_length`, ...): the fields keep
what the user gave (None = "the default for this task"), so ``config.replace(dataset=...)`` re-derives them.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from bandpo.integrations.trl_names import AGG_TO_LOSS_TYPE
from bandpo.losses import AGG_MODES as LOSS_AGG_MODES
from bandpo.losses import DUAL_CLIP_C, check_dual_clip_c
from bandpo.methods import list_methods, method_defaults_table, method_parameters
from bandpo.methods import settable_parameters as settable_method_parameters
from bandpo.training.loggers import LOGGERS, normalize_report_to
from bandpo.training.pretrained import PRETRAINED, resolve_model
from bandpo.training.tasks import EMBEDDED_TASKS, get_task
from bandpo.training.warmup import WarmupConfig

__all__ = [
    "AGG_MODES",
    "MAX_PROMPTS",
    "MAX_SAMPLES_PER_PROMPT",
    "MAX_SEED",
    "MAX_STEPS",
    "PRESETS",
    "REWARD_NAMES",
    "SCALE_REWARDS",
    "SETTINGS",
    "PolicySource",
    "PromptSource",
    "Setting",
    "TrainConfig",
    "method_option_names",
    "settable_method_parameters",
]

AGG_MODES: tuple[str, ...] = tuple(mode for mode in LOSS_AGG_MODES if mode in AGG_TO_LOSS_TYPE)
"""The aggregations `bandpo train` offers: `bandpo.losses.AGG_MODES` (the one list) less those TRL, which runs
the training loop, has no ``loss_type`` for (``seq_mean_token_sum``)."""
REWARD_NAMES: tuple[str, ...] = (*EMBEDDED_TASKS, "math")
SCALE_REWARDS: tuple[str, ...] = ("group", "batch", "none")
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

# the sections of the field list and of `bandpo train --help`
METHOD = "method (per-token ratio bounds)"
LOSS = "loss"
SCHEDULE = "schedule (a step is one rollout batch)"
DATA = "model and data (local files only; nothing is downloaded)"
LORA = "LoRA adapter (TRL's peft_config; needs pip install 'bandpo[lora]')"
EVALUATION = "evaluation (held-out prompts, before and after)"
RUN = "run"
WARMUP = "warm-up of the embedded model"


@dataclass(frozen=True, kw_only=True)
class Setting:
    """The declaration of one `TrainConfig` field: help, valid values and CLI flag (its default is the field's).

    Attributes:
        help: what the field does, one line (the CLI help and the class docstring show it).
        section: where the field is listed (``METHOD``, ``LOSS``, ...).
        kind: int, float, str, bool, or tuple (of `choices`; int values are accepted for a float).
        optional: None is valid (it means ``default_text``).
        low, high, low_open: the valid range of a number (closed unless `low_open`). Every count has a
            finite `high`: a value beyond what any run needs is a typo or a unit slip, refused before any work
            rather than found by the out-of-memory killer.
        choices: the valid values of a str, or a function returning them (read when checked).
        fix: the advice of the error for a bad value (default: the valid range or choices).
        default_text: the default in words where the default is None or needs explaining.
        flag: the CLI flag ("" for none; default ``--`` + the name with dashes); `aliases` more of them.
        metavar: the CLI's placeholder for the value.
    """

    help: str
    section: str
    kind: type
    optional: bool = False
    low: float | None = None
    high: float = math.inf
    low_open: bool = False
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] | None = None
    fix: str | None = None
    default_text: str | None = None
    flag: str | None = None
    aliases: tuple[str, ...] = ()
    metavar: str | None = None

    def int_range(self) -> str:
        """The valid integers in words: "use an integer in [1, 1,024]" (or ">= low" without a limit)."""
        low = 0 if self.low is None else self.low
        if math.isinf(self.high):
            return f"use an integer >= {low}"
        return f"use an integer in [{low:,}, {int(self.high):,}]"

    def valid_choices(self) -> tuple[str, ...] | None:
        return self.choices() if callable(self.choices) else self.choices

    def check(self, name: str, value: Any) -> None:
        """Raise a one-line ValueError naming the field, the bad value and the fix."""
        if value is None and self.optional:
            return
        choices = self.valid_choices()
        if self.kind is tuple:
            if not isinstance(value, tuple) or any(item not in (choices or ()) for item in value):
                raise ValueError(
                    f"{name}={value!r} is not valid; {self.fix or f'use any of {list(choices or ())}'}"
                )
        elif choices is not None:
            if value not in choices:
                raise ValueError(f"{name}={value!r} is not valid; use one of {list(choices)}")
        elif self.kind is int:
            low = 0 if self.low is None else self.low
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}={value!r} is not valid; {self.fix or self.int_range()}")
            if value > self.high:
                raise ValueError(f"{name}={value!r} is more than bandpo allows; {self.int_range()}")
        elif self.kind is float:
            low = -math.inf if self.low is None else self.low
            ok = not isinstance(value, bool) and isinstance(value, int | float) and not math.isnan(value)
            ok = ok and (value > low if self.low_open else value >= low) and value <= self.high
            if not ok:
                interval = f"{'(' if self.low_open else '['}{low}, {self.high}]"
                raise ValueError(
                    f"{name}={value!r} is not valid; {self.fix or f'use a number in {interval}'}"
                )
        elif self.kind is bool and not isinstance(value, bool):
            raise ValueError(f"{name}={value!r} is not valid; {self.fix or 'use true or false'}")
        elif self.kind is str and (not isinstance(value, str) or not value):
            raise ValueError(f"{name}={value!r} is not valid; {self.fix or 'use a non-empty string'}")


def setting(default: Any, help: str, section: str, *, kind: type | None = None, **declaration: Any) -> Any:
    """A `TrainConfig` field: its default plus the `Setting` that everything else reads.

    The kind is the default's type unless given (it must be, for a None default, which makes the field
    optional).

    Example:
        max_steps: int = setting(250, "RL steps", SCHEDULE, low=1)
    """
    if default is None:
        declaration["optional"] = True
    spec = Setting(help=help, section=section, kind=kind or type(default), **declaration)
    return field(default=default, metadata={_SETTING_KEY: spec})


_SETTING_KEY = "bandpo_setting"


def _method_field(name: str, *, per_method: bool = False) -> Any:
    """A bound-method field: band's default (None if `per_method`: each method's own); its help and valid values
    are the methods' declaration (`settable_method_parameters`), checked by the method itself."""
    return field(default=None if per_method else _BAND_DEFAULTS[name])


def _completion_length_text() -> str:
    by_length: dict[int, list[str]] = {}
    for name in EMBEDDED_TASKS:
        by_length.setdefault(get_task(name).completion_length, []).append(name)
    tasks = "; ".join(f"{length} for {', '.join(names)}" for length, names in by_length.items())
    return f"the task's: {tasks}; 1024 with --dataset"


@dataclass(frozen=True, kw_only=True)
class PromptSource:
    """The slice of a `TrainConfig` that reads a run's prompts (`bandpo.training.data.read_run_rows`)."""

    task: str
    dataset: str | None
    prompt_column: str
    answer_column: str
    use_chat_template: bool
    train_prompts: int  # in consumption order: max_steps x prompts_per_step
    eval_prompts: int
    seed: int


@dataclass(frozen=True, kw_only=True)
class PolicySource:
    """The slice of a `TrainConfig` that loads a run's policy (`bandpo.training.policy.load_policy`)."""

    model: str | None
    cache_dir: str | None
    warmup: WarmupConfig | None  # the embedded model's warm-up; None with a model
    num_threads: int


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """One training run. Frozen and keyword-only; invalid values raise a one-line ValueError naming the field.

    The fields, their defaults and valid values are declared once, below (`SETTINGS`); the list after this
    paragraph is generated from those declarations, as is ``bandpo train --help``. A method parameter set away
    from its default for a method that does not take it (``delta`` for clip, ``upper_side`` for band_upper) is
    an error, so config.json never shows a setting that had no effect. ``micro_batch_size`` gives the same
    update for seq_mean_token_mean and seq_mean_token_sum_norm; token_mean (TRL's bnpo) then averages tokens
    per micro-batch.
    """

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
        "countdown", "embedded task without --dataset (sums needs --model)", DATA, choices=EMBEDDED_TASKS
    )
    prompt_column: str = setting(
        "prompt", "prompt column (also problem, question)", DATA, fix="use a non-empty column name"
    )
    answer_column: str = setting(
        "answer", "answer column (also solution, ground_truth)", DATA, fix="use a non-empty column name"
    )
    reward: str | None = setting(
        None,
        "verifier",
        DATA,
        kind=str,
        choices=REWARD_NAMES,
        default_text="the embedded task's; math with --dataset",
    )
    reward_timeout_s: float | None = setting(
        5.0,
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
    warmup_target_accuracy: float = setting(
        0.35, "held-out accuracy the warm-up stops at", WARMUP, low=0.0, low_open=True, high=1.0, flag=""
    )
    warmup_max_steps: int = setting(1500, "warm-up steps at most", WARMUP, low=1, high=MAX_STEPS, flag="")
    warmup_rare_fraction: float = setting(
        0.01, "share of warm-up problems needing the rare operator", WARMUP, low=0.0, high=1.0, flag=""
    )
    cache_dir: str | None = setting(
        None, "warm-up cache", RUN, kind=str, default_text="$BANDPO_CACHE or ~/.cache/bandpo"
    )
    # other
    seed: int = setting(0, "seed of data, warm-up, sampling and init", RUN, low=0, high=MAX_SEED)
    num_threads: int = setting(1, "torch CPU threads", RUN, low=1, high=1_024)
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

    def __post_init__(self) -> None:
        # the method first: the method fields' checks need a known method
        SETTINGS["method"].check("method", self.method)
        self._check_method_fields()
        # built once, which validates the method parameters (naming the bad one); TRL's config takes it as is
        object.__setattr__(self, "_bound_method", self._build_method())
        # inf is stored as None, the one "off" value, so config.json never holds the non-standard Infinity
        object.__setattr__(self, "dual_clip_c", check_dual_clip_c(self.dual_clip_c))
        # TRL's forms: a name, "a,b" or a list (config.json's); "none" alone is no logger
        object.__setattr__(self, "report_to", normalize_report_to(self.report_to))
        for name, spec in SETTINGS.items():
            spec.check(name, getattr(self, name))
        if self.dataset is not None and self.task != "countdown":
            raise ValueError(
                f"task={self.task!r} is an embedded task; drop task (or dataset={self.dataset!r})"
            )
        if self.prompts_per_step % self.minibatches:
            raise ValueError(
                f"prompts_per_step={self.prompts_per_step} must be divisible by minibatches={self.minibatches} "
                "(each minibatch holds whole prompt groups); change one of them"
            )
        if self.micro_batch_size is not None and self.minibatch_samples % self.micro_batch_size:
            raise ValueError(
                f"micro_batch_size={self.micro_batch_size} must divide the {self.minibatch_samples} completions "
                f"of a minibatch (prompts_per_step x num_generations / minibatches); use a divisor of "
                f"{self.minibatch_samples}"
            )
        if self.optimizer_steps_per_rl_step == 1:
            warnings.warn(
                "every method is identical with num_iterations=1 and minibatches=1: one optimiser step per "
                "rollout batch keeps the ratio at 1, so no bound ever binds; use several (default: 2 x 4)",
                UserWarning,
                stacklevel=3,
            )
        if self.dataset is not None and not Path(self.dataset).expanduser().exists():
            raise ValueError(
                f"dataset={self.dataset!r} does not exist; pass a local path (nothing is downloaded)"
            )
        if self.model is not None:
            # a short name (`bandpo.training.pretrained.PRETRAINED`) must be prepared; a path must exist
            if not resolve_model(self.model, self.cache_dir).exists():
                raise ValueError(
                    f"model={self.model!r} does not exist; pass a local checkpoint folder or one of the short "
                    f"names {sorted(PRETRAINED)} (nothing is downloaded)"
                )
        elif self.dataset is None and get_task(self.task).needs_pretrained:
            raise ValueError(
                f"task={self.task!r} is for a pretrained model (the embedded tiny model cannot read its "
                f"prompts); pass --model smollm2-135m-instruct (bash scripts/setup.sh prepares it) or another "
                "local checkpoint with a chat template"
            )
        self._check_lora_fields()
        if self.dataset is None and self.resolved_reward != self.task:
            raise ValueError(
                f"reward={self.reward!r} needs --dataset (the embedded task {self.task!r} uses reward={self.task!r})"
            )

    def _check_method_fields(self) -> None:
        """A method field away from its default for a method that does not take it is an error."""
        accepted = method_parameters(self.method)
        defaults = {f.name: f.default for f in fields(self)}
        for name in METHOD_FIELDS:
            value = getattr(self, name)
            if name not in accepted and value != defaults[name]:
                raise ValueError(
                    f"{name}={value!r} has no effect with method={self.method!r}, which takes only "
                    f"{list(accepted)}; drop {name} (leave it at {defaults[name]!r}) or use a method that takes "
                    f"it: {_methods_taking(name)}"
                )
        options = self.method_options or {}
        if not isinstance(options, dict):
            raise ValueError(
                f"method_options={options!r} is not valid; use a dict of method parameters (or None)"
            )
        for name, value in options.items():
            if name in METHOD_FIELDS:
                raise ValueError(
                    f"method_options has {name!r}, a TrainConfig field of its own; set {name}={value!r} instead"
                )
            if name not in settable_method_parameters():
                raise ValueError(
                    f"method_options has {name!r}, which no registered method takes; register the method first "
                    f"or use one of {list(method_option_names())}"
                )
            if name not in accepted:
                raise ValueError(
                    f"method_options {name}={value!r} has no effect with method={self.method!r}, which takes "
                    f"only {list(accepted)}; drop {name} or use a method that takes it: {_methods_taking(name)}"
                )

    def _check_lora_fields(self) -> None:
        """A LoRA setting without ``lora_r`` has no effect (an error, as for method fields); the target list is
        names, and never ``lm_head`` (TRL computes log-probabilities from its weight directly, so an adapter
        there would never train)."""
        defaults = {f.name: f.default for f in fields(self)}
        if self.lora_r is None:
            for name in LORA_FIELDS:
                value = getattr(self, name)
                if value != defaults[name]:
                    raise ValueError(
                        f"{name}={value!r} has no effect without lora_r; set lora_r (--lora-r 16) to train a LoRA "
                        f"adapter, or drop {name}"
                    )
            return
        if self.lora_dropout >= 1.0:
            raise ValueError(
                f"lora_dropout={self.lora_dropout!r} drops every input of the adapter, which then never trains; "
                "use a value in [0, 1)"
            )
        modules = self.peft_target_modules
        if isinstance(modules, list) and ("" in modules or any(" " in name for name in modules)):
            raise ValueError(
                f"lora_target_modules={self.lora_target_modules!r} has an empty or spaced name; use "
                "comma-separated module names without spaces, such as q_proj,v_proj"
            )
        if isinstance(modules, list) and "lm_head" in modules:
            raise ValueError(
                f"lora_target_modules={self.lora_target_modules!r} names lm_head, whose adapter would never "
                "train (TRL computes log-probabilities from lm_head.weight directly); drop lm_head"
            )

    # -- derived values ---------------------------------------------------------------------------------
    @property
    def lora(self) -> bool:
        """True when the run trains a LoRA adapter (``lora_r`` set) instead of every weight."""
        return self.lora_r is not None

    @property
    def peft_target_modules(self) -> list[str] | str | None:
        """`lora_target_modules` as peft's ``target_modules`` takes it: a list of module names, ``"all-linear"``,
        or None (peft's default for the architecture)."""
        text = self.lora_target_modules
        if text is None or text == ALL_LINEAR:
            return text
        return [name.strip() for name in text.split(",")]

    @property
    def method_params(self) -> dict[str, Any]:
        """Parameters passed to `bandpo.get_method(self.method, ...)`: those the method accepts."""
        accepted = method_parameters(self.method)
        params = {name: getattr(self, name) for name in METHOD_FIELDS if name in accepted}
        params.update(self.method_options or {})
        return {name: value for name, value in params.items() if value is not None}

    @property
    def resolved_reward(self) -> str:
        """`reward`, or its default: countdown for the embedded task, math with a dataset."""
        if self.reward is not None:
            return self.reward
        return self.task if self.dataset is None else "math"

    @property
    def resolved_max_completion_length(self) -> int:
        """`max_completion_length`, or its default: the embedded task's (8 tokens for Countdown and Reach, 16
        for Sums), 1024 (room to reason) otherwise."""
        if self.max_completion_length is not None:
            return self.max_completion_length
        reward = self.resolved_reward
        return get_task(reward).completion_length if reward in EMBEDDED_TASKS else 1024

    @property
    def minibatch_samples(self) -> int:
        """Completions per optimiser step."""
        return self.samples_per_step // self.minibatches

    @property
    def resolved_micro_batch_size(self) -> int:
        """Completions per forward/backward pass (`micro_batch_size`, or the whole minibatch)."""
        return self.micro_batch_size or self.minibatch_samples

    @property
    def gradient_accumulation_steps(self) -> int:
        """Forward/backward passes accumulated into one optimiser step."""
        return self.minibatch_samples // self.resolved_micro_batch_size

    def bound_method(self) -> Any:
        """The configured `bandpo.methods.BoundMethod` (built by ``__post_init__``)."""
        return self._bound_method

    def _build_method(self) -> Any:
        from bandpo.methods import get_method

        try:
            return get_method(self.method, **self.method_params)
        except (TypeError, ValueError) as error:
            raise ValueError(f"method={self.method!r}: {error}") from None

    @property
    def samples_per_step(self) -> int:
        return self.prompts_per_step * self.num_generations

    @property
    def optimizer_steps_per_rl_step(self) -> int:
        return self.num_iterations * self.minibatches

    @property
    def trl_max_steps(self) -> int:
        """TRL's `max_steps` (optimiser steps) for `max_steps` RL steps."""
        return self.max_steps * self.optimizer_steps_per_rl_step

    @property
    def embedded(self) -> bool:
        """True when the run uses the built-in tiny model and Countdown task."""
        return self.model is None and self.dataset is None

    @property
    def prompt_source(self) -> PromptSource:
        return PromptSource(
            task=self.task,
            dataset=self.dataset,
            prompt_column=self.prompt_column,
            answer_column=self.answer_column,
            use_chat_template=self.use_chat_template,
            train_prompts=self.max_steps * self.prompts_per_step,
            eval_prompts=self.eval_prompts,
            seed=self.seed,
        )

    @property
    def policy_source(self) -> PolicySource:
        warmup = None
        if self.model is None:
            warmup = WarmupConfig(
                seed=self.seed,
                task=self.task,
                target_accuracy=self.warmup_target_accuracy,
                max_steps=self.warmup_max_steps,
                rare_fraction=self.warmup_rare_fraction,
            )
        return PolicySource(
            model=self.model, cache_dir=self.cache_dir, warmup=warmup, num_threads=self.num_threads
        )

    # -- construction and serialisation ----------------------------------------------------------------
    @classmethod
    def from_preset(cls, preset: str = "default", **overrides: Any) -> TrainConfig:
        """The preset's values, then `overrides` (None values are ignored, so CLI defaults pass through)."""
        if preset not in PRESETS:
            raise ValueError(f"preset={preset!r} is unknown; use one of {sorted(PRESETS)}")
        _check_field_names(overrides)
        values = {**PRESETS[preset], "preset": preset}
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)

    def replace(self, **changes: Any) -> TrainConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The fields as given, plus ``"resolved"``: the derived values the run uses (ignored by from_dict).

        ``method_options`` is left out when unset, so a built-in method's config.json is as before it existed.
        """
        values = asdict(self)
        if values["method_options"] is None:  # only a user-registered method's parameters need it
            del values["method_options"]
        values["report_to"] = list(self.report_to)  # as JSON holds it (a list), read back as a tuple
        return {
            **values,
            "resolved": {
                "reward": self.resolved_reward,
                "max_completion_length": self.resolved_max_completion_length,
                "micro_batch_size": self.resolved_micro_batch_size,
                "gradient_accumulation_steps": self.gradient_accumulation_steps,
                "method_params": self.method_params,
            },
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """The config of `to_dict` output (its derived ``"resolved"`` entry is recomputed, not read).

        A config.json written before ``report_to`` holds ``report_tensorboard`` (true or false) instead.
        """
        values = {key: value for key, value in values.items() if key != "resolved"}
        upgrade_report_tensorboard(values)
        _check_field_names(values)
        return cls(**values)


def upgrade_report_tensorboard(values: dict[str, Any]) -> None:
    """In place: a config.json written before ``report_to`` holds ``report_tensorboard`` (true or false); it
    becomes ``report_to`` (tensorboard or nothing) unless ``report_to`` is given too."""
    if "report_tensorboard" in values and "report_to" not in values:
        values["report_to"] = ("tensorboard",) if values.pop("report_tensorboard") else ()


def _check_field_names(values: dict[str, Any]) -> None:
    """Refuse a name that is no TrainConfig field, listing the valid ones (before the dataclass's TypeError)."""
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown TrainConfig field(s) {unknown}; valid fields: {sorted(known)}")


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

SETTINGS: dict[str, Setting] = {
    f.name: f.metadata[_SETTING_KEY] for f in fields(TrainConfig) if _SETTING_KEY in f.metadata
}
"""{field: its declaration} for every TrainConfig field but the bound-method ones (declared by the methods)."""


def method_option_names() -> tuple[str, ...]:
    """The registered methods' parameters that are no `METHOD_FIELDS` field: set in ``method_options`` (on the
    command line, those not named like another TrainConfig field)."""
    return tuple(sorted(set(settable_method_parameters()) - set(METHOD_FIELDS)))


def _check_presets() -> None:
    """Each preset names fields and valid values (checked at import, not when a user first picks it)."""
    for name, values in PRESETS.items():
        unknown = sorted(set(values) - {f.name for f in fields(TrainConfig)})
        if unknown:
            raise ValueError(f"preset {name!r} sets unknown TrainConfig field(s) {unknown}")
        for key, value in values.items():
            if key in SETTINGS:
                SETTINGS[key].check(f"preset {name!r}: {key}", value)


def default_text(name: str) -> str:
    """The default of field `name` in words, with the paper preset's value where it differs."""
    spec, default = SETTINGS[name], TrainConfig.__dataclass_fields__[name].default
    if spec.default_text is not None:
        text = spec.default_text
    elif isinstance(default, bool):
        text = "on" if default else "off"
    else:
        text = f"{default:g}" if isinstance(default, float) else str(default)
    paper = PRESETS["paper"].get(name, default)
    return text if paper == default else f"{text}; paper preset {paper:g}"


def _fields_doc() -> str:
    """The field list of the docstring, from the declarations (`SETTINGS` and the methods')."""
    methods = settable_method_parameters()
    sections: dict[str, list[str]] = {}
    for f in fields(TrainConfig):
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
TrainConfig.__doc__ = (TrainConfig.__doc__ or "").rstrip() + _fields_doc()


def _methods_taking(name: str) -> list[str]:
    return [method for method in list_methods() if name in method_parameters(method)]
