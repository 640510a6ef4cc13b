"""High-precision reference for the Band interval: mpmath bisection of g_f(p, r) = δ (30 digits).

Written independently of the solvers under test: plain bisection in r (upper root in log r on
[0, −log p], lower root in r on [0, 1]), run until the bracket is far below the tolerances tested
(1e−10 relative on upper, 1e−12 absolute on lower), with simplex saturation decided first.
"""

from __future__ import annotations

import math

import mpmath as mp

mp.mp.dps = 30

_HALF_LOG2 = mp.log(2) / 2


def _js(u):
    if u == 0:
        return _HALF_LOG2
    return (u * mp.log(2 * u / (1 + u)) + mp.log(2 / (1 + u))) / 2


def _alpha(a):
    a = mp.mpf(a)

    def f(u):
        return (u**a - a * u - (1 - a)) / (a * (a - 1))

    return f


# name -> (f on mpf u > 0, f(0) limit)
MP_GENERATORS = {
    "kl": (lambda u: -mp.log(u) + u - 1, mp.inf),
    "reverse_kl": (lambda u: u * mp.log(u) - u + 1 if u > 0 else mp.mpf(1), mp.mpf(1)),
    "tv": (lambda u: abs(u - 1) / 2, mp.mpf("0.5")),
    "chi2": (lambda u: (u - 1) ** 2, mp.mpf(1)),
    "neyman_chi2": (lambda u: (u - 1) ** 2 / u, mp.inf),
    "hellinger": (lambda u: (mp.sqrt(u) - 1) ** 2, mp.mpf(1)),
    "js": (_js, _HALF_LOG2),
    "alpha:0.5": (_alpha(0.5), mp.mpf(2)),
    "alpha:2": (_alpha(2), mp.mpf("0.5")),
    "alpha:-1": (_alpha(-1), mp.inf),
    "alpha:3": (_alpha(3), mp.mpf(1) / 3),
}


def reference_bounds(name: str, logp: float, delta: float) -> tuple[float, float]:
    """(lower, upper) for p = exp(logp) in (0, 1), to ≥ 14 correct digits."""
    f, f0 = MP_GENERATORS[name]
    p = mp.exp(mp.mpf(logp))
    q = -mp.expm1(mp.mpf(logp))  # 1 − p
    d = mp.mpf(delta)

    def fz(u):
        return f0 if u <= 0 else f(u)

    def g(r):
        return p * fz(r) + q * fz((1 - r * p) / q)

    # upper: log r in [0, −log p]
    top = -mp.mpf(logp)
    if g(1 / p) <= d:
        upper = 1 / p
    else:
        lo, hi = mp.mpf(0), top
        for _ in range(60):
            mid = (lo + hi) / 2
            if g(mp.exp(mid)) <= d:
                lo = mid
            else:
                hi = mid
        upper = mp.exp((lo + hi) / 2)
    # lower: r in [0, 1]
    if g(mp.mpf(0)) <= d:
        lower = mp.mpf(0)
    else:
        lo, hi = mp.mpf(0), mp.mpf(1)  # g(lo) > d >= g(hi)
        for _ in range(56):
            mid = (lo + hi) / 2
            if g(mid) <= d:
                hi = mid
            else:
                lo = mid
        lower = (lo + hi) / 2
    return float(lower), float(upper)


def p_grid(n: int) -> list[float]:
    """log p values: p log-spaced on [1e−12, 0.5] and 1 − p log-spaced on [1e−12, 0.5], plus both edges."""
    half = [10 ** (-12 + 11.7 * i / (n - 1)) for i in range(n)]
    lows = [math.log(x) for x in half]
    highs = [math.log1p(-x) for x in half]
    return sorted(set(lows + highs))


DELTAS = [1e-4, 3e-3, 0.05, 0.3, 1.0]


# name -> f'(∞) = lim f(u)/u (mp.inf where f grows faster than u), written out by hand from the formulas
MP_SLOPES_AT_INFINITY = {
    "kl": mp.mpf(1),
    "reverse_kl": mp.inf,
    "tv": mp.mpf("0.5"),
    "chi2": mp.inf,
    "neyman_chi2": mp.mpf(1),
    "hellinger": mp.mpf(1),
    "js": _HALF_LOG2,
    "alpha:0.5": mp.mpf(2),  # 1/(1 − α)
    "alpha:2": mp.inf,
    "alpha:-1": mp.mpf("0.5"),
    "alpha:3": mp.inf,
}


def reference_p_one(name: str, delta: float) -> float:
    """r*, the lower bound at p = 1: root of f(r) + (1 − r)·f'(∞) = δ on [0, 1] (1 if f'(∞) = ∞, 0 if none)."""
    f, f0 = MP_GENERATORS[name]
    slope = MP_SLOPES_AT_INFINITY[name]
    if slope == mp.inf:
        return 1.0
    d = mp.mpf(delta)

    def phi(r):
        return (f0 if r <= 0 else f(r)) + (1 - r) * slope - d

    if phi(mp.mpf(0)) <= 0:
        return 0.0
    lo, hi = mp.mpf(0), mp.mpf(1)  # phi(lo) > 0 >= phi(hi)
    for _ in range(60):
        mid = (lo + hi) / 2
        if phi(mid) > 0:
            lo = mid
        else:
            hi = mid
    return float((lo + hi) / 2)
