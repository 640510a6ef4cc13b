"""Bound methods: every policy-optimisation method here differs only in how it makes per-token ratio bounds.

A bound method maps the old (sampling) log-probabilities of the sampled tokens, `old_logp` of any shape
(typically (B, T)), to a `RatioBounds(ratio_low, ratio_high)` of the same shape. The surrogate
(`bandpo.losses.policy_loss`) then clamps the ratio into [ratio_low, ratio_high] token by token. Bounds
depend only on `old_logp`, so compute them once per rollout batch and reuse them across PPO epochs and
minibatches (pass them as `policy_loss(..., bounds=...)`).

Built-in methods (snake_case names, the same in code, config, CLI and metric prefixes):

- `clip` (`FixedClipMethod`): PPO/GRPO's fixed interval [1 - eps_low, 1 + eps_high].
- `clip_higher` (`ClipHigherMethod`): DAPO's Clip-Higher, the same with a wider upper side.
- `dcpo` (`DCPOMethod`): DCPO's Dynamic Adaptive Clipping (DAC) alone, with q = p_old:
  lower = 0.5 + 0.5·√max(1 − 4·eps_low/q, 0), upper = 0.5 + 0.5·√(1 + 4·eps_high/q), upper capped at
  `ratio_max`.
- `band` (`BandMethod`): BandPO. The exact interval of ratios reachable inside the f-divergence ball of
  radius `delta` around the old policy (`bandpo.band.band_bounds`); the defaults are the paper's (KL,
  δ = 0.05, `ratio_max` cap 10, no relaxation). Each side is chosen on its own with `lower_side` /
  `upper_side` in {"band", "fixed"}; a fixed side is Clip-Higher's 1 - eps_low (lower) or 1 + eps_high
  (upper). `relax=True` takes the union with [1 - eps_low, 1 + eps_high] (the official
  `does_relax_high_p_bound`, TRGPPO's union).
- `band_upper` (`BandUpperMethod`, "Band-upper"): Band's upper side with the fixed lower side 1 - eps_low.
  Same as `get_method("band", lower_side="fixed")`. Band's lower side (≈ 0 for p_old < 0.01 under KL,
  δ = 0.05) lets negative advantages crush rare tokens; this variant keeps only the upper side, which is
  where rare good actions gain room (docs/theory.md).
- `band_lower` (`BandLowerMethod`): the reverse ablation, Band's lower side with the fixed upper side.

One source for every default: each built-in is a frozen dataclass whose fields are its parameters, declared
with `bandpo.method_params.param(default, help, range)`. The registry's validation (`__post_init__`),
`method_parameters`, `method_parameter_specs`, `method_defaults_table` and `parameter_help` (what the CLI,
`TrainConfig` and the engine configs show) are all read from those fields. `bandpo train --help` lists every default.

Every method object has `.name` (its registry name), `.params` (a JSON-serialisable dict such that
`get_method(m.name, **m.params)` rebuilds it) and is called as `m(old_logp) -> RatioBounds`.

Notes:
    All bounds are computed under `torch.no_grad()` and returned in float32 at least (float64 for float64
    input; bf16 and fp16 input give float32 bounds) on `old_logp`'s device: a bound is a threshold the ratio
    is compared with, and rounding it to bf16 moves it (clip's 1.05 would become 1.046875). `old_logp` is
    clamped to <= 0 first (a log-probability above 0 is rounding noise or padding; the official code clamps
    to [-700, 0]); -inf (p_old = 0) is allowed. Final clamps, as in the official code: lower into [0, 1],
    upper into [1, ratio_max], so every interval contains 1. Bounds are constants of the old policy: they
    never carry an autograd graph.
"""

from __future__ import annotations

import abc
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor

from bandpo.band import DELTA_MAX, DELTA_MIN, band_bounds, get_divergence
from bandpo.method_params import MethodParameter, declared_parameters, default_of, param

