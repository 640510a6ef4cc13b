"""BandPO as a SkyRL policy loss (skyrl >= 0.3.0, < 0.4): `trainer.algorithm.policy_loss_type=bandpo`.

SkyRL finds custom losses in its `PolicyLossRegistry` and has no plugin discovery, so the loss must be
registered in the driver before SkyRL validates the config and starts Ray; Ray's named registry actor then
hands it to every worker (by reference: bandpo must be installed on every node). Two ways in:

- Stock command: `python -m skyrl.train.entrypoints.main_base trainer.override_entrypoint=bandpo.integrations.skyrl
  ...`. SkyRL imports this module and calls `main()`, which registers the loss, parses the command line with
  `BandPOSkyRLConfig` (SkyRL's config plus `trainer.algorithm.bandpo.*`, whose `policy_loss_type` defaults to
  `bandpo`) and runs SkyRL's own driver: `validate_cfg`, `initialize_ray`, `skyrl_entrypoint`.
- Python: call `register_bandpo_loss()` before `initialize_ray(cfg)` (which syncs the registry to Ray), build
  the config with `BandPOSkyRLConfig` (or SkyRL's own config: the loss then runs the paper's defaults).

Parameters live in `trainer.algorithm.bandpo` (`BandPOConfig`, beside SkyRL's own `dppo`, `sapo`, `cispo`
sections), validated when the config is built, as SkyRL validates its own sections. The dual-clip constant
defaults to SkyRL's `trainer.algorithm.clip_ratio_c` (3; the paper used 10).

SkyRL's conventions, which this loss follows (as its `regular` loss does):
    - Advantages arrive pre-scaled for the configured `loss_reduction`
      (`apply_loss_reduction_to_advantages_minibatch`), so the loss is a masked **sum** of the per-token
      loss (`reduce_loss`). A positive scale commutes with the clamp and with dual-clip's -A·c, so the
      per-token surrogate is unchanged.
    - SkyRL's off-policy correction (`trainer.algorithm.off_policy_correction`: TIS ratio, sequence and
      token masks against the rollout log-probs) multiplies the per-token loss and updates the mask.
    - Bounds come from the old log-probs, once per call, on the valid tokens only (padding gets [1, 1]);
      everything is computed in float32 at least (SkyRL's own ratio is float32 as well).
    - Metrics are Python floats, logged by SkyRL as `policy/loss_metrics/<key>`: SkyRL's `clip_ratio`
      (the same meaning as in `regular`) plus every `bandpo.metric_names` diagnostic under `bandpo/`.
      SkyRL averages metrics over micro-batches and data-parallel ranks except names ending `_max`/`_min`,
      so `ratio/max` is logged as `bandpo/ratio_max` (reduced by max); no key ends in `_loss` (summed).

Registering over a name that holds a loss not made by this module raises `ValueError` (SkyRL's registry
refuses duplicates too); registering bandpo's own loss again is a no-op.
"""

import dataclasses
import sys
from typing import Any

import torch
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

# No `from __future__ import annotations`: SkyRL builds nested config dataclasses from their field types,
# which must be classes, not strings.
_EXTRA = "pip install 'bandpo[skyrl]' (SkyRL pins its own transformers and ray: use a separate virtual environment)"
try:
    from skyrl.backends.skyrl_train.utils.off_policy_correction_utils import apply_off_policy_correction
    from skyrl.backends.skyrl_train.utils.ppo_utils import PolicyLossRegistry, reduce_loss
    from skyrl.train.config import AlgorithmConfig, BaseConfig, SkyRLTrainConfig, TrainerConfig
except ImportError as err:  # pragma: no cover - exercised only without skyrl
    raise ImportError(f"bandpo.integrations.skyrl needs SkyRL: {_EXTRA}") from err
except Exception as err:  # pragma: no cover - skyrl 0.3.0 on Python 3.11
    if "TypedDict" in str(err) and sys.version_info < (3, 12):
        raise ImportError(
            "skyrl does not import on Python 3.11: pydantic refuses its typing.TypedDict fields "
            "(skyrl/tinker/types.py); use Python >= 3.12, as SkyRL's own CI does (docs/skyrl.md)"
        ) from err
    raise

__all__ = [
    "LOSS_NAME",
    "BandPOAlgorithmConfig",
    "BandPOConfig",
    "BandPOSkyRLConfig",
    "BandPOTrainerConfig",
    "compute_policy_loss_bandpo",
    "main",
    "register_bandpo_loss",
    "resolve_loss_settings",
    "skyrl_metric_key",
]

