"""Paired comparisons of arms over seeds: Student-t intervals and Holm-Bonferroni over every comparison shown.

A comparison pairs an arm's value with the reference arm's value on the same seed (same starting policy and
prompts) and tests the mean of the n differences: t = mean / s.e. with n − 1 degrees of freedom, two-sided.
Every difference of the table is one hypothesis of one family (arms × metrics); Holm's step-down procedure
keeps the chance of any false "win" or "lose" in the family at most 5%. A difference that is the same on every
seed has no spread, so no t statistic: it is reported as a constant difference, never as a win.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from bandpo.experiments.report import mean_and_spread

__all__ = ["ALPHA", "STATS_RULE", "PairedDifference", "holm_adjust", "paired_difference", "t_two_sided_p"]

ALPHA = 0.05
STATS_RULE = (
    "each cell is the mean over n seeds of (arm − reference) on the same seed, its 95% Student-t interval "
    "(n − 1 degrees of freedom, not corrected) and the verdict: win / lose when the two-sided paired t-test "
    "rejects a zero difference after the Holm-Bonferroni correction over every cell of the table (family-wise "
    f"error {ALPHA:.0%}), else tie; a difference equal on every seed has no spread and so no test "
    '("constant, no spread: not a test"); n/a with fewer than 2 paired seeds'
)


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for numerator in (
            m * (b - m) * x / ((a + m2 - 1.0) * (a + m2)),
            -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularised incomplete beta function, for 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, dof: int) -> float:
    """P(|T| >= |t|) for Student's t with `dof` degrees of freedom (= I_{dof/(dof+t²)}(dof/2, 1/2))."""
    if dof < 1:
        raise ValueError(f"dof {dof}: Student's t needs at least 1 degree of freedom (2 paired seeds)")
    if math.isinf(t):
        return 0.0
    return _incomplete_beta(dof / 2.0, 0.5, dof / (dof + t * t))


def t_cdf(t: float, dof: int) -> float:
    """P(T <= t) for Student's t with `dof` degrees of freedom."""
    tail = 0.5 * t_two_sided_p(t, dof)
    return 1.0 - tail if t > 0 else tail


def student_t_quantile(probability: float, dof: int) -> float:
    """The exact quantile of Student's t: the t with P(T <= t) = `probability`, by bisection on `t_cdf`.

    Notes:
        Bisection to 1e-12 in t (about 60 halvings of [-1e4, 1e4] after bracketing); `t_cdf` is accurate to
        about 1e-14, so the quantile is exact at every digit a report shows (the interval of a 3-decimal table
        of the 95% value is not: it was off in the last digit of three committed cells).
    """
    if not 0.0 < probability < 1.0:
        raise ValueError(f"probability {probability}: must lie strictly between 0 and 1")
    if dof < 1:
        raise ValueError(f"dof {dof}: Student's t needs at least 1 degree of freedom (2 paired seeds)")
    if probability < 0.5:
        return -student_t_quantile(1.0 - probability, dof)
    low, high = 0.0, 1.0
    while t_cdf(high, dof) < probability:
        low, high = high, 2.0 * high
    while high - low > 1e-12 * max(1.0, high):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if t_cdf(middle, dof) < probability else (low, middle)
    return 0.5 * (low + high)


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given): reject where adjusted p < alpha."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


@dataclass(frozen=True)
class PairedDifference:
    """The paired difference of one arm and metric against the reference over n seeds."""

    n: int
    mean: float
    spread: float  # standard error of the mean difference
    low: float  # 95% Student-t interval, uncorrected
    high: float
    p: float  # two-sided paired t-test; nan without a test
    constant: bool  # the same difference on every seed (no spread, no test)

    @property
    def testable(self) -> bool:
        return self.n >= 2 and not self.constant

    def verdict(self, adjusted_p: float, digits: int = 3) -> str:
        """`+0.047 [+0.012, +0.082] n=8 (win, Holm p=0.010)`; the word follows the adjusted p."""
        if self.n < 2:
            return f"n/a (n={self.n})"
        if self.constant:
            if self.mean == 0:
                return f"{self.mean:+.{digits}f} on every seed, n={self.n} (identical: no test)"
            return f"{self.mean:+.{digits}f} on every seed, n={self.n} (constant, no spread: not a test)"
        word = "tie"
        if adjusted_p < ALPHA:
            word = "win" if self.mean > 0 else "lose"
        return (
            f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}] n={self.n} "
            f"({word}, Holm p={adjusted_p:.3f})"
        )


def paired_difference(values: Sequence[float], reference: Sequence[float]) -> PairedDifference:
    """Paired difference of `values` − `reference` (aligned by seed; pairs with a missing value are dropped)."""
    diffs = [
        float(a) - float(b)
        for a, b in zip(values, reference, strict=True)
        if a is not None and b is not None and math.isfinite(float(a)) and math.isfinite(float(b))
    ]
    n = len(diffs)
    if n < 2:
        mean = diffs[0] if diffs else math.nan
        return PairedDifference(n, mean, math.nan, math.nan, math.nan, math.nan, False)
    mean, spread = mean_and_spread(diffs)
    constant = max(diffs) - min(diffs) <= 1e-12 * max(1.0, abs(mean))
    if constant:
        return PairedDifference(n, mean, 0.0, mean, mean, math.nan, True)
    half = student_t_quantile(1 - ALPHA / 2, n - 1) * spread
    p = t_two_sided_p(mean / spread, n - 1)
    return PairedDifference(n, mean, spread, mean - half, mean + half, p, False)
