"""`TrainConfig`: every setting of a `bandpo train` run, validated, with presets.

The fields are declared once, in `bandpo.training.settings` (`TrainSettings`: each field's default, one line of
help, its valid values and its CLI flag, read by everything that shows or checks a field: `SETTINGS`). This
module adds what involves several fields: the checks across them, the derived values and the presets.

The defaults are the embedded CPU run (docs/experiments.md, "The embedded tasks"); the class docstring lists
them.

A *step* here is one RL step: one generation batch and its ``num_iterations × minibatches`` optimiser steps
(TRL counts optimiser steps; ``trl_max_steps`` converts).

Presets (`PRESETS`): ``default`` (the declared defaults) and ``paper``: the paper's algorithm on a real model
(its values are ``PRESETS["paper"]``, shown beside each default by the class docstring and ``bandpo train
--help``; the rest is the default). ``TrainConfig(preset="paper", ...)`` and ``TrainConfig.from_preset("paper",
...)`` both start from the preset's values; the keywords given override them. Its micro-batches of 16
completions of up to 4k tokens must fit the accelerator's memory at once (lower ``--micro-batch-size`` if not).
Use it with ``--model`` and ``--dataset`` (and ``--max-completion-length 4096`` for the paper's response
length).

Derived values are properties (`resolved_reward`, `resolved_max_completion_length`, ...): the fields keep
what the user gave (None = "the default for this task"), so ``config.replace(dataset=...)`` re-derives them.
"""

from __future__ import annotations

import inspect
import json
import warnings
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from bandpo.losses import check_dual_clip_c
from bandpo.methods import list_methods, method_parameters
from bandpo.training.loggers import normalize_report_to
from bandpo.training.pretrained import PRETRAINED, resolve_model
from bandpo.training.rewards import DATASET_REWARD
from bandpo.training.setting import Setting
from bandpo.training.settings import (
    AGG_MODES,
    ALL_LINEAR,
    DATASET_COMPLETION_LENGTH,
    LORA_FIELDS,
    MAX_PROMPTS,
    MAX_SAMPLES_PER_PROMPT,
    MAX_SEED,
    MAX_STEPS,
    METHOD_FIELDS,
    PRESETS,
    RUN_INDEPENDENT_FIELDS,
    SCALE_REWARDS,
    SETTINGS,
    TrainSettings,
    default_text,
    fields_doc,
    method_option_names,
    settable_method_parameters,
)
from bandpo.training.tasks import DEFAULT_TASK, get_task, task_names
from bandpo.training.warmup import WarmupConfig

__all__ = [
    "AGG_MODES",
    "ALL_LINEAR",
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
    "PolicySource",
    "PromptSource",
    "Setting",
    "TrainConfig",
    "default_text",
    "method_option_names",
    "settable_method_parameters",
    "upgrade_report_tensorboard",
]


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


@dataclass(frozen=True, kw_only=True, init=False)
class TrainConfig(TrainSettings):
    """One training run. Frozen and keyword-only; invalid values raise a one-line ValueError naming the field.

    The fields, their defaults and valid values are declared once (`bandpo.training.settings.SETTINGS`); the
    list after this paragraph is generated from those declarations, as is ``bandpo train --help``. A method
    parameter set away from its default for a method that does not take it (``delta`` for clip, ``upper_side``
    for band_upper) is an error, so config.json never shows a setting that had no effect. ``micro_batch_size``
    gives the same update for seq_mean_token_mean and seq_mean_token_sum_norm; token_mean (TRL's bnpo) then
    averages tokens per micro-batch. ``preset`` names the values the others start from: the preset's, then the
    keywords given.
    """

    def __init__(self, **values: Any) -> None:
        preset = values.get("preset", TrainSettings.preset)
        base = PRESETS.get(preset, {}) if isinstance(preset, str) else {}  # an unknown one is refused below
        super().__init__(**{**base, **values})  # the fields (TrainSettings has no __post_init__ to call)
        self.__post_init__()

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
        if self.dataset is not None and self.task != DEFAULT_TASK:
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
        """`reward`, or its default: the embedded task's own verifier, `DATASET_REWARD` (math) with a dataset."""
        if self.reward is not None:
            return self.reward
        return self.task if self.dataset is None else DATASET_REWARD

    @property
    def resolved_max_completion_length(self) -> int:
        """`max_completion_length`, or its default: the embedded task's (8 tokens for Countdown and Reach, 16
        for Sums), `DATASET_COMPLETION_LENGTH` (room to reason) otherwise."""
        if self.max_completion_length is not None:
            return self.max_completion_length
        reward = self.resolved_reward
        return get_task(reward).completion_length if reward in task_names() else DATASET_COMPLETION_LENGTH

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
        return cls(**{key: value for key, value in overrides.items() if value is not None}, preset=preset)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with `changes` (the derived values follow). Another ``preset`` is refused: every other field
        would keep its value, so the copy would carry the label without the preset's values."""
        if changes.get("preset", self.preset) != self.preset:
            raise ValueError(
                f"replace(preset={changes['preset']!r}) keeps every other value; build "
                f"TrainConfig.from_preset({changes['preset']!r}, ...) instead"
            )
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


TrainConfig.__init__.__signature__ = inspect.signature(TrainSettings.__init__)  # the fields, for help()
TrainConfig.__doc__ = (TrainConfig.__doc__ or "").rstrip() + fields_doc()


def _methods_taking(name: str) -> list[str]:
    return [method for method in list_methods() if name in method_parameters(method)]
