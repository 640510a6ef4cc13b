"""The fast KL path: monotone Newton in log variables, and a cached table for float32 inputs.

KL generator f(u) = −log u + u − 1. With q = r·p and H = −p·log p − (1 − p)·log(1 − p) (binary entropy),
g_KL(p, r) = δ is −p·log q − (1 − p)·log(1 − q) = c with c = δ + H (docs/theory.md, "KL: Newton in log
variables").

- Upper root (q ∈ [p, 1)), variable v = −log(1 − q): h(v) = (1 − p)·v − p·log(1 − e^−v) − c is increasing
  and convex on the root's side, and h(v0) ≥ 0 at v0 = c/(1 − p) (the dropped term −p·log q is ≥ 0).
- Lower root (q ∈ (0, p]), variable u = log q: k(u) = −p·u − (1 − p)·log(1 − e^u) − c is decreasing and
  convex, and k(u0) ≥ 0 at u0 = −c/p.

Newton from these starts converges monotonically, with no bracket and no data-dependent exit: a fixed
iteration count, chosen per dtype and proved by the exactness tests. We start from the nearer of that safe
point and the χ²(2δ) guess q = p ± √(2δ·p(1 − p)) (KL ≈ ½χ² near r = 1); from the wrong side one Newton step
of a convex monotone function lands on the safe side, after which convergence is monotone again. 4 steps
reach the float64 floor over p ∈ [1e−12, 1 − 1e−12], δ ∈ [1e−4, 1]; we take 6, which the exactness tests also
prove at the ends of the accepted range δ ∈ [1e−5, 1e3].

Which path `band_bounds` takes for KL (set by the `kl` record's `float32_path` and `closed_form` fields):
float32 input (the default in training) uses `kl_bounds_table` (linear interpolation in a float64-built
table), ~10x faster than float32 Newton on CPU and more accurate (float32 Newton loses ~1e−6 to cancellation
in c); float64 input uses `kl_bounds_newton` in float64; bfloat16/float16 input is converted to float64,
solved by `kl_bounds_newton` and rounded once.

Edges: p < e^−700 (`LOG_FLOOR`) is p = 0, (0, +inf); logp > `P_ONE_LOGP` = −1e−20 is p = 1, (e^−δ, 1). The
latter is not an approximation: with ε = 1 − p the exact lower bound is e^−δ up to ≈ ε·(log(1/ε) + 1) ≤ 5e−19
(from −p·log r̲ = δ + (1 − p)·log c at the root, c ≤ 1/ε) and the upper bound lies in [1, 1 + ε], so both
equal (e^−δ, 1) in float64 (half an ulp below 1 is 5.5e−17); tests/band/test_exactness.py checks this
against mpmath on both sides. Without it Newton returned NaN there: c/(1 − p) overflows as ε → 0 (1 − p is
even subnormal below 2e−308), and the χ² start p − √(2δ·p·ε) rounds to q = p, where log(1 − e^u) = −inf.
For the same reason a χ² start that rounds to q ≥ p (only for δ·ε ≲ 1e−33) is dropped for the safe start.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from bandpo.band._numerics import LOG_FLOOR, log1mexp

__all__ = ["NEWTON_STEPS", "P_ONE_LOGP", "kl_bounds_newton", "kl_bounds_table", "kl_interpolate", "kl_table"]

# Newton steps per root, by the dtype the solve runs in (tests/band/test_exactness.py proves these)
NEWTON_STEPS: dict[torch.dtype, int] = {torch.float64: 6, torch.float32: 4}
# logp above this is p = 1: the exact KL interval equals (e^−δ, 1) in float64 there (module docstring)
P_ONE_LOGP = -1e-20


def kl_bounds_newton(logp: Tensor, delta: float, steps: int | None = None) -> tuple[Tensor, Tensor]:
    """KL Band interval by monotone Newton, computed in `logp.dtype` (float32 or float64).

    Notes:
        Termination: exactly `steps` Newton steps per root (default `NEWTON_STEPS[dtype]`), no host sync.
        p → 0: v0 → c and u0 → −∞ are already the roots to working precision; the upper bound grows like
        (1 − e^−δ)/p, +inf at p = 0 (and for p < e^−700). p → 1: the lower bound tends continuously to
        e^−δ; logp > `P_ONE_LOGP` (−1e−20) returns (e^−δ, 1), which is the exact interval rounded to
        float64 there. Naive equivalent: float64 bisection of g_KL on r ∈ [1, 1/p] and [0, 1].
    """
    if steps is None:
        steps = NEWTON_STEPS.get(logp.dtype, NEWTON_STEPS[torch.float64])
    is_zero = logp < LOG_FLOOR
    is_one = logp > P_ONE_LOGP
    safe = torch.where(is_zero | is_one, torch.full_like(logp, -math.log(2.0)), logp)
    p = torch.exp(safe)
    log1mp = log1mexp(safe)
    one_minus_p = torch.exp(log1mp)
    c = delta - p * safe - one_minus_p * log1mp  # δ + H

    # starts: the safe side (h(v0) ≥ 0, k(u0) ≥ 0) or the χ²(2δ) guess q = p ± √(2δ·p(1 − p)) when that is
    # nearer; from the far side one Newton step of a convex monotone function lands on the safe side
    spread = torch.sqrt((2.0 * delta) * p * one_minus_p)
    v_chi2 = -log1mexp(torch.log(p + spread).clamp(max=0.0))  # +inf (unused) where p + spread rounds to ≥ 1
    v = torch.minimum(c / one_minus_p, v_chi2)  # upper root, v = −log(1 − q)
    for _ in range(steps):
        h = one_minus_p * v - p * torch.log(-torch.expm1(-v)) - c
        dh = one_minus_p - p / torch.expm1(v)
        v = v - h / dh
    # lower root, u = log q; a χ² start that rounds to q ≥ p (tiny δ·(1 − p)) is dropped: -c/p < logp is safe
    u_chi2 = torch.log(torch.clamp(p - spread, min=0.0))
    u = torch.maximum(-c / p, torch.where(u_chi2 < safe, u_chi2, -math.inf))
    for _ in range(steps):
        k = -p * u - one_minus_p * torch.log(-torch.expm1(u)) - c
        dk = one_minus_p / torch.expm1(-u) - p
        u = u - k / dk
    upper = -torch.expm1(-v) / p
    lower = torch.exp(u - safe)

    lower = torch.where(is_zero, 0.0, torch.where(is_one, math.exp(-delta), lower))
    upper = torch.where(is_zero, math.inf, torch.where(is_one, 1.0, upper))
    return lower, upper


# float32 table: nodes are the float32 values of −logp whose low (23 − TABLE_MANTISSA_BITS) mantissa bits are
# zero, from 2^TABLE_MIN_EXP to 2^TABLE_MAX_EXP; 2^TABLE_MANTISSA_BITS nodes per octave.
TABLE_MANTISSA_BITS = 12
# |logp| below 2^−30 ≈ 9.3e−10 reads the first node: r̄ = 1 there after the clamp, r̲ within 2e−8 of e^−δ
TABLE_MIN_EXP = -30
TABLE_MAX_EXP = 7  # |logp| above 128 reads the last node: q̄ = 1 − e^−δ exactly, r̲ = 0
_SHIFT = 23 - TABLE_MANTISSA_BITS
_BITS_MIN = (127 + TABLE_MIN_EXP) << 23
_BITS_MAX = (127 + TABLE_MAX_EXP) << 23


@functools.lru_cache(maxsize=16)
def kl_table(delta: float, device: torch.device) -> Tensor:
    """(4, n) float64 rows log q̄, (log q̄_next − log q̄)/m, r̲, (r̲_next − r̲)/m per node (q̄ = r̄·p), from
    Newton; m = 2^(23 − TABLE_MANTISSA_BITS) float32 steps per cell, so the slopes are per step (exact: m is a
    power of 2).

    Cached per (δ, device) (16 entries of 4.8 MB): building it solves 151,552 nodes in float64 (~0.1 s on one
    core). One row per quantity, so the lookup is four 1-D gathers (a gather of 4-wide rows is ~20x slower
    on CPU).
    """
    bits = torch.arange(_BITS_MIN, _BITS_MAX + 1, 1 << _SHIFT, dtype=torch.int64).to(torch.int32)
    neg_logp = bits.view(torch.float32).to(torch.float64)
    lower, upper = kl_bounds_newton(-neg_logp, delta)
    log_q_upper = torch.log(upper) - neg_logp  # log(r̄·p)
    values = torch.stack([log_q_upper, lower])  # (2, n)
    steps = torch.zeros_like(values)
    steps[:, :-1] = (values[:, 1:] - values[:, :-1]) / (1 << _SHIFT)
    table = torch.stack([values[0], steps[0], values[1], steps[1]])  # (4, n)
    return table.contiguous().to(device)


def kl_bounds_table(logp: Tensor, delta: float) -> tuple[Tensor, Tensor]:
    """KL Band interval for float32 `logp` (≤ 0): gathers from a cached table, linear interpolation in
    float64, one rounding to float32.

    Notes:
        The table is indexed by the float32 bit pattern of −logp: the exponent and top
        `TABLE_MANTISSA_BITS` mantissa bits pick the node, the remaining bits give the interpolation weight
        exactly, so log q̄ = log(r̄·p) and r̲ are linear in logp inside each cell (relative width 2^−12); the
        interpolation error is ≤ ~1e−7 relative (δ = 1e−4, less for larger δ), below float32's half ulp
        almost everywhere. Everything after the gather runs in float64 and is rounded to float32 once:
        r̄ = exp(min(log q̄, 0) − logp) clamped to ≥ 1 and r̲ clamped into [0, 1], so 0 ≤ r̲ ≤ 1 ≤ r̄ ≤ 1/p
        hold after rounding (1/p meaning exp(−logp) rounded to float32), and both bounds are monotone in p
        (piecewise-linear interpolation of monotone nodes; rounding is monotone). p → 0 gives +inf when
        (1 − e^−δ)/p overflows float32; |logp| < 2^−30 gives (r̲(p = 1 − 9e−10), 1), within 2e−8 of
        (e^−δ, 1). The naive equivalent is `kl_bounds_newton(logp.double(), delta)` rounded to float32.
        Work is fixed (four 1-D gathers and ~14 elementwise ops, mostly in place); no host sync.
    """
    return kl_interpolate(logp, kl_table(delta, logp.device))


def kl_interpolate(logp: Tensor, table: Tensor) -> tuple[Tensor, Tensor]:
    """The table lookup of `kl_bounds_table` with the table passed in (a pure function, e.g. to compile)."""
    # (...,) bits of |logp| = −logp (logp ≤ 0; −0.0 and +0.0 both give 0), clamped to the table's range
    bits = logp.view(torch.int32).bitwise_and(0x7FFFFFFF).clamp_(_BITS_MIN, _BITS_MAX)
    steps = (bits & ((1 << _SHIFT) - 1)).to(torch.float64)  # float32 steps past the node, exact integers
    index = bits.bitwise_right_shift_(_SHIFT).sub_(_BITS_MIN >> _SHIFT).reshape(-1)  # (N,), in place

    def row(k: int) -> Tensor:
        return table[k].index_select(0, index).view(logp.shape)

    # in place where possible: on CPU each fresh 4 MB tensor costs page faults comparable to the arithmetic
    log_q_upper = row(0).addcmul_(steps, row(1)).clamp_(max=0.0)  # q̄ ≤ 1, i.e. r̄ ≤ 1/p
    lower = row(2).addcmul_(steps, row(3)).clamp_(0.0, 1.0)
    upper = log_q_upper.sub_(logp).exp_().clamp_(min=1.0)  # r̄ = q̄/p in float64
    return lower.to(torch.float32), upper.to(torch.float32)
