"""`band_bounds`: the Band operator's exact per-token ratio interval (paper-notes §1–2).

For a sampled token with old probability p = exp(old_logp), a convex generator f (f(1) = 0) and a radius
δ > 0, the ratios r = π_new/π_old allowed by D_f(π_new‖π_old) ≤ δ form the interval [lower, upper] where

    g_f(p, r) = p·f(r) + (1 − p)·f((1 − r·p)/(1 − p)) ≤ δ,   r ∈ [0, 1/p]            (Band, two-point form)

(the rest of the mass rescaled proportionally, optimal by Jensen). No caps, no relaxation: those belong to
`bandpo.methods`.

Paths (all fixed work, no host sync inside): KL on float32 input, the default in training, reads a cached
float64-built table (`kl.kl_bounds_table`); KL on float64 input runs monotone Newton in float64
(`kl.kl_bounds_newton`); TV, χ², Neyman χ² and Hellinger use closed forms (`closed_forms`); every other
divergence uses the generic float64 solver (`solver.solve_bounds`). bfloat16/float16 input is converted to
float64, solved by the same float64 path (Newton for KL) and rounded once; float32 input of a non-KL
divergence likewise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from bandpo.band import kl as kl_path
from bandpo.band.divergences import Divergence, get_divergence
from bandpo.band.solver import solve_bounds

__all__ = ["BandBounds", "band_bounds", "logp_tolerance"]


@dataclass(frozen=True)
class BandBounds:
    """The Band interval per token: `lower` ≤ 1 ≤ `upper`, same shape, dtype and device as `old_logp`."""

    lower: Tensor
    upper: Tensor


def logp_tolerance(dtype: torch.dtype) -> float:
    """Largest positive log-prob accepted as rounding noise (and read as p = 1): 64 ulps of 1 in `dtype`."""
    return 64.0 * torch.finfo(dtype).eps


def _check_delta(delta: float) -> float:
    if isinstance(delta, bool) or not isinstance(delta, (int, float)):
        raise ValueError(f"delta must be a positive float, got {type(delta).__name__} {delta!r}")
    delta = float(delta)
    if not (math.isfinite(delta) and delta > 0):
        raise ValueError(f"delta must be finite and > 0 (the trust-region radius, e.g. 0.05), got {delta!r}")
    return delta


def _validate_logp(old_logp: Tensor) -> None:
    """One fused reduction (a single host sync): NaN or logp > tolerance is an error."""
    tol = logp_tolerance(old_logp.dtype)
    bad = torch.isnan(old_logp) | (old_logp > tol)
    if bool(bad.any()):  # error path below may sync more, it only runs on bad input
        n_nan = int(torch.isnan(old_logp).sum())
        if n_nan:
            raise ValueError(
                f"old_logp contains {n_nan} NaN value(s); log-probabilities must be finite or -inf"
            )
        worst = float(old_logp.max())
        raise ValueError(
            f"old_logp has positive log-probabilities (max {worst:.3g} > tolerance {tol:.3g}); "
            "pass log-probabilities (log_softmax output), not logits or probabilities"
        )


def band_bounds(
    old_logp: Tensor, *, delta: float, divergence: str | Divergence = "kl", validate: bool = True
) -> BandBounds:
    """Exact Band ratio interval [lower, upper] for each token's old log-probability.

    Args:
        old_logp: log π_old(a|s) of the sampled tokens, any shape, floating dtype, values in [−∞, 0].
        delta: trust-region radius δ > 0 (paper default 0.05 with KL).
        divergence: a registered name (`list_divergences()`, or `"alpha:<α>"`) or a `Divergence`.
        validate: check the input for NaN and positive log-probs (one fused reduction, i.e. one host sync).
            With `validate=False` nothing syncs; NaN then propagates to NaN bounds.

    Returns:
        `BandBounds(lower, upper)` with 0 ≤ lower ≤ 1 ≤ upper ≤ 1/p, same shape/dtype/device as `old_logp`.

    Raises:
        ValueError: δ not finite and > 0; NaN in `old_logp`; log-probs above `logp_tolerance(dtype)` (64 ulps;
            values within it are read as 0, p = 1); unknown divergence name (the message lists the valid ones).

    Notes:
        Paths: KL on float32 input uses a cached table over log(−logp) (built once per δ and device by the
        float64 Newton solver) with linear interpolation; KL otherwise uses monotone Newton in log
        variables (`bandpo.band.kl`); TV, χ², Neyman χ² and Hellinger use closed forms
        (`bandpo.band.closed_forms`); every other divergence uses the generic float64 bisection/regula-falsi
        solver (`bandpo.band.solver`). All have a fixed amount of work: no host sync inside the solver.
        bfloat16/float16 inputs are solved in float64 and rounded once, so they equal the exact interval
        rounded to their dtype; float64 is solved in float64. The naive equivalent every path must match is a
        float64 bisection of g_f on r ∈ [1, 1/p] and r ∈ [0, 1] run to the end (tests/band).
        p → 0 (old_logp → −∞): lower → 0 and upper → +∞ (for KL upper ≈ (1 − e^−δ)/p); p = 0 gives (0, +∞)
        for every divergence, and p < 1e−304 (logp < −700) is treated as p = 0. p → 1: upper → 1 and lower →
        r*, the root of f(r) + (1 − r)·f'(∞) = δ (KL: e^−δ, TV: 1 − δ, χ²: 1); p = 1 gives (r*, 1) exactly.
        Float64 logp within rounding of 0 is read as p = 1 where the exact interval equals (r*, 1) in float64
        (KL: logp > −1e−20; the generic solver: 1 − p < 1e−304, where reverse KL is off by ≤ δ/700, see
        `bandpo.band.solver`); otherwise there is no hand overwrite near 1, so the bounds are continuous.
    """
    if not isinstance(old_logp, Tensor):
        raise ValueError(f"old_logp must be a torch.Tensor, got {type(old_logp).__name__}")
    if not old_logp.is_floating_point():
        raise ValueError(f"old_logp must have a floating dtype, got {old_logp.dtype}")
    delta = _check_delta(delta)
    div = get_divergence(divergence)
    if validate:
        _validate_logp(old_logp)
    logp = torch.clamp(old_logp, max=0.0)  # rounding noise above 0 is p = 1

    if div.name == "kl" and div.f_of_log is get_divergence("kl").f_of_log and logp.dtype == torch.float32:
        lower, upper = kl_path.kl_bounds_table(logp, delta)
        if not validate:  # the table would read NaN as p → 0: propagate it instead (validated input has none)
            nan = torch.isnan(logp)
            lower, upper = lower.masked_fill_(nan, math.nan), upper.masked_fill_(nan, math.nan)
        return BandBounds(lower, upper)
    work = logp.to(torch.float64)
    if div.closed_form is not None:
        lower, upper = div.closed_form(work, delta)
    elif div.name == "kl" and div.f_of_log is get_divergence("kl").f_of_log:
        lower, upper = kl_path.kl_bounds_newton(work, delta)
    else:
        lower, upper = solve_bounds(div, work, delta)
    return BandBounds(lower.to(old_logp.dtype), upper.to(old_logp.dtype))
