"""BandPO as a policy loss of stock verl (>= 0.9.1, < 0.10): `actor_rollout_ref.actor.policy_loss.loss_mode=bandpo`.

`pip install bandpo[verl]` declares this module as a `verl.plugins` entry point. `import verl` loads every
entry point of that group (unless `VERL_USE_EXTERNAL_PLUGINS=none`), so the loss is in verl's registry on
the driver and on every Ray worker without any change to verl or to the launch command.

Parameters come from `policy_loss` in the actor config. With verl's own `PolicyLossConfig` (no `_target_`
change) the loss runs the paper's Band defaults: Band-KL, δ = 0.05, ratio cap 10, no relaxation; the dual-clip
constant is verl's `actor.clip_ratio_c`, whose default is 3 where the paper used 10 (set it). To set them, select
`BandPOPolicyLossConfig` (a `PolicyLossConfig` subclass):

    actor_rollout_ref.actor.policy_loss._target_=bandpo.integrations.verl.BandPOPolicyLossConfig
    actor_rollout_ref.actor.policy_loss.loss_mode=bandpo
    +actor_rollout_ref.actor.policy_loss.method=band
    +actor_rollout_ref.actor.policy_loss.delta=0.05

(`+` because verl's YAML does not list these keys; a config file can declare them instead, see
`examples/verl/`). The dual-clip constant reuses verl's own `actor.clip_ratio_c` unless
`policy_loss.dual_clip_c` is set, so a GRPO (`loss_mode=vanilla`) and a BandPO run share one setting.

Where this departs from verl's `vanilla` loss, and why:
    - The per-token loss is `bandpo.losses.policy_loss` (ratio clamped into [ratio_low, ratio_high] from the
      chosen bound method, dual-clip for A < 0) computed in float32 at least; it is then aggregated with
      verl's `agg_loss` and the `global_batch_info` verl fills in per mini-batch, so micro-batching and
      data-parallel size do not change the loss or its gradient (the same contract as verl's own losses).
    - Bounds are recomputed in every call, on the valid tokens only (padding gets the neutral [1, 1]). verl
      calls the loss once per micro-batch on freshly sliced tensors, so there is no stable key to cache on;
      the bounds are a pure function of `old_log_prob`, so recomputation gives identical numbers for every
      PPO epoch. Band-KL's bounds are elementwise (a table lookup in float32, a fixed-step Newton solve in
      float64), a small cost next to the forward/backward pass. Host syncs per call: the valid-token gather
      and the one-transfer metric read (the bound method skips bandpo.band's input check).
    - Metrics: verl's `actor/pg_clipfrac`, `actor/ppo_kl` and `actor/pg_clipfrac_lower` (the same meaning as
      in `vanilla`, so dashboards line up) plus every `bandpo.metric_names` diagnostic under `actor/`, as
      floats read from the device in one transfer. verl averages them over micro-batches (so
      `actor/ratio/max` is a mean of micro-batch maxima).

verl's registry silently overwrites names; this module refuses to: registering over a name that holds a loss
not made by this module raises `ValueError`. Re-importing (or reloading) this module is a no-op.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import Tensor

from bandpo import metric_names as mn
from bandpo.integrations.engine_loss import (
    build_method,
    method_params,
    metrics_to_floats,
    read_field,
    valid_token_bounds,
)
from bandpo.losses import check_dual_clip_c, per_token_policy_loss, policy_metrics
from bandpo.methods import BoundMethod

try:
    from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY, agg_loss, register_policy_loss
    from verl.workers.config import PolicyLossConfig
except ImportError as err:  # pragma: no cover - exercised only without verl
    raise ImportError(
        "bandpo.integrations.verl needs verl: pip install 'bandpo[verl]' (verl pins its own transformers, "
        "so install it in a separate virtual environment)"
    ) from err

__all__ = [
    "LOSS_NAME",
    "BandPOPolicyLossConfig",
    "compute_policy_loss_bandpo",
    "register_bandpo_loss",
    "resolve_loss_settings",
]

LOSS_NAME = "bandpo"
"""The `policy_loss.loss_mode` that selects BandPO in verl."""

# verl's own metric names for the clipped surrogate (logged by its `vanilla` loss)
VERL_PG_CLIPFRAC = "actor/pg_clipfrac"
VERL_PPO_KL = "actor/ppo_kl"
VERL_PG_CLIPFRAC_LOWER = "actor/pg_clipfrac_lower"
VERL_METRIC_PREFIX = "actor/"

_CONFIG_SECTION = "policy_loss (bandpo)"  # how errors in the method's settings begin
_MARKER = "_bandpo_policy_loss"  # attribute set on functions registered by this module


@dataclasses.dataclass(kw_only=True)
class BandPOPolicyLossConfig(PolicyLossConfig):
    """verl `PolicyLossConfig` with the bound method and its parameters (`policy_loss._target_=` this class).

    Args:
        loss_mode: must be "bandpo" (the fields below are read only by the bandpo loss).
        method: a `bandpo.list_methods()` name: band (BandPO), band_upper, band_lower, clip, clip_higher,
            dcpo.
        divergence, delta, ratio_max, relax, eps_low, eps_high, lower_side, upper_side: parameters of the
            method (see `bandpo.methods`); None keeps the method's own default
            (`bandpo.method_defaults_table()` lists them). Setting one the method does not take is an error.
        method_options: parameters of a registered method that have no field here (a user-registered
            method's own), as {name: value}.
        dual_clip_c: dual-clip constant c > 1 for A < 0 tokens; None uses the actor's `clip_ratio_c`
            (verl's field; the paper sets it to 10), `inf` disables dual-clip (`bandpo.check_dual_clip_c`).

    Inherited verl fields (clip_cov_*, kl_cov_ratio, ppo_kl_coef, dro_beta, rollout_correction) are not
    read by the bandpo loss.
    """

    loss_mode: str = LOSS_NAME
    method: str = "band"
    divergence: str | None = None
    delta: float | None = None
    ratio_max: float | None = None
    relax: bool | None = None
    eps_low: float | None = None
    eps_high: float | None = None
    lower_side: str | None = None
    upper_side: str | None = None
    method_options: dict[str, Any] | None = None
    dual_clip_c: float | None = None

    def __post_init__(self) -> None:
        if self.loss_mode != LOSS_NAME:
            raise ValueError(
                f"policy_loss.loss_mode is {self.loss_mode!r} but policy_loss._target_ is "
                f"BandPOPolicyLossConfig, whose fields only the {LOSS_NAME!r} loss reads; set "
                f"policy_loss.loss_mode={LOSS_NAME} or drop the _target_ override"
            )
        check_dual_clip_c(self.dual_clip_c, "policy_loss.dual_clip_c")
        build_method(self.method, method_params(self), _CONFIG_SECTION)  # validates; errors name the field


def resolve_loss_settings(config: Any) -> tuple[BoundMethod, float | None]:
    """(bound method, dual-clip c or None) from a verl actor config (`ActorConfig` or its DictConfig).

    Reads `config.policy_loss` (a `BandPOPolicyLossConfig`, verl's `PolicyLossConfig` or a mapping with the
    same keys); unset fields take the method's defaults; c falls back to `config.clip_ratio_c`.
    """
    if config is None:
        raise ValueError(
            f"the {LOSS_NAME!r} policy loss needs the actor config (verl passes config=actor_config); got None"
        )
    loss_config = read_field(config, "policy_loss") or {}
    method = build_method(
        read_field(loss_config, "method") or "band", method_params(loss_config), _CONFIG_SECTION
    )
    c = read_field(loss_config, "dual_clip_c")
    field_name = "policy_loss.dual_clip_c"
    if c is None:
        c, field_name = read_field(config, "clip_ratio_c"), "actor.clip_ratio_c"
    return method, check_dual_clip_c(c, field_name)


def _verl_metrics(metrics: dict[str, Tensor]) -> dict[str, float]:
    """verl's three surrogate metrics plus bandpo's catalogue under `actor/`, read in one device transfer."""
    # verl logs actor/pg_loss itself
    by_key = metrics_to_floats({key: value for key, value in metrics.items() if key != mn.LOSS_POLICY})
    out = {
        VERL_PG_CLIPFRAC: by_key[mn.CLIP_FRAC],
        VERL_PPO_KL: by_key[mn.APPROX_KL_K1],
        VERL_PG_CLIPFRAC_LOWER: by_key[mn.CLIP_FRAC_DUAL],
    }
    out.update({VERL_METRIC_PREFIX + key: value for key, value in by_key.items()})
    return out


def compute_policy_loss_bandpo(
    old_log_prob: Tensor,
    log_prob: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    loss_agg_mode: str = "token-mean",
    config: Any = None,
    rollout_is_weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """verl policy loss "bandpo": bandpo's clipped surrogate with per-token bounds, aggregated by verl.

    Args:
        old_log_prob, log_prob, advantages, response_mask: (B, T) micro-batch tensors, as verl passes them.
        loss_agg_mode: verl's aggregation ("token-mean", "seq-mean-token-mean", ...).
        config: the actor config; `config.policy_loss` holds the method (see `resolve_loss_settings`) and
            `config.global_batch_info` the global token/sequence counts and dp size that `agg_loss` uses.
        rollout_is_weights: optional (B, T) rollout-correction weights multiplying the per-token loss.

    Returns:
        (scalar loss for `.backward()`, metrics as floats), verl's `PolicyLossFn` contract.

    Notes:
        With `global_batch_info` empty and dp size 1, the loss equals
        `bandpo.policy_loss(log_prob, old_log_prob, advantages, response_mask, method=..., agg=...)` with
        the aggregation name's dashes replaced by underscores (up to verl's 1e-8 in seq-mean-token-mean).
    """
    method, c = resolve_loss_settings(config)
    mask = response_mask.bool()  # (B, T)
    bounds = valid_token_bounds(method, old_log_prob, mask)
    terms = per_token_policy_loss(log_prob, old_log_prob, advantages, mask, bounds, dual_clip_c=c)
    per_token_loss = terms.per_token_loss  # (B, T), 0 on padding
    if rollout_is_weights is not None:
        per_token_loss = per_token_loss * rollout_is_weights
    global_batch_info = read_field(config, "global_batch_info") or {}
    loss = agg_loss(
        loss_mat=per_token_loss, loss_mask=mask, loss_agg_mode=loss_agg_mode, **dict(global_batch_info)
    )
    return loss, _verl_metrics(policy_metrics(terms))


def register_bandpo_loss(name: str = LOSS_NAME) -> None:
    """Put `compute_policy_loss_bandpo` in verl's policy-loss registry under `name`.

    Idempotent for a name that already holds a loss from this module (re-import, `importlib.reload`).

    Raises:
        ValueError: `name` holds another loss (a verl built-in such as "vanilla", or another plugin's);
            verl's own `register_policy_loss` would overwrite it silently.
    """
    existing = POLICY_LOSS_REGISTRY.get(name)
    if existing is not None and not getattr(existing, _MARKER, False):
        raise ValueError(
            f"verl already has a policy loss named {name!r} ({getattr(existing, '__module__', '?')}."
            f"{getattr(existing, '__qualname__', existing)!r}); bandpo will not shadow it. Pick another "
            f"name, or remove the plugin that registers {name!r}"
        )
    setattr(compute_policy_loss_bandpo, _MARKER, True)
    register_policy_loss(name)(compute_policy_loss_bandpo)


register_bandpo_loss()
