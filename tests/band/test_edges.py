"""The Band operator at its edges (issue 9): the δ range, detached bounds, one log-prob tolerance, the
invariant 0 ≤ lower ≤ 1 ≤ upper ≤ 1/p and monotonicity after rounding, one rounding for half precision, and
user divergences that were wrongly refused or wrongly accepted. Each test failed before its fix."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
from band_reference import reference_bounds

from bandpo.band import (
    DELTA_MAX,
    DELTA_MIN,
    LOGP_TOLERANCE,
    Divergence,
    band_bounds,
    check_delta,
    get_divergence,
    list_divergences,
    logp_tolerance,
    register_divergence,
)
from bandpo.band._numerics import round_once
from bandpo.cli import main
from bandpo.methods import get_method

ALL = [*list_divergences()[:7], "alpha:0.5", "alpha:2", "alpha:-1"]
DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
ISSUE_LOGP = torch.log(torch.tensor([0.01, 0.08, 0.5, 0.9], dtype=torch.float64))


# --- δ range --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("delta", [1e-100, 1e-30, 1e-20, 1e-8, DELTA_MIN / 2, DELTA_MAX * 2, 1e300])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_delta_outside_the_verified_range_is_refused(delta: float, dtype: torch.dtype) -> None:
    """Was: δ = 1e−100 → upper all NaN; δ = 1e−20 → lower > upper; δ = 1e−30 in float32 → upper < 1."""
    with pytest.raises(ValueError, match=r"within \[1e-05, 1000\]"):
        band_bounds(ISSUE_LOGP.to(dtype), delta=delta)
    with pytest.raises(ValueError, match=r"within \[1e-05, 1000\]"):
        check_delta(delta)


def test_delta_refusal_reaches_the_method_and_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    """`policy_loss` and `bandpo train` go through the band method, whose declared range for delta is
    `band_bounds`' verified one, so it refuses at construction (before any run writes a file): no NaN loss."""
    with pytest.raises(ValueError, match=r"delta must be a number in \[1e-05, 1000\]"):
        get_method("band", delta=1e-100)
    assert main(["bounds", "--delta", "1e-100"]) == 2
    assert "within [1e-05, 1000]" in capsys.readouterr().err


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", DTYPES)
def test_invariant_at_the_ends_of_the_delta_range(name: str, dtype: torch.dtype) -> None:
    small = torch.logspace(-12, math.log10(0.5), 300, dtype=torch.float64)
    logp = torch.cat([torch.log(small), torch.log1p(-small), torch.tensor([0.0, -math.inf])]).to(dtype)
    inv_p = round_once(torch.exp(-logp.double()), dtype)
    for delta in (DELTA_MIN, DELTA_MAX):
        b = band_bounds(logp, delta=delta, divergence=name)
        assert ((b.lower >= 0) & (b.lower <= 1) & (b.upper >= 1) & (b.upper <= inv_p)).all()


# --- detached bounds ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["kl", "tv", "js"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_bounds_are_detached(name: str, dtype: torch.dtype) -> None:
    """Was: an autograd graph through the bounds (float32 KL: d upper/d logp −7.81, finite differences
    −5.56)."""
    old_logp = torch.log(torch.tensor([0.01, 0.3, 0.9])).to(dtype).requires_grad_(True)
    b = band_bounds(old_logp, delta=0.05, divergence=name)
    for t in (b.lower, b.upper):
        assert not t.requires_grad and t.grad_fn is None


# --- one log-prob tolerance -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_small_logp_tolerance_for_every_dtype(dtype: torch.dtype) -> None:
    """Was 64 ulps of the dtype: bfloat16 read logp = +0.5 (p = 1.65) as p = 1."""
    assert logp_tolerance(dtype) == LOGP_TOLERANCE == 1e-4
    with pytest.raises(ValueError, match="positive log-probabilities"):
        band_bounds(torch.tensor([-1.0, 0.5], dtype=dtype), delta=0.05)
    with pytest.raises(ValueError, match="positive log-probabilities"):
        band_bounds(torch.tensor([-1.0, 0.01], dtype=dtype), delta=0.05)
    b = band_bounds(torch.tensor([5e-5], dtype=dtype), delta=0.05)  # rounding noise: p = 1
    assert b.upper.item() == 1.0


# --- float32 KL: invariant, monotone, rounded once --------------------------------------------------------


def test_float32_kl_upper_never_above_one_over_p() -> None:
    """Was: 74–82 of these 200,001 tokens one rounding step above 1/p (the issue's grid)."""
    logp = -torch.logspace(-6, math.log10(20.0), 200_001, dtype=torch.float64).to(torch.float32)
    b = band_bounds(logp, delta=0.05)
    inv_p = torch.exp(-logp.double()).to(torch.float32)  # 1/p correctly rounded to float32
    assert (b.upper <= inv_p).all() and (b.upper >= 1).all()
    assert ((b.lower >= 0) & (b.lower <= 1)).all()


@pytest.mark.parametrize("start", [1e-5, 1e-3, 0.05, 0.7, 3.0])
@pytest.mark.parametrize("delta", [1e-4, 0.05])
def test_float32_kl_monotone_over_consecutive_floats(start: float, delta: float) -> None:
    """2^16 consecutive float32 log-probs: the upper bound never rises and the lower never falls as p rises
    (was: tens of thousands of 1-ulp reversals in the upper bound)."""
    first = torch.tensor([start], dtype=torch.float32).view(torch.int32).item()
    neg_logp = torch.arange(first, first + 2**16, dtype=torch.int64).to(torch.int32).view(torch.float32)
    b = band_bounds(-neg_logp, delta=delta)  # p falls along the tensor
    assert (b.upper.diff() >= 0).all() and (b.lower.diff() <= 0).all()