__all__ = [
    "SIDES",
    "BandLowerMethod",
    "BandMethod",
    "BandUpperMethod",
    "BoundMethod",
    "ClipHigherMethod",
    "DCPOMethod",
    "DeclaredMethod",
    "FixedClipMethod",
    "RatioBounds",
    "compute_dtype",
    "get_method",
    "list_methods",
    "method_defaults_table",
    "method_parameter_specs",
    "method_parameters",
    "parameter_help",
    "register_method",
    "resolve_method",
    "settable_parameters",
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


@dataclass(frozen=True, kw_only=True)
class DeclaredMethod(BoundMethod):
    """A bound method whose parameters are its dataclass fields, declared with `param`.

    Subclasses set the class attribute `name` (their registry name) and implement `compute_bounds`;
    validation, `.params` and `parameters()` come from the fields. A field with `init=False` is a constant
    of the method (e.g. `band_upper`'s fixed lower side), not a parameter.
    """

    name: ClassVar[str]

    def __post_init__(self) -> None:
        for spec in self.parameters():
            spec.check(self.name, getattr(self, spec.name))

    @classmethod
    def parameters(cls) -> tuple[MethodParameter, ...]:
        """The declared parameters, in field order."""
        return declared_parameters(cls)

    @property
    def params(self) -> dict[str, Any]:
        return {spec.name: getattr(self, spec.name) for spec in self.parameters()}


# --- the built-in methods ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class FixedClipMethod(DeclaredMethod):
    """PPO/GRPO clipping (`clip`): ratio_low = 1 - eps_low, ratio_high = 1 + eps_high for every token."""

    name: ClassVar[str] = "clip"
    eps_low: float = param(0.2, "lower epsilon: ratio_low = 1 - eps_low", low=0.0, high=1.0)
    eps_high: float = param(0.2, "upper epsilon: ratio_high = 1 + eps_high", low=0.0)

    def compute_bounds(self, old_logp: Tensor) -> tuple[Tensor, Tensor]:
        low = torch.full_like(old_logp, 1.0 - self.eps_low)
        high = torch.full_like(old_logp, 1.0 + self.eps_high)
        return low, high


@dataclass(frozen=True, kw_only=True)
class ClipHigherMethod(FixedClipMethod):
    """DAPO's Clip-Higher (`clip_higher`): fixed clipping with a wider upper side (the DAPO paper's values)."""

    name: ClassVar[str] = "clip_higher"
    eps_high: float = param(0.28, "upper epsilon: ratio_high = 1 + eps_high (DAPO's Clip-Higher)", low=0.0)


@dataclass(frozen=True, kw_only=True)
class DCPOMethod(DeclaredMethod):
    """DCPO's Dynamic Adaptive Clipping (DAC) alone (`dcpo`), not DCPO's other components.

    With q = p_old = exp(old_logp) clamped to >= 1e-12:
    lower = 0.5 + 0.5·√max(1 − 4·eps_low/q, 0) and upper = 0.5 + 0.5·√(1 + 4·eps_high/q); then lower is
    clamped into [0, 1] and upper into [1, ratio_max].

    Notes:
        lower = 0.5 for all q < 4·eps_low (0.64 by default); upper(1) = 1.171 and upper grows like
        √(eps_high/q) as q → 0 until the cap (10 for q ≲ 0.0022 at the defaults). Upper exceeds the
        simplex limit 1/q for head tokens (q ≳ 0.83), which is the BandPO paper's criticism of DAC.
    """

    name: ClassVar[str] = "dcpo"
    eps_low: float = param(0.16, "DAC's lower epsilon (DCPO paper's value)", low=0.0)
    eps_high: float = param(0.20, "DAC's upper epsilon (DCPO paper's value)", low=0.0)
    ratio_max: float = param(10.0, "cap on the upper bound (inf: no cap)", low=1.0)

    def compute_bounds(self, old_logp: Tensor) -> tuple[Tensor, Tensor]:
        q = old_logp.exp().clamp(min=1e-12)
        low = 0.5 + 0.5 * (1.0 - 4.0 * self.eps_low / q).clamp(min=0.0).sqrt()
        high = 0.5 + 0.5 * (1.0 + 4.0 * self.eps_high / q).sqrt()
        return low.clamp(0.0, 1.0), high.clamp(1.0, self.ratio_max)


@dataclass(frozen=True, kw_only=True)
class BandMethod(DeclaredMethod):
    """BandPO's bounds (`band`): the exact ratio interval allowed by D_f(π‖π_old) <= delta, per side selectable.

    Parameters (fields; see `method_parameter_specs("band")`): divergence (a `bandpo.band.list_divergences()`
    name; "kl" is the paper's), delta (radius of the divergence ball), ratio_max (official
    `upper_bound_max`; binds for p_old < 0.0071 at KL δ = 0.05; `math.inf` disables the cap), relax (union
    with [1 - eps_low, 1 + eps_high], the official `does_relax_high_p_bound`), eps_low / eps_high (the fixed
    interval of a "fixed" side and of `relax`: Clip-Higher's), lower_side / upper_side ("band" or "fixed").

    Notes:
        Order of operations: band interval → per-side choice → optional union → final clamps (lower into
        [0, 1], upper into [1, ratio_max]). At p_old = 0 (old_logp = -inf) the KL interval is [0, inf),
        so the result is [0, ratio_max]; at p_old → 1 it tends to [e^-delta, 1]. The divergence solver runs
        in float32 (float64 for float64 input): bf16 inputs are upcast first, avoiding the ≈5% error the
        official code has in bf16.
    """

    name: ClassVar[str] = "band"
    divergence: str = param("kl", "Band's f-divergence: a bandpo.band.list_divergences() name or alpha:<a>")
    delta: float = param(
        0.05,
        "Band's trust-region radius δ (the verified range of bandpo.band_bounds)",
        low=DELTA_MIN,
        high=DELTA_MAX,
    )
    ratio_max: float = param(10.0, "cap on the upper bound (official upper_bound_max; inf: no cap)", low=1.0)
    relax: bool = param(False, "union with the fixed interval [1 - eps_low, 1 + eps_high] (official relax)")
    eps_low: float = param(
        default_of(ClipHigherMethod, "eps_low"),
        "fixed lower side 1 - eps_low (Clip-Higher's), used by lower_side=fixed and relax",
        low=0.0,
        high=1.0,
    )
    eps_high: float = param(
        default_of(ClipHigherMethod, "eps_high"),
        "fixed upper side 1 + eps_high (Clip-Higher's), used by upper_side=fixed and relax",
        low=0.0,
    )
    lower_side: str = param("band", "lower bound: Band's (band) or 1 - eps_low (fixed)", choices=SIDES)
    upper_side: str = param("band", "upper bound: Band's (band) or 1 + eps_high (fixed)", choices=SIDES)

    def __post_init__(self) -> None:
        if not isinstance(self.divergence, str):
            raise ValueError(
                f"{self.name}: divergence must be a registered divergence name (str), got "
                f"{self.divergence!r}; register a custom one with bandpo.band.register_divergence and pass "
                "its name"
            )
        get_divergence(self.divergence)  # raises with the valid names
        super().__post_init__()

    def compute_bounds(self, old_logp: Tensor) -> tuple[Tensor, Tensor]:
        fixed_low = 1.0 - self.eps_low
        fixed_high = 1.0 + self.eps_high
        if "band" in (self.lower_side, self.upper_side):
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


@dataclass(frozen=True, kw_only=True)
class BandUpperMethod(BandMethod):
    """Band-upper (`band_upper`): Band's upper side, the fixed lower side 1 - eps_low (sides are not parameters)."""

    name: ClassVar[str] = "band_upper"
    lower_side: str = field(default="fixed", init=False)
    upper_side: str = field(default="band", init=False)


@dataclass(frozen=True, kw_only=True)
class BandLowerMethod(BandMethod):
    """Band-lower (`band_lower`): Band's lower side, the fixed upper side 1 + eps_high (sides are not parameters)."""

    name: ClassVar[str] = "band_lower"
    lower_side: str = field(default="band", init=False)
    upper_side: str = field(default="fixed", init=False)


# --- registry ----------------------------------------------------------------------------------------

MethodFactory = Callable[..., BoundMethod]

_REGISTRY: dict[str, MethodFactory] = {}
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def register_method(name: str, factory: MethodFactory) -> None:
    """Register a bound method under a snake_case `name`.

    Args:
        name: snake_case name used in code, config, CLI and metric prefixes. Must be new.
        factory: a `DeclaredMethod` subclass whose `name` is `name` (its fields are the parameters), or any
            callable taking keyword parameters that all have defaults and returning a `BoundMethod` whose
            `.name` is `name` (its signature defines the parameters).

    Raises:
        ValueError: the name is taken (no silent overwrite) or not snake_case, the factory takes
            positional-only or default-less parameters, or a `DeclaredMethod` class has another name.
    """
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"method name must be snake_case (e.g. 'my_band'), got {name!r}")
    if name in _REGISTRY:
        raise ValueError(
            f"method {name!r} is already registered; pick another name (registered: {list_methods()})"
        )
    if not callable(factory):
        raise ValueError(f"factory for {name!r} must be callable, got {factory!r}")
    if isinstance(factory, type) and issubclass(factory, DeclaredMethod):
        if getattr(factory, "name", None) != name:
            raise ValueError(
                f"{factory.__name__}.name is {getattr(factory, 'name', None)!r}, not {name!r}; set the class "
                "attribute name to the registry name"
            )
        factory.parameters()  # every parameter declared with param()
    for parameter in inspect.signature(factory).parameters.values():
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise ValueError(
                f"factory for {name!r}: parameter {parameter.name!r} must be an ordinary keyword parameter"
            )
        if parameter.default is parameter.empty:
            raise ValueError(f"factory for {name!r}: parameter {parameter.name!r} needs a default value")
    _REGISTRY[name] = factory


