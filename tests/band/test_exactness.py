"""Exactness of every path of `band_bounds` against an mpmath reference (tests/band/band_reference.py).

Tolerances (issue 2): float64 within 1e−10 relative on upper and 1e−12 absolute on lower; float32 within
1e−6 / 1e−6; bfloat16 and float16 equal to the reference rounded once to their dtype (`assert_rounded_once`).
p runs log-spaced from 1e−12 to 1 − 1e−12 (both edges included), δ from 1e−4 to 1 and the two ends of the
accepted range [`DELTA_MIN`, `DELTA_MAX`] = [1e−5, 1e3]; separately, log-probs just below 0 down to the
smallest subnormal (`EXTREME_LOGP`), where the solvers switch to their p = 1 answer.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from band_reference import DELTAS, MP_GENERATORS, p_grid, reference_bounds, reference_p_one

from bandpo.band import DELTA_MAX, DELTA_MIN, band_bounds, get_divergence
from bandpo.band._numerics import LOG_FLOOR, round_once
from bandpo.band.generic_solver import solve_bounds
from bandpo.band.kl import NEWTON_STEPS, P_ONE_LOGP, kl_bounds_newton, kl_bounds_table
from bandpo.band.reference import reference_bounds as naive_bounds

NAMES = list(MP_GENERATORS)  # every built-in plus four members of the α-family


@functools.cache
def _reference(name: str, delta: float, dtype_name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logp as the dtype holds it, lower, upper) in float64 for the p grid, reference computed at the
    dtype-rounded logp (so the test measures the solver, not the rounding of the input)."""
    dtype = getattr(torch, dtype_name)
    if dtype == torch.float64:  # the float64 grid is float32-representable, so both share one reference
        return _reference(name, delta, "float32")
    logp = torch.tensor(p_grid(8), dtype=torch.float64).to(dtype).to(torch.float64)
    pairs = [reference_bounds(name, x, delta) if x < 0 else (math.nan, 1.0) for x in logp.tolist()]
    lower = torch.tensor([a for a, _ in pairs], dtype=torch.float64)
    upper = torch.tensor([b for _, b in pairs], dtype=torch.float64)
    keep = logp < 0  # a p that rounds to 1 in the dtype is the p = 1 case, tested separately
    return logp[keep], lower[keep], upper[keep]


def assert_rounded_once(
    ours: torch.Tensor,
    exact: torch.Tensor,
    *,
    rel: float = 0.0,
    abs: float = 0.0,
    dtype: torch.dtype | None = None,
) -> None:
    """`ours` (half precision) is the exact value rounded once to its dtype, up to the float64 solve's own
    error (`rel`/`abs`): `ours` lies between the roundings of exact ∓ slack, i.e. it is the rounding of the
    exact value except where that lies within the slack of a rounding midpoint (there either neighbour is
    right).
    Bit-equality would depend on the CPU's float64 kernels there."""
    dtype = dtype or ours.dtype
    exact = exact.to(torch.float64)
    slack = exact.abs() * rel + abs
    down, up = round_once(exact - slack, dtype), round_once(exact + slack, dtype)  # torch's .to rounds twice
    ours = ours.to(dtype)
    ok = ((ours >= down) & (ours <= up)) | (torch.isinf(exact) & (ours == exact))
    assert bool(ok.all()), (ours[~ok], exact[~ok])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("delta", [DELTA_MIN, *DELTAS, DELTA_MAX])
