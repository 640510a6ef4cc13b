"""What every engine adapter of the loss shares (verl, SkyRL): reading the method from an engine's config,
bounds on the valid tokens only, metrics as floats. No engine is imported here.

An engine calls its policy loss once per micro-batch with freshly sliced tensors, so there is no stable key to
cache bounds on; they are a pure function of the old log-probs, so recomputing them in each call gives the same
numbers in every PPO epoch. What is cached is the method object, built once per (name, parameters).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from bandpo.methods import BoundMethod, RatioBounds, compute_dtype, get_method, settable_parameters

__all__ = ["build_method", "method_params", "metrics_to_floats", "read_field", "valid_token_bounds"]


def read_field(config: Any, key: str) -> Any:
    """`config.key` for a dataclass or a DictConfig/dict; None when absent."""
    if isinstance(config, Mapping):
        return config.get(key)
    return getattr(config, key, None)


def method_params(config: Any) -> tuple[tuple[str, Any], ...]:
    """The method parameters set in `config` (None = the method's default): any registered method's
    (`settable_parameters`), read under their own names, then those of ``method_options``."""
    params = {key: read_field(config, key) for key in settable_parameters()}
    params.update(dict(read_field(config, "method_options") or {}))
    return tuple((key, value) for key, value in params.items() if value is not None)


@functools.lru_cache(maxsize=64)
def build_method(name: str, params: tuple[tuple[str, Any], ...], where: str) -> BoundMethod:
    """The bound method `name` with `params` (from `method_params`); errors start with `where`, the config
    section the user writes (e.g. "policy_loss (bandpo)"). Cached: engines call the loss per micro-batch."""
    try:
        return get_method(name, **dict(params))
    except (ValueError, TypeError) as err:
        raise ValueError(f"{where}: {err}") from None


def valid_token_bounds(method: BoundMethod, old_logp: Tensor, mask: Tensor) -> RatioBounds:
    """Bounds computed on the valid tokens of `mask` only, scattered back to (B, T) with [1, 1] on padding.

    The bounds are float32 at least whatever dtype arrives: under bf16 mixed precision the log-probs can be
    bf16, and bounds built in bf16 are rounded (ε = 0.05 would give 0.94921875 / 1.046875).
    """
    old_logp = old_logp.detach().to(compute_dtype(old_logp.dtype))  # (B, T), float32 or float64
    valid_old_logp = old_logp[mask]  # (N,) valid tokens, flattened
    low_valid, high_valid = method(valid_old_logp)  # (N,)
    low = torch.ones_like(old_logp).masked_scatter(mask, low_valid)  # (B, T)
    high = torch.ones_like(old_logp).masked_scatter(mask, high_valid)  # (B, T)
    return RatioBounds(low, high)


def metrics_to_floats(metrics: Mapping[str, Tensor]) -> dict[str, float]:
    """{key: 0-dim tensor} -> {key: Python float}, read from the device in one transfer."""
    keys = list(metrics)
    values = torch.stack([metrics[key].to(torch.float64) for key in keys]).tolist() if keys else []
    return dict(zip(keys, values, strict=True))
