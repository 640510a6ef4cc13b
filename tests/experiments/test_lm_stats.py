"""Paired t-tests, Holm-Bonferroni and the verdict words of the LM report (`bandpo.experiments.stats`)."""

from __future__ import annotations

import math

import pytest

from bandpo.experiments.report import t_critical_95
from bandpo.experiments.stats import holm_adjust, paired_difference, t_two_sided_p


@pytest.mark.parametrize("dof", [1, 2, 4, 7, 15, 30])
def test_t_p_value_at_the_tabulated_critical_value_is_five_percent(dof: int) -> None:
    # the table has 3 decimals, so p is 0.05 to about 1e-4
    assert t_two_sided_p(t_critical_95(dof), dof) == pytest.approx(0.05, abs=2e-4)


def test_t_p_value_limits_and_symmetry() -> None:
    assert t_two_sided_p(0.0, 5) == pytest.approx(1.0, abs=1e-12)
    assert t_two_sided_p(math.inf, 5) == 0.0
    assert t_two_sided_p(-2.0, 9) == pytest.approx(t_two_sided_p(2.0, 9), rel=1e-12)
    # dof = 1 is the Cauchy distribution: P(|T| >= 1) = 1/2
    assert t_two_sided_p(1.0, 1) == pytest.approx(0.5, abs=1e-12)


def test_holm_step_down() -> None:
    # m = 4: sorted p 0.01, 0.02, 0.03, 0.5 -> 0.04, 0.06, 0.06 (monotone), 0.5
    assert holm_adjust([0.03, 0.01, 0.5, 0.02]) == pytest.approx([0.06, 0.04, 0.5, 0.06])
    assert holm_adjust([]) == []


def test_paired_difference_win_tie_and_the_correction() -> None:
    reference = [0.50, 0.40, 0.60, 0.55, 0.45, 0.50, 0.52, 0.48]
    better = [r + d for r, d in zip(reference, [0.05, 0.07, 0.04, 0.06, 0.05, 0.08, 0.03, 0.06], strict=True)]
    difference = paired_difference(better, reference)
    assert difference.n == 8 and difference.testable and difference.low > 0
    assert difference.p < 1e-4
    assert "(win, Holm p=" in difference.verdict(difference.p * 30)  # still significant after x30
    assert "n=8" in difference.verdict(difference.p)
    # the same difference, judged in a family large enough to lose significance, is a tie
    assert "(tie, Holm p=1.000)" in difference.verdict(1.0)
    worse = paired_difference(reference, better)
    assert "(lose" in worse.verdict(worse.p)


def test_constant_difference_is_not_a_test() -> None:
    difference = paired_difference([0.516, 0.532, 0.5], [0.5, 0.516, 0.484])  # +4/256 on every seed
    assert difference.constant and not difference.testable and math.isnan(difference.p)
    assert difference.verdict(0.0) == "+0.016 on every seed, n=3 (constant, no spread: not a test)"
    assert paired_difference([1.0, 2.0], [1.0, 2.0]).verdict(0.0).endswith("(identical: no test)")


def test_missing_values_drop_their_pair() -> None:
    difference = paired_difference([0.5, math.nan, 0.7], [0.4, 0.1, None])
    assert difference.n == 1 and difference.verdict(math.nan) == "n/a (n=1)"