LOSS_NAME = "bandpo"
"""The `trainer.algorithm.policy_loss_type` that selects BandPO in SkyRL."""

SKYRL_CLIP_RATIO = "clip_ratio"  # SkyRL's own clip metric (regular, dual_clip, dppo, gspo log it)
METRIC_PREFIX = "bandpo/"
CONFIG_SECTION = "trainer.algorithm.bandpo"
ENTRYPOINT_FLAG = "trainer.override_entrypoint="
_FLOAT_FIELDS = ("delta", "ratio_max", "eps_low", "eps_high", "dual_clip_c")
_MARKER = "_bandpo_policy_loss"  # attribute set on the function this module registers


@dataclasses.dataclass
class BandPOConfig(BaseConfig):
    """`trainer.algorithm.bandpo`: the bound method and its parameters. Only read when
    `policy_loss_type=bandpo`.

    Args:
        method: a `bandpo.list_methods()` name: band (BandPO), band_upper, band_lower, clip, clip_higher, dcpo.
        divergence, delta, ratio_max, relax, eps_low, eps_high, lower_side, upper_side: parameters of the
            method (`bandpo.methods`); None keeps the method's own default (`bandpo.method_defaults_table()`).
            Setting one the method does not take is an error.
        method_options: parameters of a registered method that have no field here, as {name: value}.
        dual_clip_c: dual-clip constant c > 1 for A < 0 tokens; None uses `trainer.algorithm.clip_ratio_c`
            (SkyRL's own setting), `inf` disables dual-clip.
    """

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
        for name in _FLOAT_FIELDS:  # the command line gives `inf` as the string "inf" (YAML spells it .inf)
            setattr(self, name, _as_number(getattr(self, name), f"{CONFIG_SECTION}.{name}"))
        check_dual_clip_c(self.dual_clip_c, f"{CONFIG_SECTION}.dual_clip_c")
        build_method(self.method, method_params(self), CONFIG_SECTION)  # validates; errors name the field


@dataclasses.dataclass
class BandPOAlgorithmConfig(AlgorithmConfig):
    """SkyRL's `AlgorithmConfig` with the `bandpo` section; `policy_loss_type` defaults to `bandpo` (set
    `regular`, `dppo`, ... to run SkyRL's own losses through the same command)."""

    policy_loss_type: str = LOSS_NAME
    bandpo: BandPOConfig = dataclasses.field(default_factory=BandPOConfig)


@dataclasses.dataclass
class BandPOTrainerConfig(TrainerConfig):
    algorithm: BandPOAlgorithmConfig = dataclasses.field(default_factory=BandPOAlgorithmConfig)


@dataclasses.dataclass
class BandPOSkyRLConfig(SkyRLTrainConfig):
    """SkyRL's top-level config with `trainer.algorithm.bandpo`: `BandPOSkyRLConfig.from_cli_overrides(argv)`."""

    trainer: BandPOTrainerConfig = dataclasses.field(default_factory=BandPOTrainerConfig)


