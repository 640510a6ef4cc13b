"""`band_bounds`: shapes, dtypes, structural properties, edges p = 0 / p = 1, and every input error."""

from __future__ import annotations

import math

import pytest
import torch

from bandpo.band import BandBounds, band_bounds, list_divergences, logp_tolerance

ALL = [*list_divergences()[:7], "alpha:0.5", "alpha:2", "alpha:-1"]
DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]


def _logp_grid(n: int = 200) -> torch.Tensor:
    small = torch.logspace(-12, math.log10(0.5), n, dtype=torch.float64)
    return torch.cat([torch.log(small), torch.log1p(-small).flip(0)])  # increasing p


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", DTYPES)
def test_shape_dtype_device_kept(name: str, dtype: torch.dtype) -> None:
    logp = torch.log(torch.rand(3, 4, 5, generator=torch.Generator().manual_seed(0))).to(dtype)
    bounds = band_bounds(logp, delta=0.05, divergence=name)
    assert isinstance(bounds, BandBounds)
    for t in (bounds.lower, bounds.upper):
        assert t.shape == logp.shape and t.dtype == dtype and t.device == logp.device


# Batched, scalar and cross-CPU results agree within ULPS units in the last place, not to the bit: torch runs
# a tensor's body through vectorised (SLEEF) exp/log kernels and its tail, or a 0-d tensor, through the scalar
# libm ones, and which elements fall where depends on the shape and on the CPU (AVX2 vs AVX-512). Each kernel
# is within an ulp; the root finder carries that through the conditioning of g_f near r = 1, measured up to
# 48 ulps (js, δ = 0.05) between ATEN_CPU_CAPABILITY=default and avx2/avx512 on a dense p grid.
ULPS = 256


def assert_within_ulps(actual: torch.Tensor, expected: torch.Tensor, ulps: int = ULPS) -> None:
    """`actual` equals `expected` within `ulps` ulps: relative on the upper bound scale, absolute below 1."""
    eps = torch.finfo(expected.dtype).eps
    torch.testing.assert_close(actual, expected, rtol=ulps * eps, atol=ulps * eps, equal_nan=True)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", DTYPES)
