"""`band_bounds`: the Band operator's exact per-token ratio interval (docs/theory.md, "The Band constraint").

For a sampled token with old probability p = exp(old_logp), a convex generator f (f(1) = 0) and a radius
δ > 0, the ratios r = π_new/π_old allowed by D_f(π_new‖π_old) ≤ δ form the interval [lower, upper] where

    g_f(p, r) = p·f(r) + (1 − p)·f((1 − r·p)/(1 − p)) ≤ δ,   r ∈ [0, 1/p]            (Band, two-point form)

(the rest of the mass rescaled proportionally, optimal by Jensen). No caps, no relaxation: those belong to
`bandpo.methods`.

Paths (all fixed work, no host sync inside), chosen by the `Divergence` record's fields, never by name:
float32 input with a `float32_path` (KL: a cached float64-built table, `kl.kl_bounds_table`, the default in
training) uses it; otherwise the input is converted to float64 and solved by the record's `closed_form` (KL:
monotone Newton, `kl.kl_bounds_newton`; TV, χ², Neyman χ², Hellinger: `closed_forms`) or, without one, the
generic float64 solver (`generic_solver.solve_bounds`), then clamped into the invariant and rounded once to the input
dtype. The naive equivalent of all of them is `bandpo.band.reference.reference_bounds`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from bandpo.band._numerics import round_once
from bandpo.band.divergences import get_divergence
from bandpo.band.generator import Divergence
from bandpo.band.generic_solver import solve_bounds

__all__ = [
    "DELTA_MAX",
    "DELTA_MIN",
    "LOGP_TOLERANCE",
    "BandBounds",
    "band_bounds",
    "check_delta",
    "logp_tolerance",
]

# δ range in which every path is verified against mpmath (tests/band/test_exactness.py): float64 within 1e−10
# relative (upper) and 1e−12 absolute (lower). Below DELTA_MIN the float64 paths lose digits to cancellation
# (g_f ≈ δ is a difference of O(1) terms: KL's lower bound is off by 2e−12 at δ = 1e−6) and at δ ≈ 1e−20
# they return lower > upper; above DELTA_MAX, KL's Newton start −(δ + H)/p overflows for p near e^−700.
DELTA_MIN = 1e-5
DELTA_MAX = 1e3
# positive log-probs up to this are rounding noise of a log_softmax (read as p = 1), in every dtype: float32
# log_softmax of logits of size ~100 errs by a few 1e−6; 1e−4 reads p = 1.0001 as 1
LOGP_TOLERANCE = 1e-4


@dataclass(frozen=True)
class BandBounds:
    """The Band interval per token: 0 ≤ `lower` ≤ 1 ≤ `upper` ≤ 1/p, shape, dtype and device of `old_logp`.

    Both are constants of the old policy: detached, no autograd graph, whatever `old_logp` requires.
    """

    lower: Tensor
    upper: Tensor


def logp_tolerance(dtype: torch.dtype) -> float:
    """Largest positive log-prob accepted as rounding noise (and read as p = 1): `LOGP_TOLERANCE` = 1e−4 for
    every floating `dtype` (the argument is kept for compatibility; it was 64 ulps of the dtype, 0.5 in
    bfloat16, which read p = 1.65 as 1)."""
    if not dtype.is_floating_point:
        raise ValueError(f"logp_tolerance needs a floating dtype, got {dtype}")
    return LOGP_TOLERANCE


def check_delta(delta: float) -> float:
    """`delta` as a float if it is a number in [`DELTA_MIN`, `DELTA_MAX`], else a ValueError naming the range.

    For callers that build a method or config before any bounds are computed (fail at the start, not at the
    first training step).
    """
    if isinstance(delta, bool) or not isinstance(delta, (int, float)):
        raise ValueError(f"delta must be a positive float, got {type(delta).__name__} {delta!r}")
    delta = float(delta)
    if not (math.isfinite(delta) and delta > 0):
        raise ValueError(f"delta must be finite and > 0 (the trust-region radius, e.g. 0.05), got {delta!r}")
    if not DELTA_MIN <= delta <= DELTA_MAX:
        raise ValueError(
            f"delta must be finite and > 0 and within [{DELTA_MIN:g}, {DELTA_MAX:g}], the range where the "
            f"Band bounds are verified exact, got {delta!r}; use e.g. 0.05 (the paper's KL radius)"
        )
    return delta


def _validate_logp(old_logp: Tensor) -> None:
    """One reduction (a single host sync): NaN or logp > tolerance is an error (NaN fails `<=` too)."""
    tol = LOGP_TOLERANCE
    if not bool((old_logp <= tol).all()):  # error path below may sync more, it only runs on bad input
        n_nan = int(torch.isnan(old_logp).sum())
        if n_nan:
            raise ValueError(
                f"old_logp contains {n_nan} NaN value(s); log-probabilities must be finite or -inf"
            )
        worst = float(old_logp.max())
        raise ValueError(
            f"old_logp has positive log-probabilities (max {worst:.3g} > tolerance {tol:.3g}); "
            "pass log-probabilities (log_softmax output, computed in float32 or wider), not logits or "
            "probabilities"
        )


def band_bounds(
    old_logp: Tensor, *, delta: float, divergence: str | Divergence = "kl", validate: bool = True
) -> BandBounds:
    """Exact Band ratio interval [lower, upper] for each token's old log-probability.

    Args:
        old_logp: log π_old(a|s) of the sampled tokens, any shape, floating dtype, values in [−∞, 0].
        delta: trust-region radius δ in [`DELTA_MIN`, `DELTA_MAX`] = [1e−5, 1e3] (paper default 0.05 with KL).
        divergence: a registered name (`list_divergences()`, or `"alpha:<α>"`) or a `Divergence`.
        validate: check the input for NaN and positive log-probs (one fused reduction, i.e. one host sync).
            With `validate=False` nothing syncs; NaN then propagates to NaN bounds.

    Returns:
        `BandBounds(lower, upper)` with 0 ≤ lower ≤ 1 ≤ upper ≤ 1/p (1/p = exp(−old_logp) rounded to the
        dtype), same shape/dtype/device as `old_logp`, detached: bounds are constants of the old policy, so
        no gradient flows through them even when `old_logp` requires grad.

    Raises:
        ValueError: δ outside [1e−5, 1e3] (or not a finite number); NaN in `old_logp`; log-probs above
            `LOGP_TOLERANCE` = 1e−4 (values within it are read as 0, p = 1); a meta tensor (no values);
            unknown divergence name (the message lists the valid ones).

    Notes:
        Paths: KL on float32 input uses a cached table indexed by the bits of −logp (built once per δ and
        device by the float64 Newton solver) with linear interpolation; KL otherwise uses monotone Newton in
        log variables (`bandpo.band.kl`); TV, χ², Neyman χ² and Hellinger use closed forms
        (`bandpo.band.closed_forms`); every other divergence uses the generic float64 bisection/regula-falsi
        solver (`bandpo.band.generic_solver`). All have a fixed amount of work: no host sync inside the solver.
        bfloat16/float16 inputs are solved in float64 and rounded once (`round_once`; torch's own conversion
        rounds twice, through float32), so they equal the exact interval rounded to their dtype; float64 is
        solved in float64; the float32 KL table interpolates in float64 and rounds once. Every path ends by
        clamping into 0 ≤ lower ≤ 1 ≤ upper ≤ 1/p before that rounding, so the invariant holds exactly and,
        rounding being monotone, the bounds are monotone in p wherever the float64 values are. The naive
        equivalent every path must match is `bandpo.band.reference.reference_bounds`, a float64 bisection of
        g_f on r ∈ [1, 1/p] and r ∈ [0, 1] run to the end (tests/band check both against mpmath).
        p → 0 (old_logp → −∞): lower → 0 and upper → +∞ (for KL upper ≈ (1 − e^−δ)/p); p = 0 gives (0, +∞)
        for every divergence, and p < 1e−304 (logp < −700) is treated as p = 0. p → 1: upper → 1 and lower →
        r*, the root of f(r) + (1 − r)·f'(∞) = δ (KL: e^−δ, TV: 1 − δ, χ²: 1); p = 1 gives (r*, 1) exactly.
        Float64 logp within rounding of 0 is read as p = 1 where the exact interval equals (r*, 1) in float64
        (KL: logp > −1e−20; the generic solver: 1 − p < 1e−304, where reverse KL is off by ≤ δ/700, see
        `bandpo.band.generic_solver`); otherwise there is no hand overwrite near 1, so the bounds are continuous.
    """
    if not isinstance(old_logp, Tensor):
        raise ValueError(f"old_logp must be a torch.Tensor, got {type(old_logp).__name__}")
    if not old_logp.is_floating_point():
        raise ValueError(f"old_logp must have a floating dtype, got {old_logp.dtype}")
    if old_logp.is_meta:
        raise ValueError(
            "old_logp is a meta tensor (shape only, no values); band_bounds needs the log-probabilities "
            "themselves: pass a tensor on a real device (cpu or cuda)"
        )
    delta = check_delta(delta)
    div = get_divergence(divergence)
    old_logp = old_logp.detach()  # bounds are constants of the old policy
    if validate:
        _validate_logp(old_logp)
    logp = torch.clamp(old_logp, max=0.0)  # rounding noise above 0 is p = 1

    if logp.dtype == torch.float32 and div.float32_path is not None:  # KL: the table lookup
        lower, upper = div.float32_path(logp, delta)
        if not validate:  # the table would read NaN as p → 0: propagate it instead (validated input has none)
            nan = torch.isnan(logp)
            lower, upper = lower.masked_fill_(nan, math.nan), upper.masked_fill_(nan, math.nan)
        return BandBounds(lower, upper)
    work = logp.to(torch.float64)
    if div.closed_form is not None:  # TV, χ², Neyman χ², Hellinger formulas; KL Newton
        lower, upper = div.closed_form(work, delta)
    else:
        lower, upper = solve_bounds(div, work, delta)
    # into the invariant 0 ≤ lower ≤ 1 ≤ upper ≤ 1/p (NaN propagates), then one rounding to the input dtype
    lower = lower.clamp(0.0, 1.0)
    upper = torch.minimum(upper.clamp(min=1.0), torch.exp(-work))
    return BandBounds(round_once(lower, old_logp.dtype), round_once(upper, old_logp.dtype))