def test_bfloat16_is_rounded_once() -> None:
    """The issue's example: the exact lower bound 0.81835935949… lies below the bfloat16 midpoint 0.818359375;
    rounding through float32 first hit the midpoint and gave 0.8203125."""
    logp = torch.tensor([-5.459785461425781e-05], dtype=torch.bfloat16)
    assert band_bounds(logp, delta=0.2).lower.item() == 0.81640625
    ref_lower, _ = reference_bounds("kl", logp.item(), 0.2)
    assert abs(0.81640625 - ref_lower) < abs(0.8203125 - ref_lower)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_round_once_is_round_to_nearest(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(20_000, dtype=torch.float64, generator=gen)
    x = x * torch.exp(torch.randn(20_000, dtype=torch.float64, generator=gen) * 8)
    # values just off midpoints, where rounding twice goes wrong
    mids = (
        x.to(dtype).double() + torch.nextafter(x.to(dtype), torch.tensor(math.inf, dtype=dtype)).double()
    ) / 2
    x = torch.cat([x, mids * (1 - 1e-12), mids * (1 + 1e-12)])
    ours = round_once(x, dtype)
    up = torch.nextafter(ours, torch.tensor(math.inf, dtype=dtype)).double()
    down = torch.nextafter(ours, torch.tensor(-math.inf, dtype=dtype)).double()
    finite = torch.isfinite(ours) & torch.isfinite(up) & torch.isfinite(down)
    for value, got, above, below in zip(
        x[finite].tolist(),
        ours[finite].double().tolist(),
        up[finite].tolist(),
        down[finite].tolist(),
        strict=True,
    ):
        exact, err = Fraction(value), abs(Fraction(value) - Fraction(got))
        assert err <= abs(exact - Fraction(above)) and err <= abs(exact - Fraction(below))
    assert torch.isnan(round_once(torch.tensor([math.nan], dtype=torch.float64), dtype)).all()


# --- user divergences -----------------------------------------------------------------------------------


def test_alpha_near_zero_and_one_is_accepted_and_tends_to_kl_and_reverse_kl() -> None:
    """Was: `alpha:1e-12` refused as "not convex" (u^α − α·u − (1 − α) cancels to noise of 2e−4)."""
    logp = torch.log(torch.logspace(-8, math.log10(0.99), 50, dtype=torch.float64))
    for alpha, limit in (("alpha:1e-12", "kl"), ("alpha:1e-08", "kl"), ("alpha:0.99999999", "reverse_kl")):
        near = band_bounds(logp, delta=0.05, divergence=alpha)
        ref = band_bounds(logp, delta=0.05, divergence=limit)
        assert torch.allclose(near.upper, ref.upper, rtol=1e-6, atol=0)
        assert torch.allclose(near.lower, ref.lower, rtol=0, atol=1e-6)


def test_float32_returning_convex_f_is_accepted() -> None:
    """Was refused as "not convex": float32 rounding of f read as a decreasing slope."""
    user = Divergence("chi2_f32", lambda u: ((u - 1) ** 2).to(torch.float32))
    b = band_bounds(ISSUE_LOGP, delta=0.05, divergence=user)
    ref = band_bounds(ISSUE_LOGP, delta=0.05, divergence="chi2")
    assert torch.allclose(b.upper, ref.upper, rtol=1e-5) and torch.allclose(b.lower, ref.lower, atol=1e-5)
    with pytest.raises(ValueError, match="not convex"):  # still refused when really concave
        Divergence("concave_f32", lambda u: (-((u - 1) ** 2)).to(torch.float32))


def test_f_at_zero_contradicting_f_is_refused() -> None:
    """Was accepted and gave wrong bounds (saturation decided with the wrong f(0))."""
    with pytest.raises(ValueError, match="contradicts f"):
        Divergence("bad_zero", lambda u: (u - 1) ** 2, f_at_zero=5.0)
    with pytest.raises(ValueError, match="contradicts f"):
        Divergence("bad_inf", lambda u: (u - 1) ** 2, f_at_zero=math.inf)
    with pytest.raises(ValueError, match="contradicts f"):  # f(0) is NaN (0·log 0): checked at u = 1e−300
        Divergence("bad_rkl", lambda u: u * torch.log(u) - u + 1, f_at_zero=5.0)
    assert Divergence("ok_rkl", lambda u: u * torch.log(u) - u + 1, f_at_zero=1.0).f_at_zero == 1.0
    assert Divergence("ok_kl", lambda u: -torch.log(u) + u - 1, f_at_zero=math.inf).f_at_zero == math.inf


def test_register_divergence_positionally(registry: None) -> None:
    """Was: AttributeError: 'Divergence' object has no attribute 'startswith'."""
    div = Divergence("quartic_pos", lambda u: (u - 1) ** 4)
    assert register_divergence(div) is div
    assert get_divergence("quartic_pos") is div
    with pytest.raises(ValueError, match="already registered"):
        register_divergence(div)
    with pytest.raises(ValueError, match="takes no f="):
        register_divergence(Divergence("other", lambda u: (u - 1) ** 2), f=lambda u: u)


def test_meta_tensor_is_a_clear_error() -> None:
    """Was a failure inside `.item()` (validation) with a message about meta tensors having no data."""
    with pytest.raises(ValueError, match="meta tensor"):
        band_bounds(torch.empty(3, device="meta"), delta=0.05)
    with pytest.raises(ValueError, match="meta tensor"):
        band_bounds(torch.empty(3, device="meta"), delta=0.05, validate=False)
