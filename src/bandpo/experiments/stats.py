"""The statistics of every comparison bandpo reports: paired tests over seeds, exact intervals, Holm.

A comparison pairs an arm's value with the reference arm's value on the same seed (same starting policy and
prompts) and tests the n differences two ways, side by side:

- the paired t-test: t = mean / s.e. with n − 1 degrees of freedom, two-sided, and the 95% interval of the
  mean from the exact Student-t quantile;
- the exact Wilcoxon signed-rank test: zero differences dropped, tied magnitudes given their mid-ranks, the
  two-sided p from the exact permutation distribution of the signed ranks (no normal approximation), so it
  stays valid for any distribution of the differences and any n.

Every cell of a table is one hypothesis of one family; Holm's step-down procedure, applied to each test
separately, keeps the chance of any false "win" or "lose" in the family at most 5%. A cell is a win or a loss
only when both tests reject after Holm; when one does and the other does not, it is "tests disagree". A
difference that is the same on every seed has no spread, so no t statistic: it is reported as a constant
difference, never as a win, and left out of both families.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "ALPHA",
    "STATS_RULE",
    "PairedDifference",
    "holm_adjust",
    "holm_verdicts",
    "mean_and_spread",
    "paired_difference",
    "student_t_quantile",
    "t_cdf",
    "t_two_sided_p",
    "wilcoxon_signed_rank_p",
]

ALPHA = 0.05
STATS_RULE = (
    "each cell is the mean over n seeds of (arm − reference) on the same seed, its 95% Student-t interval "
    "(n − 1 degrees of freedom, exact quantile, not corrected), the per-seed signs (+/−/0) and the verdict: "
    "win / lose when both the two-sided paired t-test and the exact Wilcoxon signed-rank test reject a zero "
    "difference after the Holm-Bonferroni correction over every tested cell of the table (each test corrected "
    f'on its own; family-wise error {ALPHA:.0%}), "tests disagree" when only one of them does, else tie; a '
    'difference equal on every seed has no spread and so no test ("constant, no spread: not a test"); n/a '
    "with fewer than 2 paired seeds"
)


def mean_and_spread(values: Sequence[float]) -> tuple[float, float]:
    """(mean, standard error of the mean) of the finite values; the error is nan below 2 values."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return math.nan, math.nan
    mean = sum(finite) / len(finite)
    if len(finite) < 2:
        return mean, math.nan
    variance = sum((v - mean) ** 2 for v in finite) / (len(finite) - 1)
    return mean, math.sqrt(variance / len(finite))


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
    """Holm-Bonferroni adjusted p-values (same order as given): reject where adjusted p < alpha.

    A nan p-value is refused: sorting it would silently misplace it and shift every other adjustment.
    """
    bad = [p for p in p_values if not 0.0 <= p <= 1.0]  # also catches nan
    if bad:
        raise ValueError(f"holm_adjust: p-values must lie in [0, 1], got {bad[:3]}; leave untested cells out")
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def wilcoxon_signed_rank_p(differences: Sequence[float]) -> float:
    """Exact two-sided p of the Wilcoxon signed-rank test of `differences` against a zero median.

    Notes:
        Zeros are dropped (Wilcoxon's rule); tied magnitudes share their mid-rank. Under H0 every sign is +
        or − with probability 1/2 independently, so W+ (the sum of the positive ranks) has the distribution of
        a random subset sum of the ranks, counted exactly by dynamic programming over the doubled (integer)
        mid-ranks: O(n³) integer steps, instant for any n a study has. The p is P(|W+ − E W+| ≥ observed),
        at most 1. With no nonzero difference the p is 1.
    """
    nonzero = [float(d) for d in differences if float(d) != 0.0]
    n = len(nonzero)
    if n == 0:
        return 1.0
    order = sorted(range(n), key=lambda i: abs(nonzero[i]))
    doubled = [0] * n  # 2 x mid-rank: an integer even with ties
    start = 0
    while start < n:
        stop = start
        while stop + 1 < n and abs(nonzero[order[stop + 1]]) == abs(nonzero[order[start]]):
            stop += 1
        for position in range(start, stop + 1):
            doubled[order[position]] = start + stop + 2  # (start + 1) + (stop + 1)
        start = stop + 1
    total = sum(doubled)
    counts = [0] * (total + 1)  # counts[w] = number of sign patterns with doubled W+ = w
    counts[0] = 1
    for rank in doubled:
        for w in range(total, rank - 1, -1):
            counts[w] += counts[w - rank]
    observed = sum(rank for rank, d in zip(doubled, nonzero, strict=True) if d > 0)
    distance = abs(2 * observed - total)  # |W+ - E W+| in quarter units: E W+ = total / 2
    extreme = sum(count for w, count in enumerate(counts) if abs(2 * w - total) >= distance)
    return min(1.0, extreme / 2**n)


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
    p_exact: float = math.nan  # exact two-sided Wilcoxon signed-rank test; nan without a test
    signs: tuple[int, int, int] = (0, 0, 0)  # seeds with a positive, negative, zero difference

    @property
    def testable(self) -> bool:
        return self.n >= 2 and not self.constant

    @property
    def sign_text(self) -> str:
        positive, negative, zero = self.signs
        return f"{positive}+/{negative}−" + (f"/{zero} zero" if zero else "")

    def word(self, adjusted_p: float, adjusted_p_exact: float) -> str:
        """win / lose when both tests reject after Holm, "tests disagree" when one does, else tie."""
        rejects = [adjusted_p < ALPHA, adjusted_p_exact < ALPHA]
        if all(rejects):
            return "win" if self.mean > 0 else "lose"
        return "tests disagree" if any(rejects) else "tie"

    def verdict(self, adjusted_p: float, adjusted_p_exact: float = math.nan, digits: int = 3) -> str:
        """`+0.047 [+0.012, +0.082] n=8, 7+/1− (win; Holm p: t 0.010, Wilcoxon 0.031)`."""
        if self.n < 2:
            return f"n/a (n={self.n})"
        if self.constant:
            if self.mean == 0:
                return f"{self.mean:+.{digits}f} on every seed, n={self.n} (identical: no test)"
            return f"{self.mean:+.{digits}f} on every seed, n={self.n} (constant, no spread: not a test)"
        return (
            f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}] n={self.n}, "
            f"{self.sign_text} ({self.word(adjusted_p, adjusted_p_exact)}; Holm p: t {adjusted_p:.3f}, "
            f"Wilcoxon {adjusted_p_exact:.3f})"
        )


