"""Bound methods: every policy-optimisation method here differs only in how it makes per-token ratio bounds.

A bound method maps the old (sampling) log-probabilities of the sampled tokens, `old_logp` of any shape
(typically (B, T)), to a `RatioBounds(ratio_low, ratio_high)` of the same shape. The surrogate
(`bandpo.losses.policy_loss`) then clamps the ratio into [ratio_low, ratio_high] token by token. Bounds
depend only on `old_logp`, so compute them once per rollout batch and reuse them across PPO epochs and
minibatches (pass them as `policy_loss(..., bounds=...)`).

Built-in methods (snake_case names, the same in code, config, CLI and metric prefixes):

- `clip`: PPO/GRPO's fixed interval [1 - eps_low, 1 + eps_high], eps 0.2 / 0.2.
- `clip_higher`: DAPO's Clip-Higher, the same with eps_low 0.2, eps_high 0.28.
- `dcpo`: DCPO's Dynamic Adaptive Clipping (DAC) alone, with q = p_old:
  lower = 0.5 + 0.5·√max(1 − 4·eps_low/q, 0), upper = 0.5 + 0.5·√(1 + 4·eps_high/q),
  eps_low 0.16, eps_high 0.20, upper capped at `ratio_max` 10 (paper-notes §4).
- `band`: BandPO. The exact interval of ratios reachable inside the f-divergence ball of radius `delta` around
  the old policy (`bandpo.band.band_bounds`), paper defaults: KL, delta 0.05, `ratio_max` cap 10, no
  relaxation. Each side is chosen on its own with `lower_side` / `upper_side` in {"band", "fixed"}; a fixed
  side is 1 - eps_low (lower) or 1 + eps_high (upper). `relax=True` takes the union with
  [1 - eps_low, 1 + eps_high] (the official `does_relax_high_p_bound`, TRGPPO's union).
- `band_upper` ("Band-upper"): Band's upper side with the fixed lower side 1 - eps_low (0.8). Same as
  `get_method("band", lower_side="fixed")`. Our exploration found that the discovery of rare good actions
  comes from Band's upper side alone, while Band's lower side (≈ 0 for p_old < 0.01 under KL, δ = 0.05) lets
  negative advantages crush rare tokens (exploration-notes §0, §2).
- `band_lower`: the reverse ablation, Band's lower side with the fixed upper side 1 + eps_high.

Every method object has `.name` (its registry name), `.params` (a JSON-serialisable dict such that
`get_method(m.name, **m.params)` rebuilds it) and is called as `m(old_logp) -> RatioBounds`.

Notes:
    All bounds are computed under `torch.no_grad()` and returned in float32 at least (float64 for float64
    input; bf16 and fp16 input give float32 bounds) on `old_logp`'s device: a bound is a threshold the ratio
    is compared with, and rounding it to bf16 moves it (clip's 1.05 would become 1.046875). `old_logp` is clamped to <= 0 first (a log-probability above 0 is rounding
    noise or padding; the official code clamps to [-700, 0]); -inf (p_old = 0) is allowed. Final clamps, as in
    the official code: lower into [0, 1], upper into [1, ratio_max], so every interval contains 1.
"""

from __future__ import annotations

import abc
import inspect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor

__all__ = [
    "BandMethod",
    "BoundMethod",
    "DCPOMethod",
    "FixedClipMethod",
    "RatioBounds",
    "compute_dtype",
    "get_method",
    "list_methods",
    "method_parameters",
    "register_method",
    "resolve_method",
]


class RatioBounds(NamedTuple):
    """Per-token ratio bounds, same shape as the `old_logp` they were computed from.

    A named tuple, so `ratio_low, ratio_high = bounds` works and a plain `(low, high)` tuple is accepted
    wherever a `RatioBounds` is.
    """

    ratio_low: Tensor
    ratio_high: Tensor


SIDES: tuple[str, ...] = ("band", "fixed")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype bounds, ratios and losses are computed in: float64 stays float64, bf16/fp16/fp32 give float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class BoundMethod(abc.ABC):
    """A rule mapping `old_logp` to per-token ratio bounds.

    Subclasses implement `compute_bounds` on a detached float32/float64 tensor; `__call__` does the
    validation, the `no_grad`, the upcast (bounds come back in `compute_dtype(old_logp.dtype)`, never
    rounded to bf16/fp16) and the clamp of `old_logp` to <= 0.
    """

    name: str

    @property
    @abc.abstractmethod
    def params(self) -> dict[str, Any]:
        """JSON-serialisable parameters: `get_method(self.name, **self.params)` rebuilds this method."""

    @abc.abstractmethod
    def compute_bounds(self, old_logp: Tensor) -> tuple[Tensor, Tensor]:
        """(ratio_low, ratio_high) for a detached, float32/float64 `old_logp` <= 0 (-inf allowed)."""

    def __call__(self, old_logp: Tensor) -> RatioBounds:
        if not isinstance(old_logp, Tensor) or not old_logp.is_floating_point():
            raise TypeError(
                f"{self.name}: old_logp must be a floating-point tensor of log-probabilities of the sampled "
                f"tokens, got {type(old_logp).__name__}"
                + (f" of dtype {old_logp.dtype}" if isinstance(old_logp, Tensor) else "")
                + "; convert it with torch.as_tensor(old_logp, dtype=torch.float32)"
            )
        with torch.no_grad():
            x = old_logp.detach().to(compute_dtype(old_logp.dtype)).clamp(max=0.0)
            low, high = self.compute_bounds(x)
            return RatioBounds(low, high)