def test_float64_matches_mpmath(name: str, delta: float) -> None:
    logp, lower_ref, upper_ref = _reference(name, delta, "float64")
    bounds = band_bounds(logp, delta=delta, divergence=name)
    assert bounds.upper.dtype == torch.float64
    assert ((bounds.upper - upper_ref).abs() / upper_ref).max() <= 1e-10
    assert (bounds.lower - lower_ref).abs().max() <= 1e-12


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("delta", [DELTA_MIN, 1e-4, 0.05, 1.0, DELTA_MAX])
def test_float32_matches_mpmath(name: str, delta: float) -> None:
    logp, lower_ref, upper_ref = _reference(name, delta, "float32")
    bounds = band_bounds(logp.to(torch.float32), delta=delta, divergence=name)
    assert bounds.upper.dtype == torch.float32
    upper = bounds.upper.double()
    finite = torch.isfinite(upper_ref.to(torch.float32))  # beyond float32's range the answer is +inf
    assert torch.isinf(upper[~finite]).all()
    assert ((upper - upper_ref).abs() / upper_ref)[finite].max() <= 1e-6
    assert (bounds.lower.double() - lower_ref).abs().max() <= 1e-6


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("delta", [1e-4, 1.0])
def test_half_precision_equals_rounded_reference(dtype: torch.dtype, name: str, delta: float) -> None:
    logp, lower_ref, upper_ref = _reference(name, delta, str(dtype).split(".")[1])
    bounds = band_bounds(logp.to(dtype), delta=delta, divergence=name)
    assert bounds.lower.dtype == dtype and bounds.upper.dtype == dtype
    assert_rounded_once(bounds.upper, upper_ref, rel=1e-10)
    # the bisection reference resolves the lower bound to ~1e−17 only: below that it means "about 0"
    resolved = lower_ref > 1e-15
    assert_rounded_once(bounds.lower[resolved], lower_ref[resolved], rel=1e-10)
    assert (bounds.lower[~resolved].double() <= 1e-15).all()


# --- the naive float64 reference (bandpo.band.reference) and dense checks of every path against it ---------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("delta", [DELTA_MIN, 1e-4, 0.05, 1.0, DELTA_MAX])
def test_naive_reference_matches_mpmath(name: str, delta: float) -> None:
    """The readable float64 bisection in `bandpo.band.reference` is itself exact (same tolerances), except
    that at δ = 1e−5 its plain f (js: ½[u·log(2u/(1 + u)) + log(2/(1 + u))], O(1) terms cancelling to
    O(δ)) costs the lower bound up to 1.2e−12, so 5e−12 there."""
    logp, lower_ref, upper_ref = _reference(name, delta, "float64")
    lower, upper = naive_bounds(logp, delta=delta, divergence=name)
    assert ((upper - upper_ref).abs() / upper_ref).max() <= 1e-10
    assert (lower - lower_ref).abs().max() <= (1e-12 if delta >= 1e-4 else 5e-12)


@pytest.mark.parametrize("name", NAMES)
def test_naive_reference_edges(name: str) -> None:
    """p = 1 gives (r*, 1) and p = 0 gives (0, +inf), as `band_bounds` does."""
    lower, upper = naive_bounds(
        torch.tensor([0.0, -math.inf], dtype=torch.float64), delta=0.05, divergence=name
    )
    assert lower.tolist() == pytest.approx([reference_p_one(name, 0.05), 0.0], abs=1e-12)
    assert upper.tolist() == [1.0, math.inf]


def _dense_logp() -> torch.Tensor:
    small = torch.logspace(-12, math.log10(0.5), 1500, dtype=torch.float64)
    return torch.cat([torch.log(small), torch.log1p(-small)])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("delta", [1e-4, 0.05, 1.0])
def test_every_path_matches_the_naive_reference_dense(name: str, delta: float) -> None:
    """`band_bounds` in float64 (closed form, Newton or the generic solver) against the naive bisection on
    3,000 values of p from 1e−12 to 1 − 1e−12."""
    logp = _dense_logp()
    ref_lower, ref_upper = naive_bounds(logp, delta=delta, divergence=name)
    bounds = band_bounds(logp, delta=delta, divergence=name)
    assert ((bounds.upper - ref_upper).abs() / ref_upper).max() <= 1e-10
    assert (bounds.lower - ref_lower).abs().max() <= 1e-12


@pytest.mark.parametrize("delta", [1e-4, 1e-3, 0.01, 0.05, 0.2, 1.0])
def test_kl_newton_float64_dense(delta: float) -> None:
    logp = _dense_logp()
    ref_lower, ref_upper = naive_bounds(logp, delta=delta, divergence="kl")
    lower, upper = kl_bounds_newton(logp, delta)
    assert ((upper - ref_upper).abs() / ref_upper).max() <= 1e-10
    assert (lower - ref_lower).abs().max() <= 1e-12