def list_methods() -> tuple[str, ...]:
    """Registered method names, in registration order."""
    return tuple(_REGISTRY)


def _factory(name: str) -> MethodFactory:
    factory = _REGISTRY.get(name)
    if factory is None:
        raise ValueError(f"unknown method {name!r}; valid methods: {list(_REGISTRY)}")
    return factory


def method_parameter_specs(name: str) -> tuple[MethodParameter, ...]:
    """The parameters of the registered method `name`: default, help and valid values of each.

    For a plain factory (not a `DeclaredMethod` class) they are read from its signature, with no help text
    and no range.
    """
    factory = _factory(name)
    if isinstance(factory, type) and issubclass(factory, DeclaredMethod):
        return factory.parameters()
    return tuple(
        MethodParameter(name=p.name, default=p.default, help="")
        for p in inspect.signature(factory).parameters.values()
    )


def method_parameters(name: str) -> tuple[str, ...]:
    """Names of the parameters the registered method `name` accepts."""
    return tuple(spec.name for spec in method_parameter_specs(name))


def settable_parameters() -> dict[str, MethodParameter]:
    """{parameter: its declaration} over every registered method (the first method's, for a shared name).

    The union, read when called, so a method registered later (`register_method`) has its own parameters
    settable too: the one list the CLI, `TrainConfig` and the verl plugin accept.
    """
    out: dict[str, MethodParameter] = {}
    for name in _REGISTRY:
        for spec in method_parameter_specs(name):
            out.setdefault(spec.name, spec)
    return out


