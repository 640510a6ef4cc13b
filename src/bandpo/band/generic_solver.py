"""Generic vectorised root finder for the two-point Band problem of any convex generator f.

Solves g_f(p, r) = p·f(r) + (1 − p)·f((1 − r·p)/(1 − p)) = δ for the two roots r ∈ [0, 1] and r ∈ [1, 1/p]
(docs/theory.md, "The Band constraint"), elementwise, in float64, with a fixed number of iterations and no
host sync.

Variable: x = logit(q), q = r·p the new probability of the token. Then q = σ(x) and 1 − q = σ(−x) are both
computed to full relative precision, so r = q/p and c = (1 − q)/(1 − p) are exact to a few ulp even when
p → 0 or p → 1, and an absolute step dx moves r by a relative r·(1 − q)·dx ≤ r·dx. The upper root lies in
x ∈ [logit p, X] and the lower root in [−X, logit p] with X = `X_MAX` = −`LOG_FLOOR` = 700 (σ(±700) is 1 to
float64 precision and e^−700 > 0, so r stays positive and f is never evaluated at a NaN-producing 0·log 0).

Edges: p < e^−700 is p = 0 and 1 − p < e^−700 is p = 1 (then logit p > X would invert the bracket, and
(1 − p)·f(c) overflows, c ≈ 1/(1 − p)). For divergences with f'(∞) < ∞ the p = 1 answer (r*, 1) is the exact
interval to float64 precision there. For f'(∞) = ∞ (r* = 1) the lower bound can approach 1 slowly: reverse
KL has 1 − r̲ ≈ δ/log(1/(1 − p)), still 7e−5 at δ = 0.05, 1 − p = 5e−324, so returning 1 there is off by up
to ≈ δ/700 (likewise α slightly above 1). This is a documented gap, not reachable from float32 or
half-precision input: their smallest nonzero |logp| is 1.4e−45, so their 1 − p is 0 or ≥ 1.4e−45.

Which inputs get here: `band_bounds` routes every divergence whose record has no `closed_form` (`js`,
`reverse_kl`, the α-family except α = 0, user divergences) here, in float64; float32/half inputs are converted
to float64 first and the result is rounded back once.

Termination: `BISECTION_STEPS` halvings (bracket ≤ 1400/2^46 ≈ 2e−11 in x), then `FALSI_STEPS` Illinois
regula-falsi steps inside the bracket (superlinear; each stays inside the bracket, so the error can only
shrink). Exactness (1e−10 relative on upper, 1e−12 absolute on lower against mpmath for every built-in, p ∈
[1e−12, 1 − 1e−12], δ ∈ [1e−5, 1e3], the range `band_bounds` accepts) is proved by
tests/band/test_exactness.py.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from bandpo.band._numerics import LOG_FLOOR, log1mexp
from bandpo.band.generator import Divergence, solve_p_one_limit  # re-exported: its old home

__all__ = ["BISECTION_STEPS", "FALSI_STEPS", "X_MAX", "solve_bounds", "solve_p_one_limit"]

X_MAX = -LOG_FLOOR  # logit bracket end; equal to the p = 0 / p = 1 cut-off so the bracket is never inverted
BISECTION_STEPS = 46
FALSI_STEPS = 3


def _root_in_logit(
    divergence: Divergence, logp: Tensor, log1mp: Tensor, delta: float, feasible: Tensor, infeasible: Tensor
) -> Tensor:
    """Root of g(x) = δ between `feasible` (g ≤ δ) and `infeasible` (g > δ, or the far end of the range)."""
    p = torch.exp(logp)
    one_minus_p = torch.exp(log1mp)

    def excess(x: Tensor) -> Tensor:  # g − δ, NaN treated as infeasible (+inf)
        log_r = torch.nn.functional.logsigmoid(x) - logp
        log_c = torch.nn.functional.logsigmoid(-x) - log1mp
        g = p * divergence.f_log(log_r) + one_minus_p * divergence.f_log(log_c)
        g = g - delta
        return torch.nan_to_num(g, nan=math.inf)

    a, b = feasible, infeasible
    ga, gb = torch.full_like(a, -delta), excess(b)
    for _ in range(BISECTION_STEPS):
        mid = 0.5 * (a + b)
        gm = excess(mid)
        ok = gm <= 0
        a = torch.where(ok, mid, a)
        ga = torch.where(ok, gm, ga)
        b = torch.where(ok, b, mid)
        gb = torch.where(ok, gb, gm)
    # Illinois regula falsi; where the far end is still feasible (root beyond ±X) the answer is that end
    x = torch.where(gb <= 0, b, a)
    for _ in range(FALSI_STEPS):
        denom = gb - ga
        x_new = a - ga * (b - a) / denom
        valid = torch.isfinite(x_new) & (denom > 0)
        lo, hi = torch.minimum(a, b), torch.maximum(a, b)
        x_new = torch.where(valid, torch.minimum(torch.maximum(x_new, lo), hi), 0.5 * (a + b))
        gx = excess(x_new)
        ok = gx <= 0
        # keep the bracket; halve the weight of the end that stays (Illinois) to avoid stagnation
        a_new = torch.where(ok, x_new, a)
        ga_new = torch.where(ok, gx, 0.5 * ga)
        b_new = torch.where(ok, b, x_new)
        gb_new = torch.where(ok, 0.5 * gb, gx)
        a, ga, b, gb = a_new, ga_new, b_new, gb_new
        x = x_new
    return x


def solve_bounds(divergence: Divergence, logp: Tensor, delta: float) -> tuple[Tensor, Tensor]:
    """Exact Band interval of any registered divergence: float64 `logp` in (any shape), float64 out.

    Notes:
        p = 0 (logp = −∞) gives (0, +∞); p = 1 gives (r*, 1) with r* = `divergence.lower_at_p_one(δ)`
        (cached per δ on the divergence). p < e^−700 is read as p = 0 and 1 − p < e^−700 as p = 1 (module
        docstring: exact for f'(∞) < ∞, a gap ≤ δ/700 for reverse KL).
        Saturation (docs/theory.md, "Closed forms") is decided first: upper = 1/p when p·f(1/p) + (1 − p)·f(0)
        ≤ δ, lower = 0 when p·f(0) + (1 − p)·f(1/(1 − p)) ≤ δ. The naive equivalent is
        `bandpo.band.reference.reference_bounds` (float64 bisection on r in [1, 1/p] and [0, 1] run to the
        end).
    """
    log1mp_raw = log1mexp(logp)  # −inf at logp = 0, NaN for NaN
    is_zero = logp < LOG_FLOOR  # p < 1e−304
    # 1 − p < 1e−304, includes logp = 0 (there logit p > X_MAX would invert the bracket)
    is_one = log1mp_raw < LOG_FLOOR
    safe = torch.where(is_zero | is_one, torch.full_like(logp, -math.log(2.0)), logp)
    log1mp = log1mexp(safe)
    p, one_minus_p = torch.exp(safe), torch.exp(log1mp)
    logit_p = safe - log1mp
    f0 = float(divergence.f_at_zero) + divergence._linear_coef  # f(0) of the standardised f_log

    upper_x = _root_in_logit(divergence, safe, log1mp, delta, logit_p, torch.full_like(safe, X_MAX))
    lower_x = _root_in_logit(divergence, safe, log1mp, delta, logit_p, torch.full_like(safe, -X_MAX))
    upper = torch.exp(torch.nn.functional.logsigmoid(upper_x) - safe)
    lower = torch.exp(torch.nn.functional.logsigmoid(lower_x) - safe)

    if math.isfinite(f0):  # saturation at the simplex walls
        g_top = p * divergence.f_log(-safe) + one_minus_p * f0
        upper = torch.where(g_top <= delta, 1.0 / p, upper)
        g_bottom = p * f0 + one_minus_p * divergence.f_log(-log1mp)
        lower = torch.where(g_bottom <= delta, torch.zeros_like(lower), lower)
    upper = torch.minimum(torch.maximum(upper, torch.ones_like(upper)), 1.0 / p)
    lower = torch.clamp(lower, 0.0, 1.0)

    r_star = divergence.lower_at_p_one(delta)
    lower = torch.where(is_zero, 0.0, torch.where(is_one, r_star, lower))
    upper = torch.where(is_zero, math.inf, torch.where(is_one, 1.0, upper))
    return lower, upper
