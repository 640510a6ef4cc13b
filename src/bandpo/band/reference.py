"""The naive Band solver: plain float64 bisection on the two-point constraint, to read and to test against.

For a token of old probability p and a convex generator f with f(1) = 0, the Band interval is the set of
ratios r ∈ [0, 1/p] with

    g(r) = p·f(r) + (1 − p)·f((1 − p·r)/(1 − p)) ≤ δ            (docs/theory.md, "The Band constraint")

g is convex in r with g(1) = 0, so the interval is [lower, upper] with lower the root of g = δ on [0, 1] and
upper the root on [1, 1/p], or the wall itself (0, resp. 1/p) where g there is still ≤ δ (saturation).
This module finds both roots by bisection, with no trick beyond writing 1 − p·r as −expm1(log p + log r):
`reference_bounds` is what `band_bounds` computes, slower (≈ 110 evaluations of f per root instead of a
closed form, a few Newton steps or a table lookup). The fast paths are tested against it and both against
mpmath (tests/band); it is not used by `band_bounds`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from bandpo.band.divergences import get_divergence
from bandpo.band.generator import Divergence

__all__ = ["BISECTION_STEPS", "reference_bounds"]

BISECTION_STEPS = 110  # halvings per root: [0, 700] in log r and [0, 1] in r shrink below float64 spacing


def reference_bounds(
    old_logp: Tensor, *, delta: float, divergence: str | Divergence = "kl"
) -> tuple[Tensor, Tensor]:
    """(lower, upper) of the Band interval by plain float64 bisection of g(r) = δ, any shape, float64 out.

    Notes:
        Upper root: bisection in s = log r on [0, −log p] (r up to 1/p, i.e. up to 1e300); lower root:
        bisection in r on [0, 1]. `BISECTION_STEPS` halvings each, no early exit; saturation (g(1/p) ≤ δ or
        g(0) ≤ δ, with f(0) = `divergence.f_at_zero`) is decided first. p = 0 (logp = −inf) gives (0, +inf);
        p = 1 (logp = 0) gives (`divergence.lower_at_p_one(δ)`, 1). f itself is evaluated as given (not the
        cancellation-free `f_log`), so near r = 1 with tiny δ the roots are only as good as f's rounding.
    """
    div = get_divergence(divergence)
    logp = old_logp.detach().to(torch.float64)
    p = torch.exp(logp)
    one_minus_p = -torch.expm1(logp)
    f_zero = float(div.f_at_zero)

    def f(u: Tensor) -> Tensor:
        return torch.where(u > 0, div.f(u.clamp(min=1e-300)).to(torch.float64), f_zero)

    def g(log_r: Tensor) -> Tensor:  # the two-point constraint, r = exp(log_r) ∈ [0, 1/p]
        rest = -torch.expm1(logp + log_r) / one_minus_p  # (1 − p·r)/(1 − p), the rest of the mass rescaled
        return p * f(torch.exp(log_r)) + one_minus_p * f(rest.clamp(min=0.0))

    # upper root: s = log r in [0, −log p], g(s) increasing
    lo, hi = torch.zeros_like(logp), -logp
    for _ in range(BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        inside = g(mid) <= delta
        lo, hi = torch.where(inside, mid, lo), torch.where(inside, hi, mid)
    upper = torch.where(g(-logp) <= delta, 1.0 / p, torch.exp(0.5 * (lo + hi)))

    # lower root: r in [0, 1], g decreasing
    lo, hi = torch.zeros_like(logp), torch.ones_like(logp)
    for _ in range(BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        inside = g(torch.log(mid)) <= delta
        lo, hi = torch.where(inside, lo, mid), torch.where(inside, mid, hi)
    lower = torch.where(g(torch.full_like(logp, -math.inf)) <= delta, 0.0, 0.5 * (lo + hi))

    lower = torch.where(logp == 0, div.lower_at_p_one(delta), torch.where(logp == -math.inf, 0.0, lower))
    upper = torch.where(logp == 0, 1.0, torch.where(logp == -math.inf, math.inf, upper))
    return lower, upper
