"""Closed-form Band intervals for the divergences whose two-point problem g_f(p, r) = δ is solvable by hand.

All functions take float64 `logp` (any shape, entries in [−∞, 0]) and a float δ > 0 and return float64
`(lower, upper)`. p = 0 gives (0, +∞) and p = 1 gives (r*, 1). Formulas are arranged so that no step
cancels catastrophically: 1 − p is `-expm1(logp)`, the lower χ²-type root is taken from the product of
roots, and the Hellinger roots are angles built with `atan2`.

Derivations (q = r·p, c = (1 − q)/(1 − p); docs/theory.md, "Closed forms"):
- TV: g = p·|r − 1|, so r = 1 ± δ/p, clipped to [0, 1/p].
- Pearson χ²: g = p·(r − 1)²/(1 − p), so r = 1 ± √(δ(1 − p)/p), clipped to [0, 1/p].
- Neyman χ²: g = p·(r − 1)²/(r·(1 − r·p)); g = δ is the quadratic p(1 + δ)·r² − (2p + δ)·r + p = 0 with
  roots r± = [2p + δ ± √(δ² + 4pδ(1 − p))] / (2p(1 + δ)) and r+·r− = 1/(1 + δ). Never saturates.
- Hellinger: p·r + (1 − p)·c = 1 gives g = 2 − 2[√(p q) + √((1 − p)(1 − q))]. With √p = sin ψ, √q = sin θ
  the constraint is cos(θ − ψ) ≥ 1 − δ/2 = cos γ, γ = 2·asin(√δ/2), so q = sin²(ψ ± γ): the upper bound
  saturates at 1/p when ψ + γ ≥ π/2 and the lower at 0 when ψ ≤ γ.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["chi2_bounds", "hellinger_bounds", "neyman_chi2_bounds", "tv_bounds"]


def _p_and_complement(logp: Tensor) -> tuple[Tensor, Tensor]:
    return torch.exp(logp), -torch.expm1(logp)


def tv_bounds(logp: Tensor, delta: float) -> tuple[Tensor, Tensor]:
    """TV: [max(0, 1 − δ/p), min(1/p, 1 + δ/p)]."""
    inv_p = torch.exp(-logp)  # 1/p, +inf at p = 0
    step = delta * inv_p
    lower = torch.clamp(1.0 - step, min=0.0)
    upper = torch.minimum(1.0 + step, inv_p)
    return lower, upper


def chi2_bounds(logp: Tensor, delta: float) -> tuple[Tensor, Tensor]:
    """Pearson χ²: 1 ± √(δ(1 − p)/p), clipped to [0, 1/p]."""
    _, one_minus_p = _p_and_complement(logp)
    inv_p = torch.exp(-logp)
    step = torch.sqrt(delta * one_minus_p * inv_p)  # +inf at p = 0
    lower = torch.clamp(1.0 - step, min=0.0)
    upper = torch.minimum(1.0 + step, inv_p)
    return lower, upper


def neyman_chi2_bounds(logp: Tensor, delta: float) -> tuple[Tensor, Tensor]:
    """Neyman χ²: the two roots of p(1 + δ)·r² − (2p + δ)·r + p = 0 (never saturated)."""
    p, one_minus_p = _p_and_complement(logp)
    root = torch.sqrt(delta * delta + 4.0 * delta * p * one_minus_p)
    # r+ = (2p + δ + root)/(2p(1 + δ)) = (2 + (δ + root)/p)/(2(1 + δ)); /p written as ·exp(−logp) for p → 0
    upper = (2.0 + (delta + root) * torch.exp(-logp)) / (2.0 * (1.0 + delta))
    lower = 1.0 / ((1.0 + delta) * upper)  # product of the roots is 1/(1 + δ)
    return lower, upper


def hellinger_bounds(logp: Tensor, delta: float) -> tuple[Tensor, Tensor]:
    """Squared Hellinger: q = sin²(ψ ± γ) with ψ = atan2(√p, √(1 − p)), γ = 2·asin(√δ/2)."""
    p, one_minus_p = _p_and_complement(logp)
    inv_p = torch.exp(-logp)
    if delta >= 2.0:  # the whole simplex is inside the ball
        return torch.zeros_like(logp), inv_p
    gamma = 2.0 * math.asin(math.sqrt(delta) / 2.0)
    psi = torch.atan2(torch.sqrt(p), torch.sqrt(one_minus_p))
    up_angle = psi + gamma
    upper = torch.where(up_angle >= math.pi / 2, inv_p, torch.sin(up_angle) ** 2 * inv_p)
    low_angle = psi - gamma
    lower = torch.where(low_angle <= 0, torch.zeros_like(logp), torch.sin(low_angle) ** 2 * inv_p)
    # p = 0: psi = 0, so sin(γ)²·inf = inf for the upper bound and lower = 0, as wanted
    return lower, upper
