"""The one statistics module (`bandpo.experiments.stats`): Student-t against mpmath, the exact Wilcoxon
signed-rank test against a brute-force enumeration, Holm, and the verdict words every report uses."""

from __future__ import annotations

import itertools
import math

import pytest

from bandpo.experiments.stats import (
    holm_adjust,
    holm_verdicts,
    paired_difference,
    student_t_quantile,
    t_cdf,
    t_two_sided_p,
    wilcoxon_signed_rank_p,
)

mpmath = pytest.importorskip("mpmath")


def mpmath_t_cdf(t: float, dof: int) -> float:
    tail = mpmath.betainc(dof / 2, 0.5, 0, dof / (dof + mpmath.mpf(t) ** 2), regularized=True) / 2
    return float(1 - tail if t > 0 else tail)


@pytest.mark.parametrize("dof", [1, 2, 3, 7, 15, 23, 40, 60, 119, 1000])
@pytest.mark.parametrize("t", [-30.0, -2.0, -0.3, 0.0, 0.7, 2.06, 4.5, 50.0])
def test_t_cdf_matches_mpmath(t: float, dof: int) -> None:
    assert t_cdf(t, dof) == pytest.approx(mpmath_t_cdf(t, dof), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("dof", [*range(1, 31), 40, 45, 60, 120, 500])
@pytest.mark.parametrize("probability", [0.975, 0.995, 0.6])
def test_student_t_quantile_inverts_the_mpmath_cdf(dof: int, probability: float) -> None:
    quantile = student_t_quantile(probability, dof)
    with mpmath.workdps(30):
        assert mpmath_t_cdf(quantile, dof) == pytest.approx(probability, abs=1e-12)


def test_quantile_known_values_and_refusals() -> None:
    assert student_t_quantile(0.975, 1) == pytest.approx(12.706204736, rel=1e-9)
    assert student_t_quantile(0.975, 23) == pytest.approx(2.068657610, rel=1e-9)
    assert student_t_quantile(0.025, 23) == -student_t_quantile(0.975, 23)
    # the exact value at 45 dof lies above the 60-dof entry and below the 40-dof one of a printed table
    assert 2.000 < student_t_quantile(0.975, 45) < 2.021
    for probability in (0.0, 1.0, math.nan):
        with pytest.raises(ValueError, match="between 0 and 1"):
            student_t_quantile(probability, 5)
    with pytest.raises(ValueError, match="2 paired seeds"):
        student_t_quantile(0.975, 0)


def test_t_p_value_limits_and_symmetry() -> None:
    assert t_two_sided_p(0.0, 5) == pytest.approx(1.0, abs=1e-12)
    assert t_two_sided_p(math.inf, 5) == 0.0
    assert t_two_sided_p(-2.0, 9) == pytest.approx(t_two_sided_p(2.0, 9), rel=1e-12)
    assert t_two_sided_p(1.0, 1) == pytest.approx(0.5, abs=1e-12)  # Cauchy: P(|T| >= 1) = 1/2


def brute_force_wilcoxon(differences: list[float]) -> float:
    """Every one of the 2^n sign patterns of the mid-ranks, counted directly."""
    nonzero = [d for d in differences if d != 0]
    magnitudes = sorted(abs(d) for d in nonzero)
    ranks = [
        sum(i + 1 for i, m in enumerate(magnitudes) if m == abs(d)) / magnitudes.count(abs(d))
        for d in nonzero
    ]
    total = sum(ranks)
    observed = abs(sum(r for r, d in zip(ranks, nonzero, strict=True) if d > 0) - total / 2)
    patterns = list(itertools.product((0, 1), repeat=len(ranks)))
    extreme = sum(
        abs(sum(r for r, s in zip(ranks, signs, strict=True) if s) - total / 2) >= observed - 1e-9
        for signs in patterns
    )
    return min(1.0, extreme / len(patterns))


@pytest.mark.parametrize(
    "differences",
    [
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8],  # all positive: 2 / 2^8
        [0.1, -0.2, 0.3, 0.4, -0.5, 0.6, 0.7, 0.8, 0.9, -1.0],
        [0.2, -0.2, 0.2, 0.5, 0.5, -0.1, 0.0, 0.3, 0.0],  # ties and zeros
        [-0.01, -0.02, -0.02, -0.03, 0.04, -0.05],
        [1.0],
        [0.0, 0.0],
    ],
)
def test_wilcoxon_matches_brute_force(differences: list[float]) -> None:
    assert wilcoxon_signed_rank_p(differences) == pytest.approx(brute_force_wilcoxon(differences), rel=1e-12)


def test_wilcoxon_smallest_p_and_large_n() -> None:
    assert wilcoxon_signed_rank_p([0.1 * i for i in range(1, 9)]) == 2 / 2**8
    assert wilcoxon_signed_rank_p([0.1 * i for i in range(1, 25)]) == 2 / 2**24
    assert wilcoxon_signed_rank_p([]) == 1.0


def test_holm_step_down_and_refusal() -> None:
    assert holm_adjust([0.03, 0.01, 0.5, 0.02]) == pytest.approx([0.06, 0.04, 0.5, 0.06])
    assert holm_adjust([]) == []
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm_adjust([0.01, math.nan])


def test_verdict_needs_both_tests() -> None:
    reference = [0.50, 0.40, 0.60, 0.55, 0.45, 0.50, 0.52, 0.48]
    steps = [0.05, 0.07, 0.04, 0.06, 0.05, 0.08, 0.03, 0.06]
    difference = paired_difference([r + d for r, d in zip(reference, steps, strict=True)], reference)
    assert difference.n == 8 and difference.testable and difference.low > 0 and difference.signs == (8, 0, 0)
    assert difference.p < 1e-4 and difference.p_exact == 2 / 256
    assert "8+/0−" in difference.verdict(0.001, 0.01)
    assert "(win; Holm p: t 0.001, Wilcoxon 0.010)" in difference.verdict(0.001, 0.01)
    # the exact test cannot follow the t-test below 2/2^n: in a family of 30 the two disagree
    assert "(tests disagree;" in difference.verdict(difference.p * 30, min(1.0, difference.p_exact * 30))
    assert "(tie;" in difference.verdict(0.5, 0.5)
    worse = paired_difference(reference, [r + d for r, d in zip(reference, steps, strict=True)])
    assert "(lose;" in worse.verdict(worse.p, worse.p_exact)


def test_holm_verdicts_corrects_each_test_over_the_tested_cells() -> None:
    strong = paired_difference([1 + 0.01 * i**2 for i in range(1, 13)], [0.0] * 12)
    constant = paired_difference([0.516, 0.532, 0.5], [0.5, 0.516, 0.484])
    noisy = paired_difference([0.1, -0.1, 0.2, -0.3], [0.0] * 4)
    texts, family = holm_verdicts([strong, constant, noisy], [3, 3, 2])
    assert family == 2  # the constant difference is no test and stays out of the family
    assert texts[1] == "+0.016 on every seed, n=3 (constant, no spread: not a test)"
    assert "(tie;" in texts[2] and texts[2].startswith("-0.02 [")
    assert "(win; Holm p: t 0.000, Wilcoxon 0.001)" in texts[0]  # 2 x 2/2^12 = 0.00098


def test_constant_and_missing() -> None:
    assert paired_difference([1.0, 2.0], [1.0, 2.0]).verdict(0.0).endswith("(identical: no test)")
    difference = paired_difference([0.5, math.nan, 0.7], [0.4, 0.1, None])
    assert difference.n == 1 and difference.verdict(math.nan) == "n/a (n=1)"