def _as_number(value: Any, field_name: str) -> Any:
    """A numeric string ("inf", "0.05") as a float; anything else unchanged (the validators judge it)."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"{field_name} must be a number, got {value!r}") from None
    return value


def resolve_loss_settings(config: Any) -> tuple[BoundMethod, float | None]:
    """(bound method, dual-clip c or None) from SkyRL's algorithm config (`trainer.algorithm`).

    Reads `config.bandpo` (a `BandPOConfig` or a mapping with its keys; absent with SkyRL's own
    `AlgorithmConfig`, which gives the paper's defaults); c falls back to `config.clip_ratio_c`.
    """
    if config is None:
        raise ValueError(f"the {LOSS_NAME!r} policy loss needs SkyRL's algorithm config; got None")
    section = read_field(config, "bandpo") or {}
    method = build_method(read_field(section, "method") or "band", method_params(section), CONFIG_SECTION)
    c, field_name = read_field(section, "dual_clip_c"), f"{CONFIG_SECTION}.dual_clip_c"
    if c is None:
        c, field_name = read_field(config, "clip_ratio_c"), "trainer.algorithm.clip_ratio_c"
    return method, check_dual_clip_c(_as_number(c, field_name), field_name)


def skyrl_metric_key(key: str) -> str:
    """The SkyRL name of a `bandpo.metric_names` key: under `bandpo/`, a maximum spelled `_max` so that SkyRL
    reduces it by max over micro-batches and ranks (`worker_utils.reduce_metrics`)."""
    if key.endswith("/max"):
        key = key[: -len("/max")] + "_max"
    return METRIC_PREFIX + key


def compute_policy_loss_bandpo(
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    config: Any,
    loss_mask: Tensor | None = None,
    rollout_logprobs: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """SkyRL policy loss "bandpo": bandpo's clipped surrogate with per-token bounds, as a masked sum.

    Args:
        log_probs, old_log_probs: (B, T) log-probs of the sampled tokens, current and old policy.
        advantages: (B, T), pre-scaled by SkyRL for its `loss_reduction`.
        config: SkyRL's algorithm config (`trainer.algorithm`); `config.bandpo` holds the method (see
            `resolve_loss_settings`), `config.off_policy_correction` SkyRL's correction settings.
        loss_mask: (B, T) 1 on the tokens that count (None: all).
        rollout_logprobs: (B, T) log-probs of the rollout engine, for SkyRL's off-policy correction.

    Returns:
        (scalar loss for `.backward()`, metrics as floats): SkyRL's `PolicyLossRegistry` contract.

    Notes:
        With `method=clip`, `eps_low`/`eps_high` = SkyRL's `eps_clip_low`/`eps_clip_high` and dual-clip off,
        this is SkyRL's `regular` loss; with c = `clip_ratio_c` it is `dual_clip` (tests/integrations/
        test_skyrl_on_cpu.py checks both against SkyRL's own functions).
    """
    method, c = resolve_loss_settings(config)
    valid = loss_mask > 0 if loss_mask is not None else torch.ones_like(log_probs, dtype=torch.bool)  # (B, T)
    bounds = valid_token_bounds(method, old_log_probs, valid)
    terms = per_token_policy_loss(log_probs, old_log_probs, advantages, valid, bounds, dual_clip_c=c)
    metrics = metrics_to_floats(policy_metrics(terms))
    out = {SKYRL_CLIP_RATIO: metrics[mn.CLIP_FRAC]}
    out.update({skyrl_metric_key(key): value for key, value in metrics.items()})

    per_token_loss = terms.per_token_loss  # (B, T), 0 on padding
    correction = read_field(config, "off_policy_correction")
    if correction is not None:
        per_token_loss, loss_mask, correction_metrics = apply_off_policy_correction(
            per_token_loss, old_log_probs, rollout_logprobs, loss_mask, correction
        )
        out.update(correction_metrics)
    return reduce_loss(per_token_loss, loss_mask), out


def register_bandpo_loss(name: str = LOSS_NAME) -> None:
    """Put `compute_policy_loss_bandpo` in SkyRL's `PolicyLossRegistry` under `name`.

    Call it in the driver before `initialize_ray` (which syncs the registry to Ray's named actor); with Ray
    already running, SkyRL's registry pushes it to the actor at once. Idempotent for bandpo's own loss.

    Raises:
        ValueError: `name` holds another loss (a SkyRL built-in such as "regular", or another package's).
    """
    if name in PolicyLossRegistry.list_available():
        existing = PolicyLossRegistry.get(name)
        if getattr(existing, _MARKER, False):
            return
        raise ValueError(
            f"SkyRL already has a policy loss named {name!r} ({getattr(existing, '__module__', '?')}."
            f"{getattr(existing, '__qualname__', existing)!r}); bandpo will not shadow it. Pick another name"
        )
    setattr(compute_policy_loss_bandpo, _MARKER, True)
    PolicyLossRegistry.register(name, compute_policy_loss_bandpo)


def main() -> None:
    """`trainer.override_entrypoint=bandpo.integrations.skyrl`: register the loss, then SkyRL's own driver.

    SkyRL's `main_base.main()` imports this module and calls this function with its command line untouched.
    A bad setting stops here with one line naming the field, before Ray starts.
    """
    import ray
    from skyrl.train.entrypoints.main_base import skyrl_entrypoint
    from skyrl.train.utils import initialize_ray, validate_cfg

    argv = [arg for arg in sys.argv[1:] if not arg.startswith(ENTRYPOINT_FLAG)]
    try:
        cfg = BandPOSkyRLConfig.from_cli_overrides(argv)
        if cfg.trainer.algorithm.policy_loss_type == LOSS_NAME:
            resolve_loss_settings(cfg.trainer.algorithm)
    except ValueError as err:
        raise SystemExit(f"bandpo (SkyRL config): {err}") from None
    register_bandpo_loss()
    validate_cfg(cfg)
    initialize_ray(cfg)
    ray.get(skyrl_entrypoint.remote(cfg))
