"""BandPO inside TRL's `GRPOTrainer` (supported: trl >= 1.16, < 1.17).

`BandPOTrainer` is a `GRPOTrainer` whose ratio clip is per token: the bounds of a bound method (`band`,
`clip`, `clip_higher`, `dcpo`, `band_upper`, ... from `bandpo.methods`) replace TRL's fixed
``[1 - epsilon, 1 + epsilon_high]``. Everything else (generation, rewards, advantages, KL, aggregation,
logging, checkpoints) is TRL's own code. How to use it, and how to launch it on several GPUs: docs/trl.md.

How (the mechanism; `BandPOTrainer` checks it at start-up, `bandpo.integrations.trl_check`, and
`tests/integrations/test_trl.py` pins it down):

1. Once per generation batch, after TRL has sampled and scored it, the bounds are computed from
   ``old_per_token_logps`` (the sampling policy's log-probabilities) and stored in the batch as
   ``ratio_low`` / ``ratio_high``, (B, T) tensors; TRL's shuffle and split carry them with their tokens
   through every minibatch and every iteration.
2. Around each ``super()._compute_loss``, ``self.epsilon_low = 1 - ratio_low`` and
   ``self.epsilon_high = ratio_high - 1`` (per-token tensors: TRL 1.16 computes
   ``clamp(coef_1, 1 - epsilon_low, 1 + epsilon_high)``, which broadcasts), then they are restored.
3. TRL skips ``old_per_token_logps`` when every generation batch lies inside one optimiser step (TRL 1.16's
   criterion, without vLLM: ``gradient_accumulation_steps % (steps_per_generation × num_iterations) == 0``):
   the policy has not moved since sampling and TRL uses ``per_token_logps.detach()``. Only then are the
   bounds built from the log-probabilities of TRL's forward pass, which are the sampling policy's. The ratio
   is identically 1, no method clips, every method is the same, and the config warns
   (`every_method_identical`). A micro-batch with ``old_per_token_logps`` but without bounds gets them from
   ``old_per_token_logps``.
4. Metrics. bandpo's diagnostics (`bandpo.losses.band_metrics`: ``clip/frac_up``, per-p_old-bin fractions,
   mean bounds, ...) are appended to TRL's ``self._metrics``. Like TRL's own, each is pooled over the tokens
   of every process (sum of numerators over sum of token counts; ``ratio/max`` is a max), then TRL averages
   the micro-batches of a logging step. A per-bin fraction is appended only for micro-batches with tokens in
   that bin over all processes, so an empty bin does not drag the mean to 0. TRL's ``clip_ratio/high_mean``,
   ``clip_ratio/region_mean`` and ``clip_ratio/high_max`` are replaced by the true fractions: TRL caps the
   ratio at ``delta`` before it tests ``ratio > 1 + epsilon_high``, so with per-token upper bounds equal to
   the cap (Band's ``ratio_max`` 10 = c) it never counts the tokens above the cap.

Mapping of the paper's loss to TRL (and the differences):

- Dual-clip c (paper: 10) is `BandPOConfig.dual_clip_c`, passed to TRL as its ``delta``, which TRL applies
  as ``coef_1 = clamp(coef_1, max=delta)`` in the unclipped term for *both* signs of the advantage. For
  A < 0 this is exactly dual-clip (loss capped at -A·c). For A > 0 it also caps the ratio at c; the result
  equals `bandpo.policy_loss` whenever every ``ratio_high <= c``, which holds for every built-in method at
  its defaults (``ratio_max`` 10 = c). A config with ``ratio_max > dual_clip_c`` gets a warning.
- Aggregation: `bandpo.losses` aggregation names map to TRL's ``loss_type`` (`AGG_TO_LOSS_TYPE`):
  ``seq_mean_token_mean`` → ``grpo``, ``token_mean`` → ``bnpo`` (per micro-batch),
  ``seq_mean_token_sum_norm`` → ``dr_grpo``, which divides by rows × ``max_completion_length`` and so equals
  ``policy_loss(..., agg="seq_mean_token_sum_norm", max_len=max_completion_length)``. TRL's ``dapo`` (token
  mean over the accumulated batch) is accepted too. ``seq_mean_token_sum`` has no TRL loss type. One
  difference with ``grpo``: TRL averages over *every* row, so a fully masked row (a truncated completion
  under ``mask_truncated_completions=True``) counts as a 0 in the mean, while ``policy_loss`` leaves rows
  without valid tokens out of the mean (the two agree whenever every row has a valid token).
- KL to the reference (``beta`` > 0): TRL adds ``beta × k3`` per token before aggregating, with
  k3 = exp(ref - logp) - (ref - logp) - 1, which equals ``policy_loss + beta × aggregate_loss(kl_penalty(logp,
  ref_logp, "k3"))`` (the paper's ``low_var_kl``, tested). TRL 1.16 defaults ``use_bias_correction_kl=True``
  (k3 multiplied by the ratio, DeepSeek-V3.2); `BandPOConfig` defaults it to False, the paper's plain k3.
  `kl_penalty` clamps ``ref - logp`` to ±20 and k3 to ±10 as verl does; TRL does not clamp, so the two
  differ only for tokens more than 10 nats of k3 away from the reference.
- TRL does not clamp the log-ratio before ``exp`` (`bandpo.policy_loss` clamps it to ±20); the two differ
  only when a token's probability moved by more than e^20, where both losses are clipped anyway.
- ``1 - (1 - ratio_low)`` in float32 rounds ``ratio_low`` by at most one ulp of 1.0 (6e-8).
- Refused, because per-token bounds cannot apply or a setting would be silently ignored:
  ``importance_sampling_level="sequence"`` (one ratio per sequence), the loss types ``cispo``, ``sapo``,
  ``vespo``, ``luspo`` (no ratio clip), TRL's ``epsilon`` / ``epsilon_high`` (the bounds come from
  ``method``), ``use_liger_kernel=True`` (deprecated in TRL; where it selects Liger's fused GRPO loss, that
  loss bypasses ``_compute_loss``), and a ``delta`` that disagrees with ``dual_clip_c``. The same checks run
  again in `BandPOTrainer`, so a field changed after ``BandPOConfig(...)`` is caught.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import InitVar, dataclass, field
from typing import Any

try:
    import torch
    import trl
    from trl import GRPOConfig, GRPOTrainer
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "bandpo.integrations.trl needs TRL and transformers: pip install 'bandpo[train]'"
    ) from error

from bandpo import metric_names as mn
from bandpo.integrations.trl_check import (
    SUPPORTED_TRL,
    TRLMechanismError,
    check_loss_applies_bounds,
    check_split_carries_bounds,
    mechanism_error,
)
from bandpo.integrations.trl_names import AGG_TO_LOSS_TYPE
from bandpo.losses import DUAL_CLIP_C, LOG_RATIO_CLAMP, band_metrics, check_dual_clip_c
from bandpo.methods import BoundMethod, get_method

__all__ = [
    "AGG_TO_LOSS_TYPE",
    "COMPATIBLE_LOSS_TYPES",
    "MAX_OPTIMIZER_STEPS_PER_GENERATION",
    "SUPPORTED_TRL",
    "BandPOConfig",
    "BandPOTrainer",
    "TRLMechanismError",
    "every_method_identical",
]

COMPATIBLE_LOSS_TYPES: tuple[str, ...] = ("grpo", "bnpo", "dr_grpo", "dapo")
_AGG_OF_LOSS_TYPE = {**{loss_type: agg for agg, loss_type in AGG_TO_LOSS_TYPE.items()}, "dapo": "token_mean"}
MAX_OPTIMIZER_STEPS_PER_GENERATION = 16
"""Above this many optimiser steps per generation batch (steps_per_generation × num_iterations /
gradient_accumulation_steps) the config warns: the paper takes 4, and dozens is usually a forgotten
``steps_per_generation`` after a change of ``gradient_accumulation_steps``."""
_DEFAULT_EPSILON = 0.2  # GRPOConfig.epsilon's default: any other value was set by the user
_TRL_CLIP_KEYS = ("clip_ratio/high_mean", "clip_ratio/region_mean", "clip_ratio/high_max")


def _check_trl_version() -> None:
    from packaging.version import Version

    version = Version(trl.__version__)
    if not Version("1.16") <= version < Version("1.17"):
        warnings.warn(
            f"bandpo's TRL integration supports trl{SUPPORTED_TRL}, found {trl.__version__}; BandPOTrainer "
            "checks TRL's loss against bandpo.policy_loss at start-up and refuses to train if they differ",
            stacklevel=3,
        )


_check_trl_version()


def every_method_identical(args: Any) -> bool:
    """True when TRL skips the old log-probabilities, so the ratio is always 1 (TRL 1.16's own criterion).

    TRL computes ``old_per_token_logps`` unless ``gradient_accumulation_steps`` is a multiple of
    ``steps_per_generation × num_iterations``: only then does every generation batch lie inside one optimiser
    step. (With vLLM importance-sampling correction TRL computes them anyway, but the ratio is still 1.)
    """
    generate_every = args.steps_per_generation * args.num_iterations
    return args.gradient_accumulation_steps % generate_every == 0


def _dual_clip_value(value: float | None) -> float | None:
    return None if value is None or math.isinf(value) else float(value)


def _same_dual_clip(a: float | None, b: float | None) -> bool:
    try:
        return _dual_clip_value(a) == _dual_clip_value(b)
    except TypeError:
        return False


@dataclass
class BandPOConfig(GRPOConfig):
    """`GRPOConfig` plus the bound method and the dual-clip constant; defaults follow the BandPO paper.

    Added fields:
        method: registered bound method (`bandpo.list_methods()`): band, band_upper, band_lower, clip,
            clip_higher, dcpo, ...
        method_params: its parameters with the registry's names, e.g. ``{"divergence": "kl", "delta": 0.05,
            "ratio_max": 10.0}`` (a dict or a JSON string). The band radius is ``method_params["delta"]``.
        dual_clip_c: the dual-clip constant c > 1 (`bandpo.losses.DUAL_CLIP_C`, the paper's 10); None or
            ``math.inf``: off.
        built_method (init only): ``method`` already built with ``method_params`` (TrainConfig's): used as is.

    ``delta`` (inherited from `GRPOConfig`) is TRL's dual-clip cap, **not** Band's trust-region radius δ
    (that is ``method_params["delta"]``): `BandPOConfig` sets it from ``dual_clip_c``; leave it unset (a
    ``delta`` that disagrees with ``dual_clip_c`` is refused).

    Changed defaults (paper): ``loss_type="grpo"`` (seq-mean-token-mean), ``dual_clip_c=DUAL_CLIP_C``,
    ``beta=0.001`` with ``use_bias_correction_kl=False`` (plain k3 KL to the reference, the paper's
    ``low_var_kl``; TRL's default True multiplies it by the ratio), ``learning_rate=1e-6``, 16 samples per
    prompt, and 4 optimiser steps per generation batch: 256 prompts × 16 samples in minibatches of 64
    prompts (``per_device_train_batch_size=16``, ``gradient_accumulation_steps=64``, for one device). Left
    unset, ``steps_per_generation`` is ``4 × gradient_accumulation_steps`` (TRL's default is
    ``gradient_accumulation_steps``: one optimiser step per generation batch, where every method is the same);
    passing ``generation_batch_size`` instead sizes it TRL's way. TRL's ``temperature=1.0``,
    ``scale_rewards="group"`` (GRPO advantages with std) and ``entropy_coef=0.0`` already match.
    """

    method: str = field(
        default="band", metadata={"help": "bound method: band, band_upper, clip, clip_higher, dcpo, ..."}
    )
    method_params: dict | str | None = field(
        default=None, metadata={"help": "bound method parameters (registry names), dict or JSON string"}
    )
    dual_clip_c: float | None = field(
        default=DUAL_CLIP_C,
        metadata={
            "help": f"dual-clip constant c > 1 (default: {DUAL_CLIP_C:g}, the paper's); None or inf: off"
        },
    )
    delta: float | None = field(
        default=math.nan,
        metadata={
            "help": "TRL's name for the dual-clip constant, not Band's radius δ (that is method_params['delta']): "
            "leave unset (NaN), it follows dual_clip_c"
        },
    )
    loss_type: str = field(default="grpo", metadata={"help": "TRL loss type: grpo, bnpo, dr_grpo or dapo"})
    beta: float = field(default=0.001, metadata={"help": "k3 KL coefficient to the reference policy"})
    use_bias_correction_kl: bool = field(
        default=False,
        metadata={
            "help": "multiply the k3 KL by the ratio (TRL's default True); False: the paper's plain k3"
        },
    )
    learning_rate: float = field(default=1e-6, metadata={"help": "learning rate (paper: 1e-6)"})
    num_generations: int | None = field(default=16, metadata={"help": "samples per prompt"})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "completions per micro-batch"})
    gradient_accumulation_steps: int = field(
        default=64, metadata={"help": "micro-batches per optimiser step"}
    )
    steps_per_generation: int | None = field(
        default=None,
        metadata={
            "help": "micro-batches per generation batch (default: 4 x gradient_accumulation_steps, i.e. 4 "
            "optimiser steps per generation batch, unless generation_batch_size is set)"
        },
    )
    built_method: InitVar[BoundMethod | None] = None

    def __post_init__(self, built_method: BoundMethod | None) -> None:
        if isinstance(self.method_params, str):
            try:
                self.method_params = json.loads(self.method_params) if self.method_params.strip() else None
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"method_params must be a JSON object, got {self.method_params!r}: {error}"
                ) from None
        if self.method_params is not None and not isinstance(self.method_params, dict):
            raise ValueError(f"method_params must be a dict of method parameters, got {self.method_params!r}")
        if built_method is not None:  # one named otherwise is not `method`'s: `bound_method` builds that
            self._built = (built_method.name, dict(self.method_params or {}), built_method)
        dual_clip_c = check_dual_clip_c(self.dual_clip_c)  # raises with the field name
        if not (isinstance(self.delta, float) and math.isnan(self.delta)):  # delta given: must agree
            self._check_delta()
        self.delta = dual_clip_c
        if self.generation_batch_size is None and self.steps_per_generation is None:
            self.steps_per_generation = 4 * self.gradient_accumulation_steps  # the paper's 4 steps
        super().__post_init__()
        self.validate()
        ratio_max = self.bound_method.params.get("ratio_max")
        if self.delta is not None and ratio_max is not None and ratio_max > self.delta:
            warnings.warn(
                f"method_params ratio_max={ratio_max} exceeds dual_clip_c={self.delta}: TRL also caps the ratio "
                "of positive-advantage tokens at c, so the effective upper bound is min(ratio_high, c); "
                "set ratio_max <= dual_clip_c to keep bandpo.policy_loss's dual-clip semantics",
                stacklevel=2,
            )
        steps = self.optimizer_steps_per_generation
        if steps > MAX_OPTIMIZER_STEPS_PER_GENERATION:
            warnings.warn(
                f"one generation batch feeds {steps:g} optimiser steps (steps_per_generation="
                f"{self.steps_per_generation} x num_iterations={self.num_iterations} / "
                f"gradient_accumulation_steps={self.gradient_accumulation_steps}): the policy drifts far from "
                "the sampler and most tokens clip; the paper takes 4. Leave steps_per_generation unset "
                "(4 x gradient_accumulation_steps) or lower it",
                stacklevel=2,
            )
        if every_method_identical(self):
            warnings.warn(
                "every method is identical with this config: each generation batch lies inside one optimiser step "
                f"(gradient_accumulation_steps={self.gradient_accumulation_steps} is a multiple of "
                f"steps_per_generation={self.steps_per_generation} x num_iterations={self.num_iterations}), so "
                "the ratio is always 1 and no bound ever binds; use several optimiser steps per generation batch "
                "(the paper: 4)",
                stacklevel=2,
            )

    def _check_delta(self) -> None:
        if not _same_dual_clip(self.delta, self.dual_clip_c):
            raise ValueError(
                f"delta={self.delta!r} disagrees with dual_clip_c={self.dual_clip_c!r}: delta is TRL's name for "
                "the dual-clip constant, which BandPOConfig sets from dual_clip_c; set dual_clip_c only"
            )

    def validate(self) -> None:
        """Refuse settings under which per-token bounds cannot apply or a field would be silently ignored.

        Run by ``__post_init__`` and again by `BandPOTrainer`, so a field changed after construction (e.g.
        ``args.loss_type = "sapo"``) is caught before training.
        """
        self.bound_method  # noqa: B018 - raises with the valid names and parameters
        self._check_delta()
        if self.importance_sampling_level != "token":
            raise ValueError(
                f"importance_sampling_level={self.importance_sampling_level!r} gives one ratio per sequence, so "
                "per-token bounds cannot apply; set importance_sampling_level='token'"
            )
        if self.loss_type not in COMPATIBLE_LOSS_TYPES:
            raise ValueError(
                f"loss_type={self.loss_type!r} has no per-token ratio clip for bounds to act on; use one of "
                f"{list(COMPATIBLE_LOSS_TYPES)}"
            )
        if self.epsilon != _DEFAULT_EPSILON or self.epsilon_high is not None:
            raise ValueError(
                f"epsilon={self.epsilon!r}, epsilon_high={self.epsilon_high!r}: TRL's fixed clip range is ignored "
                "by BandPOConfig (the bounds come from method); for a fixed range set method='clip' and "
                "method_params={'eps_low': ..., 'eps_high': ...}, and leave epsilon and epsilon_high unset"
            )
        if self.use_liger_kernel:
            raise ValueError(
                "use_liger_kernel=True is refused: TRL deprecates it, and where it selects Liger's fused GRPO "
                "loss (earlier TRL releases) that loss bypasses _compute_loss and the per-token bounds; set "
                "use_liger_kernel=False, or use the Hub kernels with model_init_kwargs={'use_kernels': True}"
            )

    @property
    def bound_method(self) -> BoundMethod:
        """The configured `BoundMethod`: built once, and again after ``method`` or ``method_params`` changed."""
        params = self.method_params or {}
        if getattr(self, "_built", (None, None))[:2] != (self.method, params):
            self._built = (self.method, dict(params), get_method(self.method, **params))
        return self._built[2]

    @property
    def optimizer_steps_per_generation(self) -> float:
        """Optimiser steps fed by one generation batch, over its ``num_iterations`` passes."""
        return self.steps_per_generation * self.num_iterations / self.gradient_accumulation_steps


def _pool_over_processes(
    gather: Any,
    metrics: dict[str, torch.Tensor],
    tokens: torch.Tensor,
    row_high_max: torch.Tensor,
) -> dict[str, float]:
    """`band_metrics` of one micro-batch per process → the same metrics over the tokens of all processes.

    A token mean is pooled as TRL pools its own (sum of numerators over sum of token counts, not a mean of
    per-process means); ``ratio/max`` and TRL's ``clip_ratio/high_max`` are maxima. A per-bin fraction is
    present only where the bin has tokens on some process. One `gather` (all processes must call it).

    Args:
        gather: ``accelerator.gather``: (1, K) on each process → (processes, K).
        metrics: `band_metrics` of the local micro-batch (with the per-bin token counts).
        tokens: number of valid tokens of the local micro-batch (0-dim).
        row_high_max: largest per-row fraction of upward-clipped tokens (NaN without valid rows; 0-dim).
    """
    bins = mn.PROB_BIN_LABELS
    binned = {*mn.CLIP_FRAC_UP_BINS, *mn.CLIP_FRAC_DOWN_BINS, *mn.CLIP_TOKENS_BINS}
    means = [key for key in metrics if key not in binned and key != mn.RATIO_MAX]

    def stacked(keys: list[str]) -> torch.Tensor:
        return torch.stack([metrics[key] for key in keys]).double()  # counts stay exact in float64

    tokens = tokens.double()
    bin_tokens = stacked([mn.clip_tokens_bin(label) for label in bins])  # (n_bins,)
    bin_up = stacked([mn.clip_frac_up_bin(label) for label in bins]) * bin_tokens
    bin_down = stacked([mn.clip_frac_down_bin(label) for label in bins]) * bin_tokens
    sums = torch.cat([stacked(means) * tokens, bin_up, bin_down, bin_tokens])
    maxima = torch.stack([metrics[mn.RATIO_MAX], row_high_max]).double()
    local = torch.cat([sums, tokens.reshape(1), maxima])
    gathered = gather(local.reshape(1, -1)).reshape(-1, local.numel())  # (processes, K)
    n_sums = sums.numel()
    totals = gathered[:, : n_sums + 1].sum(dim=0).cpu().tolist()  # (K_sums + 1,)
    maxima = gathered[:, n_sums + 1 :]  # (processes, 2)
    maxima = torch.where(maxima.isnan(), -math.inf, maxima).amax(dim=0).cpu().tolist()  # NaN: none
    n_tokens = totals[n_sums]
    values = {key: totals[i] / max(n_tokens, 1.0) for i, key in enumerate(means)}
    values[mn.RATIO_MAX] = maxima[0]
    values[_TRL_CLIP_KEYS[2]] = maxima[1] if maxima[1] > -math.inf else math.nan
    offset = len(means)
    n_bins = len(bins)
    for i, label in enumerate(bins):
        count = totals[offset + 2 * n_bins + i]
        values[mn.clip_tokens_bin(label)] = count
        if count > 0:  # no token of this bin on any process: no value, not 0
            values[mn.clip_frac_up_bin(label)] = totals[offset + i] / count
            values[mn.clip_frac_down_bin(label)] = totals[offset + n_bins + i] / count
    # TRL's counters, from the uncapped ratio (the same tokens as bandpo's clip/frac_up and clip/frac)
    values[_TRL_CLIP_KEYS[0]] = values[mn.CLIP_FRAC_UP]
    values[_TRL_CLIP_KEYS[1]] = values[mn.CLIP_FRAC]
    return values


class BandPOTrainer(GRPOTrainer):
    """`GRPOTrainer` with per-token ratio bounds from a `bandpo` bound method (see the module docstring).

    Takes exactly `GRPOTrainer`'s arguments; `args` must be a `BandPOConfig`. At start-up it validates
    ``args`` again and checks, on a two-row batch and without a forward pass of the model, that TRL's loss
    applies per-token bounds exactly as `bandpo.policy_loss` does; a TRL where it does not raises
    `TRLMechanismError`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        config = kwargs.get("args", args[2] if len(args) > 2 else None)
        if not isinstance(config, BandPOConfig):
            raise TypeError(
                f"BandPOTrainer needs args=BandPOConfig(...), got {type(config).__name__}; BandPOConfig takes "
                "every GRPOConfig field plus method, method_params and dual_clip_c"
            )
        config.validate()
        super().__init__(*args, **kwargs)
        self.bound_method = config.bound_method
        # state of one _compute_loss call: the policy's logps of the micro-batch and the bounds applied
        self._capturing = False
        self._captured_logps: torch.Tensor | None = None
        self._captured_bounds: tuple[torch.Tensor, torch.Tensor] | None = None
        check_split_carries_bounds()
        check_loss_applies_bounds(self, _AGG_OF_LOSS_TYPE[self.loss_type])

    # -- step 1: bounds once per generation batch -------------------------------------------------------
    def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        old_logp = output.get("old_per_token_logps")
        if old_logp is None:
            if not every_method_identical(self.args):
                raise mechanism_error(
                    "its generation batch has no 'old_per_token_logps' although the policy moves within a "
                    "generation batch (gradient_accumulation_steps is not a multiple of steps_per_generation x "
                    "num_iterations)"
                )
        else:
            bounds = self.bound_method(old_logp)
            output["ratio_low"], output["ratio_high"] = bounds.ratio_low, bounds.ratio_high
        return output

    # -- step 3: capture the policy's logps; derive the bounds from them when TRL has no old logps --------
    def _get_per_token_logps_and_entropies(self, *args: Any, **kwargs: Any) -> Any:
        result = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        if self._capturing and self._captured_logps is None:
            self._captured_logps = result[0]
            if self._captured_bounds is None:  # no old logps: the policy has not moved since sampling
                bounds = self.bound_method(result[0].detach())
                self._captured_bounds = (bounds.ratio_low, bounds.ratio_high)
                self._set_epsilons(*self._captured_bounds)
        return result

    def _set_epsilons(self, ratio_low: torch.Tensor, ratio_high: torch.Tensor) -> None:
        self.epsilon_low = 1.0 - ratio_low  # (B, T)
        self.epsilon_high = ratio_high - 1.0  # (B, T)

    def _bounds_of(self, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The micro-batch's bounds: carried from generation, else from its old logps; None without those."""
        ratio_low, ratio_high = inputs.get("ratio_low"), inputs.get("ratio_high")
        if (ratio_low is None) != (ratio_high is None):
            raise ValueError(
                "the batch holds only one of ratio_low / ratio_high; compute both with the bound method from "
                "old_per_token_logps (or neither: BandPOTrainer then does)"
            )
        if ratio_low is None:
            old_logp = inputs.get("old_per_token_logps")
            if old_logp is None:
                return None  # TRL has no old logps (ratio ≡ 1): bounds from its forward pass (step 3)
            ratio_low, ratio_high = self.bound_method(old_logp)
        shape = inputs["completion_ids"].shape
        if ratio_low.shape != shape or ratio_high.shape != shape:
            raise ValueError(
                f"ratio_low / ratio_high have shapes {tuple(ratio_low.shape)} / {tuple(ratio_high.shape)}, "
                f"completion_ids {tuple(shape)}: the bounds must be per token of the same rows"
            )
        return ratio_low, ratio_high

    # -- step 2 and 4: per-token epsilons around TRL's own loss, then the diagnostics -----------------------
    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        saved = (self.epsilon_low, self.epsilon_high)
        self._captured_logps = None
        self._captured_bounds = self._bounds_of(inputs)
        if self._captured_bounds is not None:
            self._set_epsilons(*self._captured_bounds)
        self._capturing = True
        try:
            loss = super()._compute_loss(model, inputs)
        finally:
            self.epsilon_low, self.epsilon_high = saved
            self._capturing = False
        self._log_band_metrics(inputs)
        return loss

    @torch.no_grad()
    def _log_band_metrics(self, inputs: dict[str, Any]) -> None:
        logp, bounds = self._captured_logps, self._captured_bounds
        if logp is None or bounds is None:
            return
        logp = logp.detach()
        old_logp = inputs.get("old_per_token_logps")
        old_logp = logp if old_logp is None else old_logp
        mask = inputs["completion_mask"]
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]
        advantages = inputs["advantages"]
        metrics = band_metrics(logp, old_logp, advantages, mask, bounds, dual_clip_c=self.args.delta)
        # per row, the fraction of tokens clipped above (TRL's clip_ratio/high_max), from the uncapped ratio
        valid = mask > 0  # (B, T)
        advantages = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages  # (B, 1) or (B, T)
        ratio = (logp.float() - old_logp.float()).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP).exp()  # (B, T)
        up = valid & (advantages > 0) & (ratio > bounds[1])  # (B, T)
        per_row = up.sum(-1) / valid.sum(-1)  # (B,), NaN for a row without valid tokens
        row_high_max = torch.where(per_row.isnan(), -math.inf, per_row).amax()  # -inf: no valid row
        values = _pool_over_processes(self.accelerator.gather, metrics, valid.sum(), row_high_max)
        mode = "train" if self.model.training else "eval"
        logged = self._metrics[mode]
        for key in _TRL_CLIP_KEYS:  # replace the values TRL appended in this call
            value = values.pop(key)
            if logged.get(key):
                logged[key][-1] = value
        for key, value in values.items():
            logged[key].append(value)
