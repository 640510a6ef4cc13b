"""Exactness of every path of `band_bounds` against an mpmath reference (tests/band/band_reference.py).

Tolerances (issue 2): float64 within 1e−10 relative on upper and 1e−12 absolute on lower; float32 within
1e−6 / 1e−6; bfloat16 and float16 equal to the reference rounded to their dtype. p runs log-spaced from
1e−12 to 1 − 1e−12 (both edges included), δ from 1e−4 to 1.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from band_reference import DELTAS, MP_GENERATORS, p_grid, reference_bounds

from bandpo.band import band_bounds, get_divergence
from bandpo.band.kl import NEWTON_STEPS, kl_bounds_newton, kl_bounds_table
from bandpo.band.solver import solve_bounds

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


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("delta", DELTAS)
def test_float64_matches_mpmath(name: str, delta: float) -> None:
    logp, lower_ref, upper_ref = _reference(name, delta, "float64")
    bounds = band_bounds(logp, delta=delta, divergence=name)
    assert bounds.upper.dtype == torch.float64
    assert ((bounds.upper - upper_ref).abs() / upper_ref).max() <= 1e-10
    assert (bounds.lower - lower_ref).abs().max() <= 1e-12


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("delta", [1e-4, 0.05, 1.0])
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
    assert torch.equal(bounds.upper, upper_ref.to(dtype))
    # the bisection reference resolves the lower bound to ~1e−17 only: below that it means "about 0"
    resolved = lower_ref > 1e-15
    assert torch.equal(bounds.lower[resolved], lower_ref[resolved].to(dtype))
    assert (bounds.lower[~resolved].double() <= 1e-15).all()


# --- dense checks of the fast KL paths against the generic float64 solver (itself checked above) ---------


def _dense_logp() -> torch.Tensor:
    small = torch.logspace(-12, math.log10(0.5), 1500, dtype=torch.float64)
    return torch.cat([torch.log(small), torch.log1p(-small)])


@pytest.mark.parametrize("delta", [1e-4, 1e-3, 0.01, 0.05, 0.2, 1.0])
def test_kl_newton_float64_dense(delta: float) -> None:
    logp = _dense_logp()
    ref_lower, ref_upper = solve_bounds(get_divergence("kl"), logp, delta)
    lower, upper = kl_bounds_newton(logp, delta)
    assert ((upper - ref_upper).abs() / ref_upper).max() <= 1e-10
    assert (lower - ref_lower).abs().max() <= 1e-12


def test_kl_newton_step_count_is_needed() -> None:
    """The float64 step count is not oversized by much: two fewer steps miss the 1e−10 target."""
    logp = _dense_logp()
    ref_lower, ref_upper = solve_bounds(get_divergence("kl"), logp, 1e-4)
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
