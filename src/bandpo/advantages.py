"""Group-relative advantage estimators of the GRPO family (one scalar advantage per sampled completion).

`rewards` is a flat (N,) tensor with N = groups × group_size, where each run of `group_size` consecutive
samples answers the same prompt (the layout TRL and verl use). Every estimator returns (N,) advantages.

Notes:
    A group whose rewards are all equal gets an advantage of exactly 0.0 (never NaN, and not a tiny
    rounding residue such as 1e-17: the mean of equal floats is not always bit-equal to them). Such groups
    are not filtered (that is DAPO's dynamic sampling, a separate choice). Advantages are float32 for
    integer/bool/low-precision rewards and float64 for float64 rewards. NaN or infinite rewards are refused
    (a ValueError naming the first bad sample): one of them would silently turn its whole group's
    advantages into NaN. The check reads one flag back from the device per call.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "compute_advantages",
    "dr_grpo_advantages",
    "grpo_advantages",
    "rloo_advantages",
]

ADVANTAGE_ESTIMATORS: tuple[str, ...] = ("grpo", "grpo_no_std", "dr_grpo", "rloo")


def _grouped(rewards: Tensor, group_size: int, *, min_group_size: int = 1) -> Tensor:
    """(N,) rewards → (G, group_size) in float32/float64, after checking the layout."""
    if not isinstance(rewards, Tensor):
        rewards = torch.as_tensor(rewards)
    if rewards.dim() != 1:
        raise ValueError(
            f"rewards must be a flat (N,) tensor with groups of consecutive samples, got shape "
            f"{tuple(rewards.shape)}; flatten (G, group_size) rewards with rewards.reshape(-1)"
        )
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < min_group_size:
        raise ValueError(f"group_size must be an int >= {min_group_size}, got {group_size!r}")
    if rewards.numel() % group_size != 0:
        raise ValueError(
            f"the number of rewards ({rewards.numel()}) must be a multiple of group_size ({group_size}): "
            "each prompt needs exactly group_size completions"
        )
    dtype = torch.float64 if rewards.dtype == torch.float64 else torch.float32
    rewards = rewards.detach().to(dtype)
    finite = torch.isfinite(rewards)
    if not bool(finite.all()):
        index = int((~finite).nonzero()[0, 0])
        raise ValueError(
            f"rewards must be finite, got {rewards[index].item()} at sample {index}; score a failed sample "
            "with a finite reward (e.g. 0.0) instead of NaN or inf"
        )
    return rewards.reshape(-1, group_size)  # (G, group_size)


def _centered(grouped: Tensor) -> Tensor:
    """R - mean(R) per group, exactly 0 in groups whose rewards are all equal."""
    centered = grouped - grouped.mean(dim=-1, keepdim=True)  # (G, g)
    constant = grouped.amax(dim=-1, keepdim=True) == grouped.amin(dim=-1, keepdim=True)  # (G, 1)
    return torch.where(constant, 0.0, centered)


def grpo_advantages(
    rewards: Tensor, group_size: int, *, scale_by_std: bool = True, eps: float = 1e-6
) -> Tensor:
    """GRPO: A_i = (R_i - mean_group) / (std_group + eps), or R_i - mean_group without the std.

    The std is the unbiased (Bessel-corrected, n-1) sample std of each group, as in TRL and verl. With
    group_size 1 there is no group to compare against: all advantages are 0.

    Args:
        eps: a finite number >= 0 added to the std. With eps = 0 a group of equal rewards still gets 0
            (not 0/0 = NaN), and a group whose std underflows to 0 is left unscaled.

    Raises:
        ValueError: a NaN or infinite reward, a negative or non-finite `eps`, or a bad layout.
    """
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not 0 <= eps < math.inf:
        raise ValueError(
            f"eps must be a finite number >= 0 (added to the group std; default 1e-6), got {eps!r}; a negative "
            "eps can flip the sign of an advantage"
        )
    grouped = _grouped(rewards, group_size)
    if group_size == 1 or grouped.numel() == 0:
        return torch.zeros(grouped.numel(), dtype=grouped.dtype, device=grouped.device)
    advantages = _centered(grouped)  # (G, g)
    if scale_by_std:
        scale = grouped.std(dim=-1, correction=1, keepdim=True) + eps  # (G, 1)
        # scale is 0 only when eps = 0 and the std is 0 (equal rewards, centred to exactly 0 already)
        advantages = advantages / torch.where(scale > 0, scale, 1.0)
    return advantages.reshape(-1)  # (N,)


def dr_grpo_advantages(rewards: Tensor, group_size: int) -> Tensor:
    """Dr.GRPO: A_i = R_i - mean_group (no std normalisation, which biases towards easy/hard prompts).

    Pair it with `aggregate_loss(..., "seq_mean_token_sum_norm")` for the full Dr.GRPO objective.
    """
    return grpo_advantages(rewards, group_size, scale_by_std=False)


def rloo_advantages(rewards: Tensor, group_size: int) -> Tensor:
    """RLOO: A_i = R_i - mean_{j != i} R_j, the leave-one-out baseline; equals g/(g-1)·(R_i - mean_group).

    Raises:
        ValueError: group_size < 2 (the leave-one-out baseline needs another sample).
    """
    grouped = _grouped(rewards, group_size, min_group_size=2)
    return (_centered(grouped) * (group_size / (group_size - 1))).reshape(-1)  # (N,)


def compute_advantages(
    rewards: Tensor, group_size: int, estimator: str = "grpo", *, eps: float = 1e-6
) -> Tensor:
    """Advantages by estimator name.

    Args:
        rewards: (N,) rewards, consecutive groups of `group_size`.
        group_size: completions per prompt.
        estimator: "grpo" (std-normalised, the paper's), "grpo_no_std" (mean-centred only), "dr_grpo" (the
            same maths as "grpo_no_std", named after the paper that proposed it) or "rloo".
        eps: added to the std by "grpo".
    """
    if estimator == "grpo":
        return grpo_advantages(rewards, group_size, scale_by_std=True, eps=eps)
    if estimator in ("grpo_no_std", "dr_grpo"):
        return grpo_advantages(rewards, group_size, scale_by_std=False)
    if estimator == "rloo":
        return rloo_advantages(rewards, group_size)
    raise ValueError(
        f"unknown advantage estimator {estimator!r}; valid estimators: {list(ADVANTAGE_ESTIMATORS)}"
    )