def test_batched_equals_loop_of_scalars(name: str, dtype: torch.dtype) -> None:
    """39 tokens: a vectorised body and a scalar tail on every SIMD width, against 0-d calls (`ULPS`).
    Was bit-equality, which failed for js on AVX2 machines (AMD EPYC) by 1–2 ulp."""
    uniform = torch.rand(3, 13, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    logp = torch.log(uniform).to(dtype)
    batched = band_bounds(logp, delta=0.1, divergence=name)
    for index in [(i, j) for i in range(3) for j in range(13)]:
        single = band_bounds(logp[index].reshape(()), delta=0.1, divergence=name)
        assert single.lower.shape == () and single.lower.dtype == dtype
        ulps = ULPS if dtype in (torch.float64, torch.float32) else 1  # half precision: one rounding step
        assert_within_ulps(single.lower, batched.lower[index], ulps)
        assert_within_ulps(single.upper, batched.upper[index], ulps)


_KERNEL_SCRIPT = """
import math, sys, torch
from bandpo.band import band_bounds
small = torch.logspace(-12, math.log10(0.5), 300, dtype=torch.float64)
logp = torch.cat([torch.log(small), torch.log1p(-small)])
names = sys.argv[1].split(",")
out = {n: [band_bounds(logp.to(dt), delta=d, divergence=n) for dt in (torch.float64, torch.float32)
           for d in (0.05, 1.0)] for n in names}
torch.save({n: [(b.lower, b.upper) for b in v] for n, v in out.items()}, sys.argv[2])
"""


@pytest.mark.slow  # two fresh interpreters solve every divergence on a grid: over a minute on 2 busy cores
def test_scalar_and_vector_kernels_agree_within_ulps(tmp_path) -> None:
    """The same grid solved with torch's scalar kernels only (ATEN_CPU_CAPABILITY=default, what an old or
    unusual CPU gets) and with this CPU's vector kernels: equal within `ULPS`, for every path."""
    import os
    import subprocess
    import sys

    names = ",".join(ALL)
    results = {}
    for capability in ("default", None):
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
        env.pop("ATEN_CPU_CAPABILITY", None)
        if capability is not None:
            env["ATEN_CPU_CAPABILITY"] = capability
        path = tmp_path / f"{capability}.pt"
        subprocess.run([sys.executable, "-c", _KERNEL_SCRIPT, names, str(path)], env=env, check=True)
        results[capability] = torch.load(path)
    for name in ALL:
        for (low_a, up_a), (low_b, up_b) in zip(results["default"][name], results[None][name], strict=True):
            assert_within_ulps(low_a, low_b)
            assert_within_ulps(up_a, up_b)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_interval_properties_and_monotone_in_p(name: str, dtype: torch.dtype) -> None:
    logp = _logp_grid().to(dtype)
    p = torch.exp(logp.double())
    for delta in (1e-4, 0.05, 1.0):
        b = band_bounds(logp, delta=delta, divergence=name)
        lower, upper = b.lower.double(), b.upper.double()
        assert (lower >= 0).all() and (lower <= 1).all()
        assert (upper >= 1).all()
        assert (upper <= (1 / p) * (1 + 4 * torch.finfo(dtype).eps)).all()
        # p increasing: the interval shrinks towards 1 (lower rises, upper falls)
        assert (lower.diff() >= -4 * torch.finfo(dtype).eps).all()
        assert (upper.diff() <= 4 * torch.finfo(dtype).eps * upper[1:]).all()


@pytest.mark.parametrize("name", ALL)
def test_monotone_in_delta(name: str) -> None:
    logp = _logp_grid(40)
    previous = band_bounds(logp, delta=1e-4, divergence=name)
    for delta in (1e-3, 0.01, 0.05, 0.2, 1.0):
        current = band_bounds(logp, delta=delta, divergence=name)
        assert (current.lower <= previous.lower + 1e-15).all()
        assert (current.upper >= previous.upper * (1 - 1e-15)).all()
        assert (current.upper - current.lower > 0).all()
        previous = current


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", DTYPES)
def test_p_zero_and_p_one(name: str, dtype: torch.dtype) -> None:
    logp = torch.tensor([-math.inf, 0.0, -0.0], dtype=dtype)
    b = band_bounds(logp, delta=0.05, divergence=name)
    assert b.lower[0] == 0 and b.upper[0] == math.inf
    assert (b.upper[1:] == 1).all()
    assert b.lower[1] == b.lower[2]
    assert 0 <= float(b.lower[1]) <= 1


@pytest.mark.parametrize(
    ("name", "r_star"),
    [
        ("kl", math.exp(-0.05)),
        ("tv", 0.95),
        ("chi2", 1.0),
        ("neyman_chi2", 1 / 1.05),
        ("hellinger", 0.975**2),
        ("reverse_kl", 1.0),
        ("alpha:2", 1.0),
    ],
)
def test_lower_at_p_one_is_r_star(name: str, r_star: float) -> None:
    b = band_bounds(torch.zeros(1, dtype=torch.float64), delta=0.05, divergence=name)
    assert b.lower.item() == pytest.approx(r_star, abs=1e-15)


@pytest.mark.parametrize("name", ALL)
def test_continuous_at_p_to_one_and_zero(name: str) -> None:
    """No hand overwrite near the edges: the bounds approach their p = 1 and p → 0 limits smoothly."""
    eps = torch.logspace(-16, -6, 30, dtype=torch.float64)
    near_one = band_bounds(torch.log1p(-eps), delta=0.05, divergence=name)
    at_one = band_bounds(torch.zeros(1, dtype=torch.float64), delta=0.05, divergence=name)
    # lower moves monotonically towards r* as 1 − p shrinks (slowly for f'(∞) = ∞, e.g. reverse KL)
    gap = (near_one.lower - at_one.lower).abs()
    assert (gap.diff() >= -1e-14).all()  # eps increasing: the gap grows
    assert gap[0] <= 2e-3 and gap[0] <= 0.5 * gap[-1] + 1e-12  # reverse KL: gap ~ δ/log(1/(1 − p))
    assert ((near_one.upper - 1) <= 2 * eps + 1e-15).all()
    # p → 0: lower → 0, upper → ∞
    tiny = band_bounds(torch.tensor([-200.0, -600.0], dtype=torch.float64), delta=0.05, divergence=name)
    assert (tiny.lower <= 1e-6).all() and (tiny.upper >= 1e20).all()


def test_float32_kl_continuous_across_the_old_override_threshold() -> None:
    # the official code jumps at p = 1 − 1e−6; here consecutive float32 logp give consecutive bounds
    logp = -torch.logspace(-9, -4, 2000, dtype=torch.float32)
    b = band_bounds(logp, delta=0.05)
    exact = band_bounds(logp.double(), delta=0.05)
    assert (b.lower.double() - exact.lower).abs().max() <= 1e-6
    assert ((b.upper.double() - exact.upper) / exact.upper).abs().max() <= 1e-6
    assert (b.lower.diff() <= 0).all() and (b.upper.diff() >= 0).all()  # p falls along the grid


def test_known_values_delta_005() -> None:
    """Known values at δ = 0.05 for KL, TV and χ² (docs/theory.md, "Closed forms")."""
    p = torch.tensor([0.01, 0.08, 0.5, 0.9], dtype=torch.float64)
    kl = band_bounds(torch.log(p), delta=0.05)
    assert kl.lower.tolist() == pytest.approx([0.0025, 0.262, 0.692, 0.867], abs=6e-4)
    assert kl.upper.tolist() == pytest.approx([7.81, 2.41, 1.31, 1.08], abs=6e-3)
    tv = band_bounds(torch.log(p), delta=0.05, divergence="tv")
    assert tv.lower.tolist() == pytest.approx([0, 0.375, 0.9, 0.9444444444444444], abs=1e-12)
    assert tv.upper.tolist() == pytest.approx([6.0, 1.625, 1.1, 1.0555555555555556], abs=1e-12)
    chi2 = band_bounds(torch.log(p), delta=0.05, divergence="chi2")
    assert chi2.upper.tolist() == pytest.approx([3.2249, 1.7583, 1.2236, 1.0745], abs=1e-4)


def test_float32_default_path_matches_float64() -> None:
    logp = torch.log(torch.rand(10_000, generator=torch.Generator().manual_seed(3))) * 5
    b32 = band_bounds(logp, delta=0.05)
    b64 = band_bounds(logp.double(), delta=0.05)
    assert ((b32.upper.double() - b64.upper).abs() / b64.upper).max() <= 1e-6
    assert (b32.lower.double() - b64.lower).abs().max() <= 1e-6


# --- errors ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("delta", [0.0, -0.1, math.nan, math.inf])
def test_bad_delta(delta: float) -> None:
    with pytest.raises(ValueError, match="delta must be finite and > 0"):
        band_bounds(torch.zeros(2), delta=delta)


@pytest.mark.parametrize("delta", [True, "0.05", torch.tensor(0.05), None])
def test_delta_of_wrong_type(delta: object) -> None:
    with pytest.raises(ValueError, match="delta must be a positive float"):
        band_bounds(torch.zeros(2), delta=delta)  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_nan_logp_is_an_error(dtype: torch.dtype) -> None:
    with pytest.raises(ValueError, match="NaN"):
        band_bounds(torch.tensor([-1.0, math.nan], dtype=dtype), delta=0.05)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
def test_positive_logp_beyond_rounding_is_an_error(dtype: torch.dtype) -> None:
    too_big = 4 * logp_tolerance(dtype)
    with pytest.raises(ValueError, match="positive log-probabilities"):
        band_bounds(torch.tensor([-1.0, too_big], dtype=dtype), delta=0.05)
    with pytest.raises(ValueError, match="positive log-probabilities"):
        band_bounds(torch.tensor([math.inf], dtype=dtype), delta=0.05)


@pytest.mark.parametrize("name", ["kl", "js", "tv"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_rounding_noise_above_zero_reads_as_p_one(name: str, dtype: torch.dtype) -> None:
    noise = torch.tensor([0.5 * logp_tolerance(dtype), 0.0], dtype=dtype)
    b = band_bounds(noise, delta=0.05, divergence=name)
    assert b.lower[0] == b.lower[1] and b.upper[0] == b.upper[1] == 1


def test_not_a_tensor_or_not_floating() -> None:
    with pytest.raises(ValueError, match=r"torch\.Tensor"):
        band_bounds([-1.0], delta=0.05)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="floating dtype"):
        band_bounds(torch.tensor([-1]), delta=0.05)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", DTYPES)
def test_validate_false_skips_the_check_and_propagates_nan(name: str, dtype: torch.dtype) -> None:
    """Never a finite, plausible-looking bound for NaN input, on every path (table, Newton, closed, generic)."""
    logp = torch.tensor([math.nan, -1.0, -math.inf, 0.0], dtype=dtype)
    b = band_bounds(logp, delta=0.05, divergence=name, validate=False)
    assert math.isnan(b.lower[0].item()) and math.isnan(b.upper[0].item())
    assert math.isfinite(b.upper[1].item()) and b.upper[2].item() == math.inf and b.upper[3].item() == 1


def test_empty_input() -> None:
    for name in ("kl", "tv", "js"):
        b = band_bounds(torch.empty(0, 3), delta=0.05, divergence=name)
        assert b.lower.shape == (0, 3) and b.upper.shape == (0, 3)