def test_kl_newton_step_count_is_needed() -> None:
    """The float64 step count is not oversized by much: four fewer steps miss the 1e−10 target."""
    logp = _dense_logp()
    ref_lower, ref_upper = naive_bounds(logp, delta=1e-4, divergence="kl")
    lower, upper = kl_bounds_newton(logp, 1e-4, steps=NEWTON_STEPS[torch.float64] - 4)
    assert ((upper - ref_upper).abs() / ref_upper).max() > 1e-10 or (lower - ref_lower).abs().max() > 1e-12


@pytest.mark.parametrize("delta", [1e-4, 1e-3, 0.01, 0.05, 0.2, 1.0])
def test_kl_table_float32_dense(delta: float) -> None:
    # every float32 logp on a fine log grid, reference at the float32 value
    logp32 = _dense_logp().to(torch.float32)
    logp32 = logp32[logp32 < 0]
    ref_lower, ref_upper = kl_bounds_newton(logp32.double(), delta)
    lower, upper = kl_bounds_table(logp32, delta)
    assert ((upper.double() - ref_upper).abs() / ref_upper).max() <= 1e-6
    assert (lower.double() - ref_lower).abs().max() <= 1e-6


def test_kl_table_float32_between_nodes() -> None:
    """Worst case of linear interpolation: the midpoints of the table cells, across the whole range."""
    bits = torch.arange((127 - 30) << 23, (127 + 5) << 23, 1 << 10, dtype=torch.int64)  # cell midpoints
    logp32 = -bits.to(torch.int32).view(torch.float32)
    for delta in (1e-6, 1e-4, 0.05, 20.0):  # beyond the δ range on both sides
        ref_lower, ref_upper = kl_bounds_newton(logp32.double(), delta)
        lower, upper = kl_bounds_table(logp32, delta)
        assert ((upper.double() - ref_upper).abs() / ref_upper).max() <= 1e-6
        assert (lower.double() - ref_lower).abs().max() <= 1e-6


# --- log-probs just below 0 (1 − p from 1e−15 down to the smallest subnormal) ----------------------------

EXTREME_LOGP = [-1e-15, -1e-20, -1e-29, -1e-31, -1e-32, -1e-300, -5e-324]
ALL_DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]


@functools.cache
def _extreme_reference(
    name: str, delta: float, dtype_name: str
) -> tuple[list[float], list[float], list[float]]:
    """(logp as the dtype holds it, lower, upper): mpmath at that logp, or r* where it rounds to 0 (p = 1)."""
    dtype = getattr(torch, dtype_name)
    logp = torch.tensor(EXTREME_LOGP, dtype=torch.float64).to(dtype).to(torch.float64).tolist()
    pairs = [reference_bounds(name, x, delta) if x < 0 else (reference_p_one(name, delta), 1.0) for x in logp]
    return logp, [a for a, _ in pairs], [b for _, b in pairs]