def _check_number(owner: str, name: str, value: Any, *, low: float, high: float = math.inf) -> None:
    """Raise a ValueError naming the field unless `low <= value <= high` (bools are rejected)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValueError(f"{owner}: {name} must be a number, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{owner}: {name} must lie in [{low}, {high}], got {value!r}")


def _dataclass_params(obj: Any, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj) if f.name != "name" and f.name not in exclude}


@dataclass(frozen=True, kw_only=True)
class FixedClipMethod(BoundMethod):
    """PPO/GRPO clipping: ratio_low = 1 - eps_low, ratio_high = 1 + eps_high for every token.

    `clip` (0.2 / 0.2) and `clip_higher` (DAPO's Clip-Higher, 0.2 / 0.28) are this class with different
    defaults.
    """

    name: str = "clip"
    eps_low: float = 0.2
    eps_high: float = 0.2

    def __post_init__(self) -> None:
        _check_number(self.name, "eps_low", self.eps_low, low=0.0, high=1.0)
        _check_number(self.name, "eps_high", self.eps_high, low=0.0)

    @property
    def params(self) -> dict[str, Any]:
        return _dataclass_params(self)

    def compute_bounds(self, old_logp: Tensor) -> tuple[Tensor, Tensor]:
        low = torch.full_like(old_logp, 1.0 - self.eps_low)
        high = torch.full_like(old_logp, 1.0 + self.eps_high)
        return low, high


@dataclass(frozen=True, kw_only=True)
class DCPOMethod(BoundMethod):
    """DCPO's Dynamic Adaptive Clipping (DAC) alone, not its other components (paper-notes §4).

    With q = p_old = exp(old_logp) clamped to >= 1e-12:
    lower = 0.5 + 0.5·√max(1 − 4·eps_low/q, 0) and upper = 0.5 + 0.5·√(1 + 4·eps_high/q); then lower is
    clamped into [0, 1] and upper into [1, ratio_max].

    Notes:
        lower = 0.5 for all q < 4·eps_low (0.64 by default); upper(1) = 1.171 and upper grows like
        √(eps_high/q) as q → 0 until the cap (10 for q ≲ 0.0022 at the defaults). Upper exceeds the
        simplex limit 1/q for head tokens (q ≳ 0.83), which is the BandPO paper's criticism of DAC.
    """

    name: str = "dcpo"
    eps_low: float = 0.16
    eps_high: float = 0.20
    ratio_max: float = 10.0

    def __post_init__(self) -> None:
        _check_number(self.name, "eps_low", self.eps_low, low=0.0)
        _check_number(self.name, "eps_high", self.eps_high, low=0.0)
        _check_number(self.name, "ratio_max", self.ratio_max, low=1.0)

    @property
    def params(self) -> dict[str, Any]:
        return _dataclass_params(self)

    def compute_bounds(self, old_logp: Tensor) -> tuple[Tensor, Tensor]:
        q = old_logp.exp().clamp(min=1e-12)
        low = 0.5 + 0.5 * (1.0 - 4.0 * self.eps_low / q).clamp(min=0.0).sqrt()
        high = 0.5 + 0.5 * (1.0 + 4.0 * self.eps_high / q).sqrt()
        return low.clamp(0.0, 1.0), high.clamp(1.0, self.ratio_max)


@dataclass(frozen=True, kw_only=True)
class BandMethod(BoundMethod):
    """BandPO's bounds: the exact ratio interval allowed by D_f(π‖π_old) <= delta, per side selectable.

    Args:
        divergence: registered divergence name (`bandpo.band.list_divergences()`); "kl" is the paper's.
        delta: radius of the divergence ball (paper: 0.05).
        ratio_max: cap on the upper bound (official `upper_bound_max` = 10; binds for p_old < 0.0071 at
            KL δ = 0.05). `math.inf` disables the cap.
        relax: union with [1 - eps_low, 1 + eps_high] (official `does_relax_high_p_bound`; off in the paper).
        eps_low, eps_high: the fixed interval used by a "fixed" side and by `relax`.
        lower_side, upper_side: "band" (the divergence bound) or "fixed" (1 - eps_low / 1 + eps_high).

    Notes:
        Order of operations: band interval → per-side choice → optional union → final clamps (lower into
        [0, 1], upper into [1, ratio_max]). At p_old = 0 (old_logp = -inf) the KL interval is [0, inf),
        so the result is [0, ratio_max]; at p_old → 1 it tends to [e^-delta, 1]. The divergence solver runs
        in float32 (float64 for float64 input): bf16 inputs are upcast first, avoiding the ≈5% error the
        official code has in bf16.
    """

    name: str = "band"
    divergence: str = "kl"
    delta: float = 0.05
    ratio_max: float = 10.0
    relax: bool = False
    eps_low: float = 0.2
    eps_high: float = 0.28
    lower_side: str = "band"
    upper_side: str = "band"

    # registry names whose sides are fixed by the name itself; `.params` leaves those sides out so that
    # `get_method(name, **params)` round-trips
    ALIAS_SIDES: ClassVar[dict[str, dict[str, str]]] = {
        "band_upper": {"lower_side": "fixed", "upper_side": "band"},
        "band_lower": {"lower_side": "band", "upper_side": "fixed"},
    }

    def __post_init__(self) -> None:
        if not isinstance(self.divergence, str):
            raise ValueError(
                f"{self.name}: divergence must be a registered divergence name (str), got "
                f"{self.divergence!r}; register a custom one with bandpo.band.register_divergence and pass "
                "its name"
            )
        from bandpo.band import get_divergence

        get_divergence(self.divergence)  # raises with the valid names
        if (
            isinstance(self.delta, bool)
            or not isinstance(self.delta, int | float)
            or not 0 < self.delta < math.inf
        ):
            raise ValueError(
                f"{self.name}: delta must be a finite number > 0 (paper: 0.05), got {self.delta!r}"
            )
        _check_number(self.name, "ratio_max", self.ratio_max, low=1.0)
        if not isinstance(self.relax, bool):
            raise ValueError(f"{self.name}: relax must be True or False, got {self.relax!r}")
        _check_number(self.name, "eps_low", self.eps_low, low=0.0, high=1.0)
        _check_number(self.name, "eps_high", self.eps_high, low=0.0)
        for side_name in ("lower_side", "upper_side"):
            side = getattr(self, side_name)
            if side not in SIDES:
                raise ValueError(f"{self.name}: {side_name} must be one of {list(SIDES)}, got {side!r}")
        fixed = self.ALIAS_SIDES.get(self.name, {})
        for side_name, side in fixed.items():
            if getattr(self, side_name) != side:
                raise ValueError(
                    f"{self.name}: {side_name} is {side!r} by definition of {self.name!r}; use "
                    "get_method('band', lower_side=..., upper_side=...) to choose both sides"
                )

    @property
    def params(self) -> dict[str, Any]:
        return _dataclass_params(self, exclude=tuple(self.ALIAS_SIDES.get(self.name, {})))

    def compute_bounds(self, old_logp: Tensor) -> tuple[Tensor, Tensor]:
        fixed_low = 1.0 - self.eps_low
        fixed_high = 1.0 + self.eps_high
        if "band" in (self.lower_side, self.upper_side):
            from bandpo.band import band_bounds

            # validate=False: no host sync; old_logp is already clamped to <= 0, and NaN (only ever seen on
            # padding) gives NaN bounds there, which policy_loss neutralises with the mask
            exact = band_bounds(old_logp, delta=self.delta, divergence=self.divergence, validate=False)
            band_low, band_high = exact.lower.to(old_logp.dtype), exact.upper.to(old_logp.dtype)
        low = band_low if self.lower_side == "band" else torch.full_like(old_logp, fixed_low)
        high = band_high if self.upper_side == "band" else torch.full_like(old_logp, fixed_high)
        if self.relax:
            low = low.clamp(max=fixed_low)
            high = high.clamp(min=fixed_high)
        return low.clamp(0.0, 1.0), high.clamp(1.0, self.ratio_max)


# --- registry ----------------------------------------------------------------------------------------

MethodFactory = Callable[..., BoundMethod]

_REGISTRY: dict[str, MethodFactory] = {}
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def register_method(name: str, factory: MethodFactory) -> None:
    """Register a bound method under a snake_case `name`.

    Args:
        name: snake_case name used in code, config, CLI and metric prefixes. Must be new.
        factory: called as `factory(**params)` with keyword parameters that all have defaults; returns a
            `BoundMethod` whose `.name` is `name`. Its signature defines the valid parameters.

    Raises:
        ValueError: the name is taken (no silent overwrite) or not snake_case, or the factory takes
            positional-only or default-less parameters.
    """
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"method name must be snake_case (e.g. 'my_band'), got {name!r}")
    if name in _REGISTRY:
        raise ValueError(
            f"method {name!r} is already registered; pick another name (registered: {list_methods()})"
        )
    if not callable(factory):
        raise ValueError(f"factory for {name!r} must be callable, got {factory!r}")
    for param in inspect.signature(factory).parameters.values():
        if param.kind in (param.POSITIONAL_ONLY, param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ValueError(
                f"factory for {name!r}: parameter {param.name!r} must be an ordinary keyword parameter"
            )
        if param.default is param.empty:
            raise ValueError(f"factory for {name!r}: parameter {param.name!r} needs a default value")
    _REGISTRY[name] = factory


def list_methods() -> tuple[str, ...]:
    """Registered method names, in registration order."""
    return tuple(_REGISTRY)


def method_parameters(name: str) -> tuple[str, ...]:
    """Names of the parameters the registered method `name` accepts (its factory's keywords)."""
    factory = _REGISTRY.get(name)
    if factory is None:
        raise ValueError(f"unknown method {name!r}; valid methods: {list(_REGISTRY)}")
    return tuple(inspect.signature(factory).parameters)


def get_method(name: str, **params: Any) -> BoundMethod:
    """Build the registered method `name` with `params` overriding its defaults.

    Raises:
        ValueError: unknown name (lists the valid names) or unknown parameter (lists the valid ones), or a
            parameter value the method rejects.
    """
    valid = list(method_parameters(name))
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(f"method {name!r} has no parameter(s) {unknown}; valid parameters: {valid}")
    method = _REGISTRY[name](**params)
    if not isinstance(method, BoundMethod):
        raise TypeError(f"factory of {name!r} returned {type(method).__name__}, not a BoundMethod")
    return method


def resolve_method(method: str | BoundMethod) -> BoundMethod:
    """A method object as is, or the registered method of that name with its defaults."""
    if isinstance(method, BoundMethod):
        return method
    if isinstance(method, str):
        return get_method(method)
    raise TypeError(f"method must be a registered name or a BoundMethod, got {type(method).__name__}")


def _clip(*, eps_low: float = 0.2, eps_high: float = 0.2) -> BoundMethod:
    return FixedClipMethod(name="clip", eps_low=eps_low, eps_high=eps_high)


def _clip_higher(*, eps_low: float = 0.2, eps_high: float = 0.28) -> BoundMethod:
    return FixedClipMethod(name="clip_higher", eps_low=eps_low, eps_high=eps_high)


def _dcpo(*, eps_low: float = 0.16, eps_high: float = 0.20, ratio_max: float = 10.0) -> BoundMethod:
    return DCPOMethod(name="dcpo", eps_low=eps_low, eps_high=eps_high, ratio_max=ratio_max)


def _band(
    *,
    divergence: str = "kl",
    delta: float = 0.05,
    ratio_max: float = 10.0,
    relax: bool = False,
    eps_low: float = 0.2,
    eps_high: float = 0.28,
    lower_side: str = "band",
    upper_side: str = "band",
) -> BoundMethod:
    return BandMethod(
        name="band",
        divergence=divergence,
        delta=delta,
        ratio_max=ratio_max,
        relax=relax,
        eps_low=eps_low,
        eps_high=eps_high,
        lower_side=lower_side,
        upper_side=upper_side,
    )


def _band_upper(
    *,
    divergence: str = "kl",
    delta: float = 0.05,
    ratio_max: float = 10.0,
    relax: bool = False,
    eps_low: float = 0.2,
    eps_high: float = 0.28,
) -> BoundMethod:
    return BandMethod(
        name="band_upper",
        divergence=divergence,
        delta=delta,
        ratio_max=ratio_max,
        relax=relax,
        eps_low=eps_low,
        eps_high=eps_high,
        **BandMethod.ALIAS_SIDES["band_upper"],
    )


def _band_lower(
    *,
    divergence: str = "kl",
    delta: float = 0.05,
    ratio_max: float = 10.0,
    relax: bool = False,
    eps_low: float = 0.2,
    eps_high: float = 0.28,
) -> BoundMethod:
    return BandMethod(
        name="band_lower",
        divergence=divergence,
        delta=delta,
        ratio_max=ratio_max,
        relax=relax,
        eps_low=eps_low,
        eps_high=eps_high,
        **BandMethod.ALIAS_SIDES["band_lower"],
    )


register_method("clip", _clip)
register_method("clip_higher", _clip_higher)
register_method("dcpo", _dcpo)
register_method("band", _band)
register_method("band_upper", _band_upper)
register_method("band_lower", _band_lower)
