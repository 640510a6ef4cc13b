"""`Divergence`: an f-divergence generator as the Band operator sees it, with its checks and limits.

A divergence is a convex generator f on (0, ∞) with f(1) = 0; D_f(π‖π_old) = Σ_b π_old(b)·f(π(b)/π_old(b)).
The Band operator only ever evaluates f, so a user divergence is just a torch-elementwise callable. Two
limits are needed and derived numerically when not given: f(0) = lim_{u→0+} f(u) (simplex saturation) and
f'(∞) = lim_{u→∞} f(u)/u (the p → 1 limit of the lower bound, `solve_p_one_limit`). The built-ins and the
registry are in `bandpo.band.divergences`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["ClosedForm", "Divergence", "solve_p_one_limit"]

# (logp, delta) -> (lower, upper), float64 tensors of logp's shape
ClosedForm = Callable[[Tensor, float], tuple[Tensor, Tensor]]

_F1_TOL = 1e-10  # |f(1)| above this is an error
_CONVEXITY_RTOL = 1e-7  # allowed relative decrease of consecutive secant slopes (rounding)
_R_STAR_CACHE_SIZE = 256  # distinct δ kept per divergence by `lower_at_p_one`


def _convexity_grid() -> Tensor:
    # log-spaced over (1e-8, 1e8) plus a fine linear patch around u = 1, sorted, float64
    grid = torch.cat(
        [torch.logspace(-8, 8, 1601, dtype=torch.float64), torch.linspace(0.5, 2.0, 301, dtype=torch.float64)]
    )
    return torch.unique(grid)


@dataclass(frozen=True)
class Divergence:
    """A convex generator f with f(1) = 0, as used by `band_bounds`.

    Args:
        name: snake_case name used in configs, the CLI and logs.
        f: elementwise torch callable, f(u) for u ≥ 0 (a float64 tensor in, a tensor of the same shape out;
            an f that computes in float32 is accepted, and the bounds are then as precise as its values).
        f_at_zero: f(0) = lim_{u→0+} f(u), may be `math.inf`. Derived from f when omitted; when given it must
            agree with f(0) (1e−6 relative; 1e−3 against f(1e−300) where f(0) is NaN, e.g. 0·log 0).
        slope_at_infinity: f'(∞) = lim_{u→∞} f(u)/u, may be `math.inf`. Derived numerically when omitted.
        f_of_log: optional stable evaluation of f(e^t) from t = log u (built-ins use it to avoid
            cancellation near u = 1). When omitted, the solver evaluates f(exp(t)) after removing the linear
            term f'(1)·(u − 1), which changes nothing mathematically (Σ π_old·(u − 1) = 0).
        closed_form: optional exact `(logp, delta) -> (lower, upper)` in float64, used instead of the generic
            solver (built-ins: the TV/χ²/Neyman χ²/Hellinger formulas, KL's monotone Newton).
        float32_path: optional `(logp, delta) -> (lower, upper)` for float32 `logp`, float32 out, used for
            float32 input instead of solving in float64 and rounding (built-in: KL's table lookup). It must
            return the interval rounded to float32 and clamped into 0 ≤ lower ≤ 1 ≤ upper ≤ 1/p.
        r_star: optional `delta -> r*`, the lower bound at p = 1 (root of f(r) + (1 − r)·f'(∞) = δ).
        description: one line for `list_divergences`/docs.

    Raises:
        ValueError: f(1) ≠ 0, f is not convex (a secant slope decreases on a test grid beyond the rounding of
            f's output dtype), f returns NaN on (0, ∞), f cannot be called on a float64 tensor, or
            `f_at_zero` contradicts f.
    """

    name: str
    f: Callable[[Tensor], Tensor]
    f_at_zero: float | None = None
    slope_at_infinity: float | None = None
    f_of_log: Callable[[Tensor], Tensor] | None = field(default=None, repr=False, compare=False)
    closed_form: ClosedForm | None = field(default=None, repr=False, compare=False)
    float32_path: ClosedForm | None = field(default=None, repr=False, compare=False)
    r_star: Callable[[float], float] | None = field(default=None, repr=False, compare=False)
    description: str = ""
    _linear_coef: float = field(default=0.0, init=False, repr=False, compare=False)
    # δ -> r*, filled by `lower_at_p_one` (excluded from eq/hash, so the record stays hashable)
    _r_star_cache: dict[float, float] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Divergence name must be a non-empty string, got {self.name!r}")
        if not callable(self.f):
            raise ValueError(f"Divergence {self.name!r}: f must be callable, got {type(self.f).__name__}")
        grid = _convexity_grid()
        try:
            raw = self.f(grid)
            values = torch.as_tensor(raw, dtype=torch.float64)
            f_one = float(torch.as_tensor(self.f(torch.ones(1, dtype=torch.float64)), dtype=torch.float64)[0])
        except Exception as error:  # a user callable can fail in any way
            raise ValueError(
                f"Divergence {self.name!r}: f could not be evaluated on a float64 tensor ({error!r}); "
                "write f with elementwise torch ops, e.g. lambda u: (u - 1) ** 2"
            ) from error
        if values.shape != grid.shape:
            raise ValueError(
                f"Divergence {self.name!r}: f must be elementwise (input shape {tuple(grid.shape)}, "
                f"output shape {tuple(values.shape)})"
            )
        if not math.isfinite(f_one) or abs(f_one) > _F1_TOL:
            raise ValueError(
                f"Divergence {self.name!r}: f(1) must be 0, got {f_one!r}; subtract the constant f(1) from f"
            )
        if torch.isnan(values).any():
            bad = float(grid[torch.isnan(values)][0])
            raise ValueError(
                f"Divergence {self.name!r}: f returns NaN at u = {bad:.3g} (must be defined on (0, ∞))"
            )
        # rounding noise of f's own output dtype (an f computing in float32 is convex up to float32 rounding)
        out_dtype = raw.dtype if isinstance(raw, Tensor) and raw.is_floating_point() else torch.float64
        eps = max(torch.finfo(out_dtype).eps, torch.finfo(torch.float64).eps)
        finite = torch.isfinite(values)
        u, v = grid[finite], values[finite]
        du = u[1:] - u[:-1]
        slopes = (v[1:] - v[:-1]) / du
        rounding = 8 * eps * (v[1:].abs() + v[:-1].abs()) / du  # slope noise
        scale = slopes[1:].abs() + slopes[:-1].abs()
        drop = slopes[:-1] - slopes[1:]  # > 0 where a secant slope decreases
        bad = drop > _CONVEXITY_RTOL * scale + rounding[1:] + rounding[:-1]
        if bad.any():
            at = float(u[1:-1][bad][0])
            raise ValueError(
                f"Divergence {self.name!r}: f is not convex (its slope decreases near u = {at:.4g}); "
                "the Band operator needs a convex generator"
            )
        derived_zero, reliable = _limit_at_zero(self.f)
        if self.f_at_zero is None:
            object.__setattr__(self, "f_at_zero", derived_zero)
        elif not _limits_agree(float(self.f_at_zero), derived_zero, rtol=1e-6 if reliable else 1e-3):
            raise ValueError(
                f"Divergence {self.name!r}: f_at_zero={self.f_at_zero!r} contradicts f, whose value at u = 0 "
                f"is {derived_zero!r}; omit f_at_zero (it is derived from f) or correct it"
            )
        if self.slope_at_infinity is None:
            object.__setattr__(self, "slope_at_infinity", _slope_at_infinity(self.f))
        if self.f_of_log is None:
            # central difference at 1 (any subgradient works for a kink, e.g. TV)
            h = 1e-5
            ends = self.f(torch.tensor([1.0 - h, 1.0 + h], dtype=torch.float64)).to(torch.float64)
            coef = float((ends[1] - ends[0]) / (2 * h))
            object.__setattr__(self, "_linear_coef", coef if math.isfinite(coef) else 0.0)

    def f_log(self, t: Tensor) -> Tensor:
        """f(e^t) minus the linear term f'(1)·(e^t − 1) (same divergence, no cancellation), for t = log u."""
        if self.f_of_log is not None:
            return self.f_of_log(t)
        value = self.f(torch.exp(t))
        if self._linear_coef != 0.0:
            value = value - self._linear_coef * torch.expm1(t)
        return value

    def lower_at_p_one(self, delta: float) -> float:
        """r*: the lower bound at p = 1, the root of f(r) + (1 − r)·f'(∞) = δ on [0, 1] (0 if none).

        Cached per δ on this record: without `r_star` it is an ~80-step scalar bisection, and `band_bounds`
        asks for it on every call (every micro-batch in training).
        """
        delta = float(delta)
        cached = self._r_star_cache.get(delta)
        if cached is not None:
            return cached
        value = float(self.r_star(delta)) if self.r_star is not None else solve_p_one_limit(self, delta)
        if len(self._r_star_cache) >= _R_STAR_CACHE_SIZE:  # e.g. a δ schedule: keep the cache bounded
            self._r_star_cache.clear()
        self._r_star_cache[delta] = value
        return value


def _limit_at_zero(f: Callable[[Tensor], Tensor]) -> tuple[float, bool]:
    """(f(0+), reliable): f(0) where it evaluates, else f(1e−300) (0·log 0 is NaN), flagged less reliable."""
    value = float(torch.as_tensor(f(torch.zeros(1, dtype=torch.float64)), dtype=torch.float64)[0])
    reliable = not math.isnan(value)
    if not reliable:  # take the limit from a tiny positive u
        value = float(
            torch.as_tensor(f(torch.full((1,), 1e-300, dtype=torch.float64)), dtype=torch.float64)[0]
        )
    return (math.inf if math.isnan(value) or value > 1e300 else value), reliable


def _limits_agree(given: float, derived: float, rtol: float) -> bool:
    if math.isnan(given):
        return False
    if math.isinf(given) or math.isinf(derived):
        return given == derived
    return abs(given - derived) <= rtol * max(1.0, abs(derived))


def _slope_at_infinity(f: Callable[[Tensor], Tensor]) -> float:
    u = torch.tensor([1e100, 1e150], dtype=torch.float64)  # (u − 1)²/u would overflow at 1e300
    ratio = torch.as_tensor(f(u), dtype=torch.float64) / u
    a, b = float(ratio[0]), float(ratio[1])
    if not (math.isfinite(a) and math.isfinite(b)):
        return math.inf
    if abs(b - a) > 1e-9 * max(1.0, abs(b)):  # still growing like log u or faster: infinite slope
        return math.inf
    return b


def solve_p_one_limit(divergence: Divergence, delta: float) -> float:
    """r*: root of φ(r) = f(r) + (1 − r)·f'(∞) − δ on [0, 1] (φ decreases to φ(1) = −δ); 0 if φ(0) ≤ 0.

    Bisection to the end of float64 (r ∈ [0, 1], 80 halvings of scalar tensor evaluations). Not cached here:
    `Divergence.lower_at_p_one` caches it per (divergence, δ), so it runs once per pair. Limit p → 1 of the
    lower bound (docs/theory.md, "Limits p → 0 and p → 1").
    """
    # f_log is f minus c·(u − 1): its f(0) is f(0) + c and its slope at ∞ is f'(∞) − c (φ is unchanged)
    slope = float(divergence.slope_at_infinity) - divergence._linear_coef
    if math.isinf(slope):
        return 1.0
    f0 = float(divergence.f_at_zero) + divergence._linear_coef
    if f0 + slope <= delta:
        return 0.0

    def phi(r: float) -> float:
        t = torch.tensor([math.log(r)], dtype=torch.float64)
        return float(divergence.f_log(t)[0]) + (1.0 - r) * slope - delta

    lo, hi = 0.0, 1.0  # phi(lo) > 0 >= phi(hi)
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if phi(mid) > 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


# --- built-ins ---------------------------------------------------------------------------------------