def _check_extremes(
    name: str, delta: float, dtype: torch.dtype, lower: torch.Tensor, upper: torch.Tensor
) -> None:
    logp, lower_ref, upper_ref = _extreme_reference(name, delta, str(dtype).split(".")[1])
    assert not (torch.isnan(lower).any() or torch.isnan(upper).any())
    r_star = reference_p_one(name, delta)
    for x, ours_low, ours_up, ref_low, ref_up in zip(
        logp, lower.tolist(), upper.tolist(), lower_ref, upper_ref, strict=True
    ):
        if dtype in (torch.bfloat16, torch.float16):  # solved in float64, rounded once
            assert_rounded_once(torch.tensor([ours_low]), torch.tensor([ref_low]), rel=1e-10, dtype=dtype)
            assert_rounded_once(torch.tensor([ours_up]), torch.tensor([ref_up]), rel=1e-10, dtype=dtype)
            continue
        tol = 1e-12 if dtype == torch.float64 else 1e-6
        assert abs(ours_up - ref_up) <= tol * ref_up
        if x < 0 and math.log(-math.expm1(x)) < LOG_FLOOR:
            # 1 − p < e^−700 is read as p = 1 (solver docstring): exact for f'(∞) < ∞; for f'(∞) = ∞ (reverse KL:
            # 1 − r̲ ≈ δ/log(1/(1 − p))) the documented gap is at most δ/700
            assert ours_low == pytest.approx(r_star, abs=1e-12)
            assert abs(ours_low - ref_low) <= delta / 700
        else:
            assert abs(ours_low - ref_low) <= tol


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_extreme_logp_near_zero_matches_mpmath(name: str, dtype: torch.dtype) -> None:
    """Every built-in on every dtype path at logp ∈ (−1e−15 … −5e−324): no NaN, no plausible wrong bound
    (was: KL NaN below −1e−31 and for bf16 −1e−32; js/α-family lower ≈ 1 instead of r* at −5e−324)."""
    for delta in DELTAS:
        logp = torch.tensor(EXTREME_LOGP, dtype=torch.float64).to(dtype)
        bounds = band_bounds(logp, delta=delta, divergence=name)
        _check_extremes(name, delta, dtype, bounds.lower, bounds.upper)


@pytest.mark.parametrize("name", NAMES)
def test_generic_solver_at_extreme_logp(name: str) -> None:
    """The generic solver itself (also for the divergences `band_bounds` sends elsewhere) at the same values;
    before the fix 1 − p < e^−700 inverted its bracket (logit p > X_MAX): lower = 1 for js, α = ½, α = −1."""
    divergence = get_divergence(name)
    logp = torch.tensor(EXTREME_LOGP, dtype=torch.float64)
    for delta in (1e-4, 0.05, 1.0):
        lower, upper = solve_bounds(divergence, logp, delta)
        _check_extremes(name, delta, torch.float64, lower, upper)


@pytest.mark.parametrize(
    "logp", [-1e-18, -1e-19, -1.0000001e-20, P_ONE_LOGP, -1e-20 / 1.0000001, -1e-29, -1e-31]
)
def test_kl_p_one_cutoff_is_continuous_against_mpmath(logp: float) -> None:
    """Both sides of `P_ONE_LOGP`: Newton just below, the p = 1 answer (e^−δ, 1) just above, and mpmath agree
    to float64 precision, so the cut-off is not a jump."""
    for delta in [1e-8, *DELTAS, 10.0]:
        lower, upper = kl_bounds_newton(torch.tensor([logp], dtype=torch.float64), delta)
        ref_lower, ref_upper = reference_bounds("kl", logp, delta)
        assert (
            abs(lower.item() - ref_lower) <= 1.2e-16
        )  # half an ulp below 1 (the reference resolves 1.4e−17)
        assert abs(lower.item() - math.exp(-delta)) <= 2.3e-16 * math.exp(-delta)
        assert upper.item() == ref_upper == 1.0


def test_kl_newton_never_nan_near_p_one_for_tiny_delta() -> None:
    """Was NaN for δ = 1e−4 at logp = −1e−29 and for smaller δ up to logp = −1e−19: the χ² start p − √(2δp(1 − p))
    rounded to p = 1, so Newton divided inf by inf."""
    eps = torch.logspace(-24, -12, 241, dtype=torch.float64)
    logp = torch.cat([-eps, torch.tensor([-5e-324, -1e-300, -1e-32, 0.0])])
    for delta in (1e-16, 1e-12, 1e-8, 1e-4, 0.05, 1.0, 100.0):
        lower, upper = kl_bounds_newton(logp, delta)
        assert not (torch.isnan(lower).any() or torch.isnan(upper).any())
        # the exact lower bound is e^−δ up to ~ε·(log(1/ε) + 1) (kl module docstring), upper in [1, 1/p]
        bound = torch.cat([eps * (torch.log(1 / eps) + 1), torch.zeros(4, dtype=torch.float64)])
        assert ((lower - math.exp(-delta)).abs() <= bound + 2.3e-16 * math.exp(-delta)).all()
        assert ((upper >= 1) & (upper <= 1 + 2 * eps.max())).all()