def method_defaults_table() -> dict[str, dict[str, Any]]:
    """{method name: {parameter: default}} for every registered method, in registration order."""
    return {name: {spec.name: spec.default for spec in method_parameter_specs(name)} for name in _REGISTRY}


def parameter_help(parameter: str) -> str:
    """Help text for a parameter shared by several methods: what it does and its default in each method.

    E.g. "lower epsilon: ratio_low = 1 - eps_low; default: 0.2 for clip, clip_higher, band, ...; 0.16 for
    dcpo". The help text is that of the first registered method taking it.

    Raises:
        ValueError: no registered method takes `parameter`.
    """
    helps: list[str] = []
    by_default: dict[str, list[str]] = {}
    for name in _REGISTRY:
        for spec in method_parameter_specs(name):
            if spec.name == parameter:
                helps.append(spec.help)
                by_default.setdefault(_format_default(spec.default), []).append(name)
    if not by_default:
        raise ValueError(f"no registered method takes a parameter {parameter!r}; methods: {list(_REGISTRY)}")
    help_text = next((text for text in helps if text), parameter)
    defaults = "; ".join(f"{value} for {', '.join(names)}" for value, names in by_default.items())
    return f"{help_text}; default: {defaults}"


def _format_default(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def get_method(name: str, **params: Any) -> BoundMethod:
    """Build the registered method `name` with `params` overriding its defaults.

    Raises:
        ValueError: unknown name (lists the valid names) or unknown parameter (lists the valid ones), or a
            parameter value the method rejects.
        TypeError: the factory returned something other than a `BoundMethod` named `name`.
    """
    valid = list(method_parameters(name))
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(f"method {name!r} has no parameter(s) {unknown}; valid parameters: {valid}")
    method = _REGISTRY[name](**params)
    if not isinstance(method, BoundMethod):
        raise TypeError(f"factory of {name!r} returned {type(method).__name__}, not a BoundMethod")
    if getattr(method, "name", None) != name:
        raise TypeError(
            f"factory of {name!r} returned a method named {getattr(method, 'name', None)!r}; its .name must be "
            f"{name!r} so that get_method(m.name, **m.params) rebuilds it"
        )
    return method


def resolve_method(method: str | BoundMethod) -> BoundMethod:
    """A method object as is, or the registered method of that name with its defaults."""
    if isinstance(method, BoundMethod):
        return method
    if isinstance(method, str):
        return get_method(method)
    raise TypeError(f"method must be a registered name or a BoundMethod, got {type(method).__name__}")


for _method in (FixedClipMethod, ClipHigherMethod, DCPOMethod, BandMethod, BandUpperMethod, BandLowerMethod):
    register_method(_method.name, _method)
del _method
