"""`TrainConfig`: every setting of a `bandpo train` run, validated, with presets.

The defaults are the embedded CPU run (docs/experiments.md, "The embedded tasks"): the tiny Countdown
policy, BandPO (KL, δ = 0.05, ratio cap 10), 32 prompts × 8 samples per RL step, 2 iterations × 4 minibatches
(8 Adam steps per rollout batch, lr 3e-4), 250 RL steps, GRPO advantages with std, seq-mean-token-mean,
dual-clip c = 10, no KL, no entropy bonus, temperature 1.

A *step* here is one RL step: one generation batch and its ``num_iterations × minibatches`` optimiser steps
(TRL counts optimiser steps; ``trl_max_steps`` converts).

Presets (`PRESETS`, applied with `TrainConfig.from_preset`): ``default`` (the above) and ``paper``: the
paper's algorithm on a real model: KL 0.001 (k3) to the reference, lr 1e-6, 256 prompts × 16 samples in
4 minibatches of 64 prompts, one iteration, 1020 steps, 32 evaluation samples, micro-batches of 16
completions (a minibatch of 1024 completions is accumulated over 64 forward/backward passes, so 16
completions of 4k tokens must fit the accelerator's memory at once; lower ``--micro-batch-size`` if not); the
rest is shared with ``default`` (advantages, aggregation, dual-clip, temperature, δ). Use it with ``--model``
and ``--dataset`` (and ``--max-completion-length 4096`` for the paper's response length; left unset, the
length fits the reward: 8 tokens for Countdown, 1024 for math).

Derived values are properties (`resolved_reward`, `resolved_max_completion_length`, ...): the fields keep
what the user gave (None = "the default for this task"), so ``config.replace(dataset=...)`` re-derives them.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from bandpo.integrations.trl_names import AGG_TO_LOSS_TYPE
from bandpo.losses import AGG_MODES as LOSS_AGG_MODES
from bandpo.losses import DUAL_CLIP_C, check_dual_clip_c
from bandpo.methods import list_methods, method_defaults_table, method_parameters
from bandpo.training.pretrained import PRETRAINED, resolve_model
from bandpo.training.tasks import EMBEDDED_TASKS, get_task

__all__ = ["AGG_MODES", "PRESETS", "REWARD_NAMES", "SCALE_REWARDS", "TrainConfig"]

AGG_MODES: tuple[str, ...] = tuple(mode for mode in LOSS_AGG_MODES if mode in AGG_TO_LOSS_TYPE)
"""The aggregations `bandpo train` offers: `bandpo.losses.AGG_MODES` (the one list) less those TRL, which runs
the training loop, has no ``loss_type`` for (``seq_mean_token_sum``)."""
REWARD_NAMES: tuple[str, ...] = (*EMBEDDED_TASKS, "math")
SCALE_REWARDS: tuple[str, ...] = ("group", "batch", "none")
METHOD_FIELDS: tuple[str, ...] = method_parameters("band")
_BAND_DEFAULTS: dict[str, Any] = method_defaults_table()["band"]  # the method's declaration is the one source
RUN_INDEPENDENT_FIELDS: frozenset[str] = frozenset(
    {"resume", "output_dir", "num_threads", "report_tensorboard", "cache_dir"}
)
"""Fields that do not change what a run computes: a resumed or re-planned run may differ in them."""
"""TrainConfig fields that are bound-method parameters (passed when the method accepts them)."""


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """One training run. Frozen and keyword-only; invalid values raise a one-line ValueError naming the field.

    Method (the ratio bounds; `bandpo.list_methods()`):
        method: band, band_upper, band_lower, clip, clip_higher, dcpo, ...
        divergence, delta, ratio_max, relax, lower_side, upper_side: Band's parameters.
        eps_low, eps_high: fixed-clip epsilons; None keeps the method's own default
            (`bandpo.methods.method_defaults_table()`; ``bandpo train --help`` lists them). The other method
            fields default to band's declared defaults.
        A parameter set away from its default for a method that does not take it (``delta`` for clip,
        ``upper_side`` for band_upper) is an error, so config.json never shows a setting that had no effect.
    Loss:
        agg: seq_mean_token_mean (GRPO, paper), token_mean, or seq_mean_token_sum_norm (Dr.GRPO).
        dual_clip_c: dual-clip constant c (TRL's delta); None disables it (math.inf is read as None).
        kl_coef: weight of the k3 KL to the initial policy (0 skips the reference model).
        entropy_coef: entropy bonus weight (paper: 0).
        scale_rewards: GRPO advantage scaling: group (std per group, paper), batch, none (Dr.GRPO).
    Schedule:
        max_steps: RL steps (generation batches).
        prompts_per_step, num_generations: prompts per generation batch and samples per prompt.
        num_iterations, minibatches: passes over each generation batch and optimiser steps per pass.
        micro_batch_size: completions per forward/backward pass; each minibatch is accumulated over
            ``minibatch_samples / micro_batch_size`` passes (must divide it). None: the whole minibatch at once.
            Same update for seq_mean_token_mean and seq_mean_token_sum_norm; token_mean (TRL's bnpo) then
            averages tokens per micro-batch.
        learning_rate, max_grad_norm, temperature, max_completion_length (None: 8 tokens for Countdown,
            1024 otherwise; `resolved_max_completion_length`).
    Data and model:
        model: local HF checkpoint directory, or a short name prepared by ``bandpo prepare-model``
            (``smollm2-135m-instruct``, `bandpo.training.pretrained`); None builds and warms up the embedded
            tiny model.
        dataset: local .jsonl/.json/.parquet file with `prompt_column` and `answer_column`; None uses the
            embedded task `task`.
        task: the embedded task without a dataset, countdown (default), reach, or sums (a real model's;
            needs ``model``) (`bandpo.training.tasks`).
        reward: countdown, reach or math (None: the embedded task's, math with a dataset;
            `resolved_reward`); reward_timeout_s: per-sample limit (a timeout scores 0 and is counted).
        use_chat_template: wrap prompts as a user message when the tokenizer has a chat template.
    Evaluation (before and after training, held-out prompts):
        eval_prompts, eval_samples (k of mean@k, pass@k, maj@k), eval_every (RL steps; 0: only before/after).
    Run directory and checkpoints:
        output_dir: None: runs/<method>-seed<seed>-<time>. save_every: RL steps between checkpoints;
        keep_checkpoints: how many to keep. resume: continue from the last checkpoint in output_dir (a
        directory without a run starts one).
    Warm-up of the embedded model: warmup_target_accuracy, warmup_max_steps, warmup_rare_fraction,
        cache_dir (default $BANDPO_CACHE or ~/.cache/bandpo).
    Other: seed, num_threads (torch CPU threads), report_tensorboard.
    """

    # method
    method: str = "band"
    divergence: str = _BAND_DEFAULTS["divergence"]
    delta: float = _BAND_DEFAULTS["delta"]
    ratio_max: float = _BAND_DEFAULTS["ratio_max"]
    relax: bool = _BAND_DEFAULTS["relax"]
    eps_low: float | None = None
    eps_high: float | None = None
    lower_side: str = _BAND_DEFAULTS["lower_side"]
    upper_side: str = _BAND_DEFAULTS["upper_side"]
    # loss
    agg: str = "seq_mean_token_mean"
    dual_clip_c: float | None = DUAL_CLIP_C
    kl_coef: float = 0.0
    entropy_coef: float = 0.0
    scale_rewards: str = "group"
    # schedule
    max_steps: int = 250
    prompts_per_step: int = 32
    num_generations: int = 8
    num_iterations: int = 2
    minibatches: int = 4
    micro_batch_size: int | None = None
    learning_rate: float = 3e-4
    max_grad_norm: float = 1.0
    temperature: float = 1.0
    max_completion_length: int | None = None
    # data and model
    model: str | None = None
    dataset: str | None = None
    task: str = "countdown"
    prompt_column: str = "prompt"
    answer_column: str = "answer"
    reward: str | None = None
    reward_timeout_s: float | None = 5.0
    use_chat_template: bool = True
    # evaluation
    eval_prompts: int = 256
    eval_samples: int = 16
    eval_every: int = 0
    # run directory
    output_dir: str | None = None
    save_every: int = 25
    keep_checkpoints: int = 2
    resume: bool = False
    # warm-up of the embedded model
    warmup_target_accuracy: float = 0.35
    warmup_max_steps: int = 1500
    warmup_rare_fraction: float = 0.01
    cache_dir: str | None = None
    # other
    seed: int = 0
    num_threads: int = 1
    report_tensorboard: bool = True
    preset: str = "default"

    def __post_init__(self) -> None:

        if self.method not in list_methods():
            raise ValueError(f"method={self.method!r} is unknown; use one of {list(list_methods())}")
        self._check_method_fields()
        self.bound_method()  # validates the method parameters, naming the bad one
        _choice("agg", self.agg, AGG_MODES)
        if self.reward is not None:
            _choice("reward", self.reward, REWARD_NAMES)
        _choice("task", self.task, EMBEDDED_TASKS)
        if self.dataset is not None and self.task != "countdown":
            raise ValueError(
                f"task={self.task!r} is an embedded task; drop task (or dataset={self.dataset!r})"
            )
        _choice("scale_rewards", self.scale_rewards, SCALE_REWARDS)
        _choice("preset", self.preset, tuple(PRESETS))
        # inf is stored as None, the one "off" value, so config.json never holds the non-standard Infinity
        object.__setattr__(self, "dual_clip_c", check_dual_clip_c(self.dual_clip_c))
        _number("kl_coef", self.kl_coef, low=0.0)
        _number("entropy_coef", self.entropy_coef, low=0.0)
        _number("learning_rate", self.learning_rate, low=0.0, low_open=True)
        _number("max_grad_norm", self.max_grad_norm, low=0.0, fix="use a value >= 0 (0 disables clipping)")
        _number("temperature", self.temperature, low=0.0, low_open=True)
        _number("warmup_target_accuracy", self.warmup_target_accuracy, low=0.0, low_open=True, high=1.0)
        _number("warmup_rare_fraction", self.warmup_rare_fraction, low=0.0, high=1.0)
        if self.reward_timeout_s is not None:
            _number(
                "reward_timeout_s",
                self.reward_timeout_s,
                low=0.0,
                low_open=True,
                fix="use seconds > 0 or None",
            )
        for name in (
            "max_steps",
            "prompts_per_step",
            "num_iterations",
            "minibatches",
            "eval_samples",
            "save_every",
            "keep_checkpoints",
            "warmup_max_steps",
            "num_threads",
        ):
            _integer(name, getattr(self, name), low=1)
        _integer(
            "num_generations", self.num_generations, low=2, fix="GRPO needs at least 2 samples per prompt"
        )
        for name in ("max_completion_length", "micro_batch_size"):
            if getattr(self, name) is not None:
                _integer(name, getattr(self, name), low=1, fix="use an integer >= 1 or None (the default)")
        _integer("eval_prompts", self.eval_prompts, low=1)
        _integer("eval_every", self.eval_every, low=0)
        _integer("seed", self.seed, low=0)
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
        if self.dataset is None and self.resolved_reward != self.task:
            raise ValueError(
                f"reward={self.reward!r} needs --dataset (the embedded task {self.task!r} uses reward={self.task!r})"
            )
        for name in ("prompt_column", "answer_column"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty column name")

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

    # -- derived values ---------------------------------------------------------------------------------
    @property
    def method_params(self) -> dict[str, Any]:
        """Parameters passed to `bandpo.get_method(self.method, ...)`: those the method accepts."""
        accepted = method_parameters(self.method)
        params = {name: getattr(self, name) for name in METHOD_FIELDS if name in accepted}
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

    # -- construction and serialisation ----------------------------------------------------------------
    @classmethod
    def from_preset(cls, preset: str = "default", **overrides: Any) -> TrainConfig:
        """The preset's values, then `overrides` (None values are ignored, so CLI defaults pass through)."""
        if preset not in PRESETS:
            raise ValueError(f"preset={preset!r} is unknown; use one of {sorted(PRESETS)}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; valid fields: {sorted(known)}")
        values = {**PRESETS[preset], "preset": preset}
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)

    def replace(self, **changes: Any) -> TrainConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The fields as given, plus ``"resolved"``: the derived values the run uses (ignored by from_dict)."""
        return {
            **asdict(self),
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
        """The config of `to_dict` output (its derived ``"resolved"`` entry is recomputed, not read)."""
        values = {key: value for key, value in values.items() if key != "resolved"}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; valid fields: {sorted(known)}")
        return cls(**values)


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "paper": {
        "method": "band",
        **{name: _BAND_DEFAULTS[name] for name in ("divergence", "delta", "ratio_max", "relax")},
        "agg": "seq_mean_token_mean",
        "dual_clip_c": DUAL_CLIP_C,
        "kl_coef": 0.001,
        "entropy_coef": 0.0,
        "scale_rewards": "group",
        "temperature": 1.0,
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


def _methods_taking(name: str) -> list[str]:
    return [method for method in list_methods() if name in method_parameters(method)]


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; use one of {list(choices)}")


def _number(
    name: str,
    value: Any,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    fix: str | None = None,
) -> None:
    ok = not isinstance(value, bool) and isinstance(value, int | float) and not math.isnan(value)
    ok = ok and (value > low if low_open else value >= low) and value <= high
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}]"
        raise ValueError(f"{name}={value!r} is not valid; {fix or f'use a number in {interval}'}")


def _integer(name: str, value: Any, *, low: int, fix: str | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}={value!r} is not valid; {fix or f'use an integer >= {low}'}")