def paired_difference(values: Sequence[float], reference: Sequence[float]) -> PairedDifference:
    """Paired difference of `values` − `reference` (aligned by seed; pairs with a missing value are dropped)."""
    diffs = [
        float(a) - float(b)
        for a, b in zip(values, reference, strict=True)
        if a is not None and b is not None and math.isfinite(float(a)) and math.isfinite(float(b))
    ]
    n = len(diffs)
    signs = (sum(d > 0 for d in diffs), sum(d < 0 for d in diffs), sum(d == 0 for d in diffs))
    if n < 2:
        mean = diffs[0] if diffs else math.nan
        return PairedDifference(n, mean, math.nan, math.nan, math.nan, math.nan, False, signs=signs)
    mean, spread = mean_and_spread(diffs)
    constant = max(diffs) - min(diffs) <= 1e-12 * max(1.0, abs(mean))
    if constant:
        return PairedDifference(n, mean, 0.0, mean, mean, math.nan, True, signs=signs)
    half = student_t_quantile(1 - ALPHA / 2, n - 1) * spread
    p = t_two_sided_p(mean / spread, n - 1)
    return PairedDifference(
        n, mean, spread, mean - half, mean + half, p, False, wilcoxon_signed_rank_p(diffs), signs
    )


def holm_verdicts(
    differences: Sequence[PairedDifference], digits: int | Sequence[int] = 3
) -> tuple[list[str], int]:
    """The verdict text of every difference of one family, each test Holm-corrected over the tested cells;
    `digits` is one precision or one per difference. Returns (texts in the given order, family size)."""
    places = [digits] * len(differences) if isinstance(digits, int) else list(digits)
    tested = [index for index, difference in enumerate(differences) if difference.testable]
    adjusted_t = dict(zip(tested, holm_adjust([differences[i].p for i in tested]), strict=True))
    adjusted_exact = dict(zip(tested, holm_adjust([differences[i].p_exact for i in tested]), strict=True))
    texts = [
        difference.verdict(
            adjusted_t.get(index, math.nan), adjusted_exact.get(index, math.nan), places[index]
        )
        for index, difference in enumerate(differences)
    ]
    return texts, len(tested)
