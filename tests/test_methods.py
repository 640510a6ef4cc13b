"""Bound methods: registry behaviour, each method's formula, Band's per-side options, dtypes and shapes."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from bandpo import methods
from bandpo.method_params import MethodParameter, param
from bandpo.methods import (
    BandMethod,
    BoundMethod,
    DeclaredMethod,
    FixedClipMethod,
    RatioBounds,
    get_method,
    list_methods,
)

BUILTINS = ("clip", "clip_higher", "dcpo", "band", "band_upper", "band_lower")
P_GRID = torch.tensor(
    [1e-9, 1e-4, 1e-3, 0.005, 0.01, 0.05, 0.08, 0.1, 0.2, 0.5, 0.7, 0.9, 0.99, 1 - 1e-7, 1.0]
)


def kl_band_reference(p: float, delta: float) -> tuple[float, float]:
    """Exact KL band interval by float64 bisection of g(r) = -p·log r - (1-p)·log((1-rp)/(1-p)) = delta."""

    def g(r: float) -> float:
        rest = (1 - r * p) / (1 - p)
        return math.inf if r <= 0 or rest <= 0 else -p * math.log(r) - (1 - p) * math.log(rest)

    lo, hi = 1.0, 1.0 / p  # upper root on [1, 1/p]
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if g(mid) > delta else (mid, hi)
    upper = lo
    lo, hi = 0.0, 1.0  # lower root on [0, 1]
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if g(mid) > delta else (lo, mid)
    return hi, upper


def logp_of(*p: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.tensor(p, dtype=torch.float64).log().to(dtype)


# --- registry ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILTINS)
def test_builtins_are_registered_under_their_own_name(name: str) -> None:
    # what matters is that each name resolves to a method carrying that name, not the listing order
    assert name in list_methods()
    method = get_method(name)
    assert method.name == name and isinstance(method, BoundMethod)


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"valid methods.*clip_higher"):
        get_method("ppo_clip")


def test_unknown_parameter_lists_valid_parameters() -> None:
    with pytest.raises(ValueError, match=r"no parameter\(s\) \['eps'\].*eps_low"):
        get_method("clip", eps=0.1)
    # the alias fixes its lower side, so the side is not one of its parameters
    with pytest.raises(ValueError, match="lower_side"):
        get_method("band_upper", lower_side="band")


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("clip", {"eps_low": 1.5}, "eps_low"),
        ("clip", {"eps_high": -0.1}, "eps_high"),
        ("clip_higher", {"eps_high": float("nan")}, "eps_high"),
        ("dcpo", {"ratio_max": 0.5}, "ratio_max"),
        ("band", {"delta": 0.0}, "delta"),
        ("band", {"delta": -1.0}, "delta"),
        ("band", {"delta": math.inf}, "delta"),
        ("band", {"ratio_max": 0.9}, "ratio_max"),
        ("band", {"relax": "yes"}, "relax"),
        ("band", {"lower_side": "clip"}, "lower_side"),
        ("band", {"upper_side": "Band"}, "upper_side"),
        ("band", {"divergence": 3}, "divergence"),
    ],
)
def test_bad_parameter_values_raise_naming_the_field(name: str, params: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        get_method(name, **params)


def test_unknown_divergence_raises() -> None:
    with pytest.raises((ValueError, KeyError), match="no_such_divergence"):
        get_method("band", divergence="no_such_divergence")


def test_register_refuses_duplicates_and_bad_factories(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(methods, "_REGISTRY", dict(methods._REGISTRY))
    with pytest.raises(ValueError, match="already registered"):
        methods.register_method("clip", lambda *, eps_low=0.1: FixedClipMethod(eps_low=eps_low))
    with pytest.raises(ValueError, match="snake_case"):
        methods.register_method("My-Clip", lambda: FixedClipMethod())
    with pytest.raises(ValueError, match="needs a default"):
        methods.register_method("my_clip", lambda *, eps_low: FixedClipMethod(eps_low=eps_low))
    with pytest.raises(ValueError, match="ordinary keyword"):
        methods.register_method("my_clip", lambda **kw: FixedClipMethod())
    with pytest.raises(ValueError, match="not 'my_clip'"):
        methods.register_method("my_clip", FixedClipMethod)  # a declared class keeps its own name


@dataclass(frozen=True, kw_only=True)
class TightClip(DeclaredMethod):
    """A user method declared the way the built-ins are."""

    name: ClassVar[str] = "tight"
    eps: float = param(0.05, "both epsilons", low=0.0, high=1.0)

    def compute_bounds(self, old_logp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.full_like(old_logp, 1 - self.eps), torch.full_like(old_logp, 1 + self.eps)


def test_register_a_declared_method(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(methods, "_REGISTRY", dict(methods._REGISTRY))
    methods.register_method("tight", TightClip)
    assert "tight" in list_methods()
    bounds = get_method("tight", eps=0.1)(logp_of(0.5))
    assert torch.allclose(bounds.ratio_low, torch.tensor([0.9], dtype=torch.float64))
    assert torch.allclose(bounds.ratio_high, torch.tensor([1.1], dtype=torch.float64))
    # its declaration is the one source of its validation, parameter list, defaults and help
    assert methods.method_parameters("tight") == ("eps",)
    assert methods.method_defaults_table()["tight"] == {"eps": 0.05}
    assert methods.parameter_help("eps") == "both epsilons; default: 0.05 for tight"
    with pytest.raises(ValueError, match=r"tight: eps must be a number in \[0, 1\], got 2"):
        get_method("tight", eps=2)


def test_a_parameter_not_declared_with_param_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    @dataclass(frozen=True, kw_only=True)
    class Undeclared(TightClip):
        name: ClassVar[str] = "undeclared"
        scale: float = 1.0  # a plain field: no help, no range

    monkeypatch.setattr(methods, "_REGISTRY", dict(methods._REGISTRY))
    with pytest.raises(
        TypeError, match=r"Undeclared.scale: declare method parameters with bandpo.method_params"
    ):
        methods.register_method("undeclared", Undeclared)
    assert "undeclared" not in list_methods()


def test_register_a_plain_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(methods, "_REGISTRY", dict(methods._REGISTRY))

    def tight(*, eps: float = 0.05) -> BoundMethod:
        return TightClip(eps=eps)

    methods.register_method("tight", tight)
    assert get_method("tight", eps=0.1) == TightClip(eps=0.1)
    (spec,) = methods.method_parameter_specs("tight")
    assert (spec.name, spec.default, spec.help) == ("eps", 0.05, "")
    # a factory whose method carries another name would break get_method(m.name, **m.params)
    methods.register_method("loose", lambda *, eps=0.05: TightClip(eps=eps))
    with pytest.raises(TypeError, match="named 'tight'"):
        get_method("loose")


def _bad_values(spec: MethodParameter) -> list:
    """Values outside the declared range of `spec`."""
    if spec.choices is not None:
        return ["nope", 3]
    if spec.kind is bool:
        return ["yes", 1]
    if spec.kind is str:
        return [3]
    bad = [float("nan"), "0.1", True]
    if spec.low is not None:
        bad.append(spec.low if spec.low_open else spec.low - 1)
    if spec.high is not None and math.isfinite(spec.high):
        bad.append(spec.high if spec.high_open else spec.high + 1)
    if spec.high is not None and spec.high_open:
        bad.append(spec.high)
    return bad


@pytest.mark.parametrize("name", list_methods())
def test_declared_parameters_are_the_one_source(name: str) -> None:
    specs = methods.method_parameter_specs(name)
    defaults = {spec.name: spec.default for spec in specs}
    assert methods.method_parameters(name) == tuple(defaults)
    assert methods.method_defaults_table()[name] == defaults
    assert get_method(name).params == defaults  # the method built with no arguments has the declared defaults
    for spec in specs:
        assert spec.help, f"{name}.{spec.name} has no help text"
        assert name in methods.parameter_help(spec.name)
        for bad in _bad_values(spec):
            with pytest.raises(ValueError, match=f"{name}: {spec.name} must be"):
                get_method(name, **{spec.name: bad})


def test_band_fixed_sides_default_to_clip_higher() -> None:
    table = methods.method_defaults_table()
    for name in ("band", "band_upper", "band_lower"):
        assert {k: table[name][k] for k in ("eps_low", "eps_high")} == table["clip_higher"]
    # each default is listed once with the methods that have it (in whatever order they were registered)
    text, defaults = methods.parameter_help("eps_high").split("; default: ")
    helps = {spec.help for name in list_methods() for spec in methods.method_parameter_specs(name)}
    assert text in helps  # one method's declared help, not a restatement
    listed = {
        value: set(names.split(", "))
        for value, names in (part.split(" for ") for part in defaults.split("; "))
    }
    assert listed == {"0.2": {"clip", "dcpo"}, "0.28": {"clip_higher", "band", "band_upper", "band_lower"}}
    with pytest.raises(ValueError, match="no registered method takes"):
        methods.parameter_help("eps")


def test_factory_returning_wrong_type_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(methods, "_REGISTRY", dict(methods._REGISTRY))
    methods.register_method("broken", lambda: (0.8, 1.2))
    with pytest.raises(TypeError, match="not a BoundMethod"):
        get_method("broken")


@pytest.mark.parametrize("name", list_methods())
def test_name_and_params_round_trip_through_json(name: str) -> None:
    method = get_method(name)
    assert method.name == name
    params = json.loads(json.dumps(method.params))
    rebuilt = get_method(method.name, **params)
    assert rebuilt == method
    x = logp_of(0.001, 0.3, 0.95)
    assert all(torch.equal(a, b) for a, b in zip(rebuilt(x), method(x), strict=True))


def test_resolve_method() -> None:
    method = get_method("band", delta=0.1)
    assert methods.resolve_method(method) is method
    assert methods.resolve_method("clip") == get_method("clip")
    with pytest.raises(TypeError):
        methods.resolve_method(0.2)  # type: ignore[arg-type]


# --- formulas ------------------------------------------------------------------------------------------


def test_clip_and_clip_higher_values() -> None:
    x = logp_of(0.01, 0.5, 0.99)
    low, high = get_method("clip")(x)
    assert torch.allclose(low, torch.full_like(x, 0.8)) and torch.allclose(high, torch.full_like(x, 1.2))
    low, high = get_method("clip_higher")(x)
    assert torch.allclose(low, torch.full_like(x, 0.8)) and torch.allclose(high, torch.full_like(x, 1.28))


def test_clip_higher_with_equal_eps_equals_clip() -> None:
    x = logp_of(*P_GRID.tolist())
    a, b = get_method("clip_higher", eps_high=0.2)(x), get_method("clip")(x)
    assert torch.equal(a.ratio_low, b.ratio_low) and torch.equal(a.ratio_high, b.ratio_high)


# DAC at eps_low 0.16, eps_high 0.20, r_max 10: (p, lower, upper), hand-computed to 2-3 digits
DCPO_TABLE = [
    (0.001, 0.5, 10.0),
    (0.01, 0.5, 5.0),
    (0.05, 0.5, 2.56),
    (0.08, 0.5, 2.16),
    (0.1, 0.5, 2.0),
    (0.2, 0.5, 1.62),
    (0.5, 0.5, 1.31),
    # L = 0.5 only for q < 4·eps_low = 0.64; here the formula gives 0.5 + 0.5·√(1 - 0.64/0.7) = 0.646
    (0.7, 0.646, 1.23),
    (0.9, 0.77, 1.19),
    (0.99, 0.80, 1.17),
]


@pytest.mark.parametrize(("p", "lower", "upper"), DCPO_TABLE)
def test_dcpo_matches_hand_table(p: float, lower: float, upper: float) -> None:
    low, high = get_method("dcpo")(logp_of(p))
    assert low.item() == pytest.approx(lower, abs=0.006)
    assert high.item() == pytest.approx(upper, abs=0.006)
    # and the formula itself, written out by hand
    ref_low = 0.5 + 0.5 * math.sqrt(max(1 - 4 * 0.16 / p, 0.0))
    ref_high = min(0.5 + 0.5 * math.sqrt(1 + 4 * 0.20 / p), 10.0)
    assert low.item() == pytest.approx(ref_low, rel=1e-12)
    assert high.item() == pytest.approx(ref_high, rel=1e-12)


def test_dcpo_exact_points_and_limits() -> None:
    low, high = get_method("dcpo")(logp_of(0.01, 0.1, 1.0, 0.0))
    assert high[:2].tolist() == pytest.approx([5.0, 2.0], rel=1e-12)  # √81, √9
    assert high[2].item() == pytest.approx(0.5 + 0.5 * math.sqrt(1.8))  # U(1) = 1.171
    assert (low[3].item(), high[3].item()) == (0.5, 10.0)  # p = 0 (logp -inf): q clamped to 1e-12, capped
    low, high = get_method("dcpo", ratio_max=math.inf)(logp_of(0.001))
    assert high.item() == pytest.approx(0.5 + 0.5 * math.sqrt(801))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("delta", [0.05, 0.2])
@pytest.mark.parametrize("p", [1e-3, 0.01, 0.05, 0.08, 0.2, 0.5, 0.9, 0.99])
def test_band_kl_matches_float64_bisection(p: float, delta: float, dtype: torch.dtype) -> None:
    lower, upper = kl_band_reference(p, delta)
    low, high = get_method("band", delta=delta, ratio_max=math.inf)(logp_of(p, dtype=dtype))
    assert low.item() == pytest.approx(lower, rel=1e-5, abs=1e-6)
    assert high.item() == pytest.approx(upper, rel=1e-5)


def test_band_kl_paper_values_and_cap() -> None:
    low, high = get_method("band")(logp_of(0.001, 0.08, 0.9))
    assert high.tolist() == pytest.approx([10.0, 2.41, 1.076], abs=5e-3)  # 53.55 capped at ratio_max 10
    assert low.tolist() == pytest.approx([0.0, 0.262, 0.867], abs=5e-3)
    uncapped = get_method("band", ratio_max=math.inf)(logp_of(0.001)).ratio_high.item()
    assert uncapped == pytest.approx(53.55, abs=0.01)


def test_band_at_p_zero_and_one() -> None:
    low, high = get_method("band")(torch.tensor([-math.inf, 0.0, 0.3]))  # p = 0, p = 1, old_logp > 0
    assert low[0].item() == 0.0 and high[0].item() == 10.0
    assert low[1].item() == pytest.approx(math.exp(-0.05), abs=1e-4) and high[1].item() == 1.0
    # a positive old_logp is rounding noise: treated as p = 1
    assert low[2].item() == pytest.approx(low[1].item()) and high[2].item() == 1.0


def test_band_other_divergence() -> None:
    low, high = get_method("band", divergence="tv")(logp_of(0.5, 0.08))
    assert low.tolist() == pytest.approx([0.9, 0.375], abs=1e-6)
    assert high.tolist() == pytest.approx([1.1, 1.625], abs=1e-6)


def test_band_sides_one_at_a_time() -> None:
    x = logp_of(*P_GRID.tolist())
    full = get_method("band")(x)
    upper_only = get_method("band_upper")(x)
    lower_only = get_method("band_lower")(x)
    assert torch.equal(upper_only.ratio_high, full.ratio_high)
    assert torch.allclose(upper_only.ratio_low, torch.full_like(x, 0.8))
    assert torch.equal(lower_only.ratio_low, full.ratio_low)
    assert torch.allclose(lower_only.ratio_high, torch.full_like(x, 1.28))
    # the aliases are exactly `band` with one side fixed
    explicit = get_method("band", lower_side="fixed")(x)
    assert torch.equal(explicit.ratio_low, upper_only.ratio_low)
    assert torch.equal(explicit.ratio_high, upper_only.ratio_high)
    # both sides fixed is Clip-Higher
    both_fixed = get_method("band", lower_side="fixed", upper_side="fixed")(x)
    clip_higher = get_method("clip_higher")(x)
    assert torch.equal(both_fixed.ratio_low, clip_higher.ratio_low)
    assert torch.equal(both_fixed.ratio_high, clip_higher.ratio_high)
    # the fixed side follows eps: the exploration's bandL used an upper of 1.2
    assert torch.allclose(get_method("band_lower", eps_high=0.2)(x).ratio_high, torch.full_like(x, 1.2))
    assert isinstance(get_method("band_upper"), BandMethod)


def test_band_relax_is_union_with_clip_higher() -> None:
    x = logp_of(0.08, 0.9)
    plain, relaxed = get_method("band")(x), get_method("band", relax=True)(x)
    assert relaxed.ratio_low.tolist() == pytest.approx([plain.ratio_low[0].item(), 0.8])
    assert relaxed.ratio_high.tolist() == pytest.approx([plain.ratio_high[0].item(), 1.28])


@pytest.mark.parametrize("name", list_methods())
def test_every_interval_contains_one_and_respects_caps(name: str) -> None:
    low, high = get_method(name)(logp_of(*P_GRID.tolist()))
    assert torch.all((low >= 0) & (low <= 1)) and torch.all((high >= 1) & (high <= 10))


# --- dtypes, shapes, gradients ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list_methods())
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
def test_bounds_are_float32_at_least_on_the_input_device(name: str, dtype: torch.dtype) -> None:
    x = logp_of(1e-4, 0.08, 0.5, 0.9, dtype=dtype)
    bounds = get_method(name)(x)
    assert isinstance(bounds, RatioBounds)
    expected = torch.float64 if dtype == torch.float64 else torch.float32
    for t in bounds:
        assert t.dtype == expected and t.device == x.device and t.shape == x.shape
        assert torch.isfinite(t).all()
    if dtype in (torch.bfloat16, torch.float16):
        # low precision inputs are computed in float32 and never rounded back to bf16/fp16
        reference = get_method(name)(x.float())
        for t, ref in zip(bounds, reference, strict=True):
            assert torch.equal(t, ref)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_clip_bounds_are_not_rounded_to_low_precision(dtype: torch.dtype) -> None:
    # bf16 would turn 0.95 / 1.05 into 0.94921875 / 1.046875
    low, high = get_method("clip", eps_low=0.05, eps_high=0.05)(torch.zeros(3, dtype=dtype))
    assert torch.equal(low, torch.full((3,), 0.95)) and torch.equal(high, torch.full((3,), 1.05))


@pytest.mark.parametrize("name", list_methods())
@pytest.mark.parametrize("shape", [(), (0,), (0, 7), (2, 3, 4)])
def test_any_shape(name: str, shape: tuple[int, ...]) -> None:
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0)).clamp(min=1e-6).log()
    low, high = get_method(name)(x)
    assert low.shape == shape and high.shape == shape


@pytest.mark.parametrize("name", list_methods())
def test_bounds_carry_no_gradient(name: str) -> None:
    x = logp_of(0.08, 0.5).requires_grad_()
    low, high = get_method(name)(x)
    assert not low.requires_grad and not high.requires_grad


def test_non_float_input_raises() -> None:
    with pytest.raises(TypeError, match="floating-point"):
        get_method("clip")(torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="as_tensor"):
        get_method("clip")([0.1])  # type: ignore[arg-type]
