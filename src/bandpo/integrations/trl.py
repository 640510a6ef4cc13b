"""BandPO inside TRL's `GRPOTrainer` (supported: trl >= 1.16, < 1.17).

`BandPOTrainer` is a `GRPOTrainer` whose ratio clip is per token: the bounds of a bound method (`band`,
`clip`, `clip_higher`, `dcpo`, `band_upper`, ... from `bandpo.methods`) replace TRL's fixed
``[1 - epsilon, 1 + epsilon_high]``. Everything else (generation, rewards, advantages, KL, aggregation,
logging, checkpoints) is TRL's own code.

How (the mechanism the contract test `tests/integrations/test_trl.py` pins down):

1. Once per generation batch, after TRL has sampled and scored it, the bounds are computed from
   ``old_per_token_logps`` (the sampling policy's log-probabilities) and stored in the batch as
   ``ratio_low`` / ``ratio_high``, (B, T) tensors; TRL's shuffle and split carry them with their tokens
   through every minibatch and every iteration.
2. Around each ``super()._compute_loss``, ``self.epsilon_low = 1 - ratio_low`` and
   ``self.epsilon_high = ratio_high - 1`` (per-token tensors: TRL 1.16 computes
   ``clamp(coef_1, 1 - epsilon_low, 1 + epsilon_high)``, which broadcasts), then they are restored.
   TRL's own ``clip_ratio/*`` metrics then count per-token clipping too.
3. When TRL skips ``old_per_token_logps`` (TRL 1.16's criterion, without vLLM: ``gradient_accumulation_steps
   % (steps_per_generation × num_iterations) == 0``, i.e. every generation batch lies inside one optimiser
   step, so the policy has not moved since sampling and TRL uses ``per_token_logps.detach()``), the bounds
   come from the same detached log-probabilities, i.e. from the sampling policy, computed as soon as TRL's
   forward pass returns them. In that regime the ratio is identically 1 and no method clips, so every
   method is the same: the config warns (`every_method_identical`).
4. The clip diagnostics of `bandpo.losses.band_metrics` (catalogued keys: ``clip/frac_up``, per-p_old-bin
   fractions, mean bounds, ...) are appended to TRL's ``self._metrics`` and logged with TRL's metrics, which
   TRL averages over the micro-batches of a logging step. A per-bin fraction is appended only for
   micro-batches with tokens in that bin (``clip/tokens_<bin>`` > 0, summed over processes), so an empty
   bin does not drag the mean to 0; a logging step without any such token has no value for the key.

Mapping of the paper's loss to TRL (and the differences):

- Dual-clip c (paper: 10) is TRL's ``delta``, which TRL applies as ``coef_1 = clamp(coef_1, max=delta)`` in
  the unclipped term for *both* signs of the advantage. For A < 0 this is exactly dual-clip (loss capped at
  -A·c). For A > 0 it also caps the ratio at ``delta``; the result equals `bandpo.policy_loss` whenever every
  ``ratio_high <= delta``, which holds for every built-in method at its defaults (``ratio_max`` 10 = c). A
  config with ``ratio_max > delta`` gets a warning.
- Aggregation: our ``agg`` names map to TRL's ``loss_type`` (`AGG_TO_LOSS_TYPE`, defined in
  `bandpo.training.config`): ``seq_mean_token_mean`` → ``grpo``, ``token_mean`` → ``bnpo`` (per
  micro-batch), ``seq_mean_token_sum_norm`` → ``dr_grpo``, which divides by rows × ``max_completion_length``
  and so equals ``policy_loss(..., agg="seq_mean_token_sum_norm", max_len=max_completion_length)``. TRL's
  ``dapo`` (token mean over the accumulated batch) is accepted too. ``seq_mean_token_sum`` has no TRL loss
  type. One difference with ``grpo``: TRL averages over *every* row, so a fully masked row (a truncated
  completion under ``mask_truncated_completions=True``) counts as a 0 in the mean, while ``policy_loss``
  leaves rows without valid tokens out of the mean (the two agree whenever every row has a valid token).
- KL to the reference (``beta`` > 0): TRL adds ``beta × k3`` per token before aggregating, with
  k3 = exp(ref - logp) - (ref - logp) - 1, which equals ``policy_loss + beta × aggregate_loss(kl_penalty(logp,
  ref_logp, "k3"))`` (the paper's ``low_var_kl``, tested). TRL 1.16 defaults ``use_bias_correction_kl=True``
  (k3 multiplied by the ratio, DeepSeek-V3.2); `BandPOConfig` defaults it to False, the paper's plain k3.
  `kl_penalty` clamps ``ref - logp`` to ±20 and k3 to ±10 as verl does; TRL does not clamp, so the two
  differ only for tokens more than 10 nats of k3 away from the reference.
- TRL does not clamp the log-ratio before ``exp`` (`bandpo.policy_loss` clamps it to ±20); the two differ
  only when a token's probability moved by more than e^20, where both losses are clipped anyway.
- ``1 - (1 - ratio_low)`` in float32 rounds ``ratio_low`` by at most one ulp of 1.0 (6e-8).
- Refused, because per-token bounds cannot apply: ``importance_sampling_level="sequence"`` (one ratio per
  sequence) and the loss types ``cispo``, ``sapo``, ``vespo``, ``luspo`` (no ratio clip). TRL's
  ``epsilon`` / ``epsilon_high`` are ignored: the bounds come from ``method``.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
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
from bandpo.methods import BoundMethod, get_method
from bandpo.training.config import AGG_TO_LOSS_TYPE

__all__ = [
    "AGG_TO_LOSS_TYPE",
    "COMPATIBLE_LOSS_TYPES",
    "SUPPORTED_TRL",
    "BandPOConfig",
    "BandPOTrainer",
    "every_method_identical",
]

SUPPORTED_TRL = ">=1.16,<1.17"
COMPATIBLE_LOSS_TYPES: tuple[str, ...] = ("grpo", "bnpo", "dr_grpo", "dapo")


def _check_trl_version() -> None:
    from packaging.version import Version

    version = Version(trl.__version__)
    if not Version("1.16") <= version < Version("1.17"):
        warnings.warn(
            f"bandpo's TRL integration supports trl{SUPPORTED_TRL}, found {trl.__version__}; run "
            "tests/integrations/test_trl.py, whose contract test checks TRL's loss against bandpo.policy_loss",
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


@dataclass
class BandPOConfig(GRPOConfig):
    """`GRPOConfig` plus the bound method; defaults follow the BandPO paper (paper-notes §5).

    Added fields:
        method: registered bound method (`bandpo.list_methods()`): band, band_upper, band_lower, clip,
            clip_higher, dcpo, ...
        method_params: its parameters with the registry's names, e.g. ``{"divergence": "kl", "delta": 0.05,
            "ratio_max": 10.0}`` (a dict or a JSON string). The band radius is ``method_params["delta"]``;
            TRL's own ``delta`` field is the dual-clip constant c.

    Changed defaults (paper): ``loss_type="grpo"`` (seq-mean-token-mean), ``delta=10.0`` (dual-clip c),
    ``beta=0.001`` with ``use_bias_correction_kl=False`` (plain k3 KL to the reference, the paper's
    ``low_var_kl``; TRL's default True multiplies it by the ratio), ``learning_rate=1e-6``, 16 samples per
    prompt, and 4 optimiser steps per generation batch: 256 prompts × 16 samples in minibatches of 64
    prompts (``per_device_train_batch_size=16``, ``gradient_accumulation_steps=64``,
    ``steps_per_generation=256``, for one device; passing ``generation_batch_size`` replaces the last).
    TRL's ``temperature=1.0``, ``scale_rewards="group"`` (GRPO advantages with std) and ``entropy_coef=0.0``
    already match.
    """

    method: str = field(
        default="band", metadata={"help": "bound method: band, band_upper, clip, clip_higher, dcpo, ..."}
    )
    method_params: dict | str | None = field(
        default=None, metadata={"help": "bound method parameters (registry names), dict or JSON string"}
    )
    loss_type: str = field(default="grpo", metadata={"help": "TRL loss type: grpo, bnpo, dr_grpo or dapo"})
    delta: float | None = field(
        default=10.0, metadata={"help": "dual-clip constant c (TRL's delta); None: off"}
    )
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
        default=256, metadata={"help": "micro-batches per generation batch"}
    )

    def __post_init__(self) -> None:
        if isinstance(self.method_params, str):
            try:
                self.method_params = json.loads(self.method_params) if self.method_params.strip() else None
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"method_params must be a JSON object, got {self.method_params!r}: {error}"
                ) from None
        if self.method_params is not None and not isinstance(self.method_params, dict):
            raise ValueError(f"method_params must be a dict of method parameters, got {self.method_params!r}")
        if self.generation_batch_size is not None and self.steps_per_generation == 256:
            self.steps_per_generation = None  # the user sized the generation batch; drop our default
        super().__post_init__()
        method = self.bound_method  # raises with the valid names and parameters
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
        if self.delta is not None and (isinstance(self.delta, bool) or not self.delta > 1):
            raise ValueError(f"delta (the dual-clip constant c) must be > 1 or None, got {self.delta!r}")
        ratio_max = method.params.get("ratio_max")
        if self.delta is not None and ratio_max is not None and ratio_max > self.delta:
            warnings.warn(
                f"method_params ratio_max={ratio_max} exceeds TRL's delta={self.delta}: TRL also caps the ratio "
                "of positive-advantage tokens at delta, so the effective upper bound is min(ratio_high, delta); "
                "set ratio_max <= delta to keep bandpo.policy_loss's dual-clip semantics",
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

    @property
    def bound_method(self) -> BoundMethod:
        """The configured `BoundMethod` (rebuilt on each access; cheap)."""
        return get_method(self.method, **(self.method_params or {}))


class BandPOTrainer(GRPOTrainer):
    """`GRPOTrainer` with per-token ratio bounds from a `bandpo` bound method (see the module docstring).

    Takes exactly `GRPOTrainer`'s arguments; `args` must be a `BandPOConfig`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        config = kwargs.get("args", args[2] if len(args) > 2 else None)
        if not isinstance(config, BandPOConfig):
            raise TypeError(
                f"BandPOTrainer needs args=BandPOConfig(...), got {type(config).__name__}; BandPOConfig takes "
                "every GRPOConfig field plus method and method_params"
            )
        super().__init__(*args, **kwargs)
        self.bound_method = config.bound_method
        # state of one _compute_loss call: the policy's logps of the micro-batch and the bounds applied
        self._capturing = False
        self._captured_logps: torch.Tensor | None = None
        self._captured_bounds: tuple[torch.Tensor, torch.Tensor] | None = None

    # -- step 1: bounds once per generation batch -------------------------------------------------------
    def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        old_logp = output.get("old_per_token_logps")
        if old_logp is not None:
            bounds = self.bound_method(old_logp)
            output["ratio_low"], output["ratio_high"] = bounds.ratio_low, bounds.ratio_high
        return output

    # -- step 3: capture the policy's logps; derive the bounds from them when TRL has no old logps --------
    def _get_per_token_logps_and_entropies(self, *args: Any, **kwargs: Any) -> Any:
        result = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        if self._capturing and self._captured_logps is None:
            self._captured_logps = result[0]
            if self._captured_bounds is None:  # no optimiser step since sampling: these are the old logps
                bounds = self.bound_method(result[0].detach())
                self._captured_bounds = (bounds.ratio_low, bounds.ratio_high)
                self._set_epsilons(*self._captured_bounds)
        return result

    def _set_epsilons(self, ratio_low: torch.Tensor, ratio_high: torch.Tensor) -> None:
        self.epsilon_low = 1.0 - ratio_low  # (B, T)
        self.epsilon_high = ratio_high - 1.0  # (B, T)

    # -- step 2 and 4: per-token epsilons around TRL's own loss, then the diagnostics -----------------------
    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        saved = (self.epsilon_low, self.epsilon_high)
        self._captured_logps = None
        self._captured_bounds = None
        if inputs.get("ratio_low") is not None:
            self._captured_bounds = (inputs["ratio_low"], inputs["ratio_high"])
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
        from bandpo.losses import band_metrics

        logp, bounds = self._captured_logps, self._captured_bounds
        if logp is None or bounds is None:
            return
        old_logp = inputs.get("old_per_token_logps")
        old_logp = logp.detach() if old_logp is None else old_logp
        mask = inputs["completion_mask"]
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]
        dual_clip_c = None if self.args.delta is None or math.isinf(self.args.delta) else self.args.delta
        metrics = band_metrics(
            logp.detach(), old_logp, inputs["advantages"], mask, bounds, dual_clip_c=dual_clip_c
        )
        mode = "train" if self.model.training else "eval"
        # per-bin fractions are pooled over processes as counts (clipped / tokens of the bin); the rest is a
        # mean over processes. One reduce and one host sync for all keys.
        counts = {label: metrics.pop(mn.clip_tokens_bin(label)) for label in mn.PROB_BIN_LABELS}
        binned = [mn.clip_frac_up_bin(label) for label in mn.PROB_BIN_LABELS] + [
            mn.clip_frac_down_bin(label) for label in mn.PROB_BIN_LABELS
        ]
        plain = [key for key in metrics if key not in binned]
        n_processes = self.accelerator.num_processes
        tokens = torch.stack(list(counts.values()))  # (n_bins,)
        clipped = torch.stack([metrics[key] for key in binned]) * tokens.repeat(2)  # (2 n_bins,)
        local = torch.cat([torch.stack([metrics[key] for key in plain]) / n_processes, clipped, tokens])
        totals = self.accelerator.reduce(local.double(), reduction="sum").cpu().tolist()
        values = dict(zip(plain, totals[: len(plain)], strict=True))
        bin_clipped = totals[len(plain) : len(plain) + len(binned)]
        bin_tokens = totals[len(plain) + len(binned) :]
        for i, label in enumerate(mn.PROB_BIN_LABELS):
            values[mn.clip_tokens_bin(label)] = bin_tokens[i]
            if bin_tokens[i] > 0:  # no token of this bin in the micro-batch: no value, not 0
                values[mn.clip_frac_up_bin(label)] = bin_clipped[i] / bin_tokens[i]
                values[mn.clip_frac_down_bin(label)] = (
                    bin_clipped[len(mn.PROB_BIN_LABELS) + i] / bin_tokens[i]
                )
        for key, value in values.items():
            self._metrics[mode][key].append(value)
