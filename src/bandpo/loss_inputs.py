"""Checks and normalisation of the inputs of `bandpo.losses`: shapes, dtypes and values, with errors that say the fix.

Each function takes what a user passes (`logp`, `old_logp`, `advantages`, `mask`, `bounds`) and returns the
tensor the surrogate computes with, or raises a TypeError / ValueError naming the argument, what it got and
how to fix it. Only `check_values` and the check of a non-bool mask sync with the host.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bandpo.methods import RatioBounds

__all__ = ["check_logp_pair", "check_values", "prepare_advantages", "prepare_bounds", "prepare_mask"]


def check_logp_pair(logp: Tensor, other: Tensor, other_name: str) -> None:
    for name, t in (("logp", logp), (other_name, other)):
        if not isinstance(t, Tensor) or not t.is_floating_point():
            raise TypeError(
                f"{name} must be a floating-point tensor of per-token log-probabilities, got "
                f"{type(t).__name__}{f' of dtype {t.dtype}' if isinstance(t, Tensor) else ''}"
            )
    if logp.dim() != 2:
        raise ValueError(
            f"logp must have shape (B, T) (batch, completion tokens), got {tuple(logp.shape)}; for a single "
            "sequence use logp.unsqueeze(0), for (B, T, 1) use logp.squeeze(-1)"
        )
    if other.shape != logp.shape:
        raise ValueError(
            f"{other_name} must have the same shape as logp {tuple(logp.shape)}, got {tuple(other.shape)}; "
            "both are log-probabilities of the same sampled tokens"
        )


def prepare_mask(mask: Tensor, shape: torch.Size, *, validate: bool = True) -> Tensor:
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a (B, T) tensor (bool or 0/1), got {type(mask).__name__}")
    if mask.shape != shape:
        raise ValueError(
            f"mask must have the same shape as logp {tuple(shape)}, got {tuple(mask.shape)}; it marks the "
            "valid completion tokens (True/1) vs padding (False/0)"
        )
    if mask.dtype == torch.bool or not validate:
        return mask if mask.dtype == torch.bool else mask != 0
    binary = (mask == 0) | (mask == 1)
    if not bool(binary.all()):  # one host sync, for non-bool masks only
        bad = mask[~binary][0].item()
        raise ValueError(
            f"mask must hold only 0 and 1 (or be bool), got {bad}; a fractional or NaN mask is not a weight "
            "here: pass mask.bool() for validity, and multiply per_token_loss by weights yourself"
        )
    return mask != 0


def prepare_advantages(advantages: Tensor, shape: torch.Size, dtype: torch.dtype) -> Tensor:
    if not isinstance(advantages, Tensor):
        raise TypeError(
            f"advantages must be a tensor of shape (B,) or (B, T), got {type(advantages).__name__}"
        )
    batch = shape[0]
    if advantages.shape == (batch,):
        advantages = advantages.unsqueeze(-1)  # (B, 1), broadcast over tokens
    elif advantages.shape == (batch, 1) or advantages.shape == shape:
        pass
    else:
        raise ValueError(
            f"advantages must have shape (B,) = ({batch},) (one per sequence) or (B, T) = {tuple(shape)} (one "
            f"per token), got {tuple(advantages.shape)}; GRPO advantages from bandpo.advantages are (B,)"
        )
    return advantages.detach().to(dtype).expand(shape)  # (B, T)


def prepare_bounds(
    bounds: RatioBounds | tuple[Tensor | float, Tensor | float], shape: torch.Size, like: Tensor
) -> RatioBounds:
    if not isinstance(bounds, tuple) or len(bounds) != 2:
        raise TypeError("bounds must be a RatioBounds or a (ratio_low, ratio_high) pair of tensors or floats")
    out = []
    for name, value in zip(("ratio_low", "ratio_high"), bounds, strict=True):
        # a Python float goes straight to the compute dtype (not through float32 first)
        t = torch.as_tensor(
            value, dtype=None if isinstance(value, Tensor) else like.dtype, device=like.device
        )
        t = t.detach().to(like.dtype)
        try:
            torch.broadcast_shapes(t.shape, shape)
        except RuntimeError:
            raise ValueError(
                f"bounds.{name} must have the shape of logp {tuple(shape)} (or broadcast to it), got "
                f"{tuple(t.shape)}; compute bounds from old_logp of the same batch"
            ) from None
        out.append(t.expand(shape))
    return RatioBounds(out[0], out[1])


def check_values(adv: Tensor, low: Tensor, high: Tensor, mask: Tensor) -> None:
    """Refuse non-finite advantages and NaN or crossed bounds on valid tokens (one host sync)."""
    bad_adv = mask & ~torch.isfinite(adv)  # (B, T)
    bad_bounds = mask & ~(low <= high)  # (B, T); NaN bounds compare False
    flags = torch.stack([bad_adv.any(), bad_bounds.any()]).tolist()
    if flags[0]:
        row, col = bad_adv.nonzero()[0].tolist()
        raise ValueError(
            f"advantages must be finite on valid tokens, got {adv[row, col].item()} at (row {row}, token {col}); "
            "an infinite advantage gives an infinite gradient: check the rewards and the std normalisation"
        )
    if flags[1]:
        row, col = bad_bounds.nonzero()[0].tolist()
        raise ValueError(
            f"bounds must satisfy ratio_low <= ratio_high on valid tokens, got [{low[row, col].item()}, "
            f"{high[row, col].item()}] at (row {row}, token {col}); build bounds with a bound method "
            "(bandpo.get_method) or pass (low, high) with low <= high, and no NaN old_logp on valid tokens"
        )
