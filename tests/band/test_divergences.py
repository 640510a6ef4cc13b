"""The divergence registry, user-defined generators, closed forms vs the numerical solver, the α-family."""

from __future__ import annotations

import math

import mpmath
import pytest
import torch

from bandpo.band import (
    Divergence,
    alpha_divergence,
    band_bounds,
    get_divergence,
    list_divergences,
    register_divergence,
)
from bandpo.band import generator as generator_module
from bandpo.band.generator import solve_p_one_limit
from bandpo.band.generic_solver import solve_bounds

BUILTINS = ["kl", "reverse_kl", "tv", "chi2", "neyman_chi2", "hellinger", "js"]


def _logp() -> torch.Tensor:
    small = torch.logspace(-12, math.log10(0.5), 60, dtype=torch.float64)
    return torch.cat([torch.log(small), torch.log1p(-small), torch.tensor([0.0, -math.inf])])


def test_builtins_are_listed() -> None:
    assert set(BUILTINS) <= set(list_divergences())


@pytest.mark.parametrize("name", [*BUILTINS, "alpha:0.5", "alpha:-2", "alpha:0", "alpha:1"])
def test_every_name_resolves_and_gives_bounds(name: str) -> None:
    divergence = get_divergence(name)
    assert isinstance(divergence, Divergence)
    bounds = band_bounds(torch.log(torch.tensor([0.3])), delta=0.05, divergence=name)
    assert 0 <= bounds.lower.item() < 1 < bounds.upper.item() <= 1 / 0.3


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown divergence 'kll'") as info:
        get_divergence("kll")
    for name in BUILTINS:
        assert name in str(info.value)
    assert "alpha:<α>" in str(info.value)
    with pytest.raises(ValueError, match="unknown divergence"):
        band_bounds(torch.zeros(1), delta=0.1, divergence="nope")


def test_bad_alpha_names() -> None:
    with pytest.raises(ValueError, match="bad α-divergence name"):
        get_divergence("alpha:x")
    with pytest.raises(ValueError, match="finite"):
        alpha_divergence(math.inf)
    with pytest.raises(ValueError, match="name or a Divergence"):
        get_divergence(3)  # type: ignore[arg-type]


def test_duplicate_registration_is_refused(registry: None) -> None:
    register_divergence("mine", f=lambda u: (u - 1) ** 2)
    with pytest.raises(ValueError, match="already registered"):
        register_divergence("mine", f=lambda u: (u - 1) ** 2)
    with pytest.raises(ValueError, match="already registered"):
        register_divergence("kl", f=lambda u: (u - 1) ** 2)
    assert list_divergences()[-1] == "mine"


def test_register_argument_errors(registry: None) -> None:
    with pytest.raises(ValueError, match="exactly one of"):
        register_divergence("x")
    with pytest.raises(ValueError, match="differs"):
        register_divergence("x", divergence=Divergence("y", lambda u: (u - 1) ** 2))
    with pytest.raises(ValueError, match="reserved"):
        register_divergence("alpha:9", f=lambda u: (u - 1) ** 2)
    registered = register_divergence("z", divergence=Divergence("z", lambda u: (u - 1) ** 2))
    assert get_divergence("z") is registered


# --- user generators ------------------------------------------------------------------------------------

USER_COPIES = {
    "kl": lambda u: -torch.log(u) + u - 1,
    "reverse_kl": lambda u: u * torch.log(u),  # not standardised: the linear term is removed internally
    "tv": lambda u: 0.5 * torch.abs(u - 1),
    "chi2": lambda u: (u - 1) ** 2,
    "neyman_chi2": lambda u: (u - 1) ** 2 / u,
    "hellinger": lambda u: (torch.sqrt(u) - 1) ** 2,
    "js": lambda u: 0.5 * (u * torch.log(2 * u / (1 + u)) + torch.log(2 / (1 + u))),
}


@pytest.mark.parametrize("name", BUILTINS)
def test_user_copy_of_a_builtin_gives_the_same_bounds(name: str) -> None:
    """A plain user f runs the generic numerical solver; the built-in runs its closed form / fast path."""
    user = Divergence(f"user_{name}", USER_COPIES[name])
    builtin = get_divergence(name)
    shift = 1.0 if name == "reverse_kl" else 0.0  # u·log u is the built-in minus (u − 1)
    assert user.f_at_zero + shift == pytest.approx(builtin.f_at_zero, rel=1e-12)
    assert user.slope_at_infinity == pytest.approx(builtin.slope_at_infinity, rel=1e-9)
    logp = _logp()
    for delta in (1e-4, 0.05, 1.0):
        ours = band_bounds(logp, delta=delta, divergence=user)
        ref = band_bounds(logp, delta=delta, divergence=name)
        assert torch.allclose(ours.upper, ref.upper, rtol=1e-10, atol=0)
        assert torch.allclose(ours.lower, ref.lower, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["tv", "chi2", "neyman_chi2", "hellinger"])
def test_closed_form_equals_numerical_solver_on_the_same_f(name: str) -> None:
    divergence = get_divergence(name)
    assert divergence.closed_form is not None
    logp = _logp()
    for delta in (1e-4, 3e-3, 0.05, 0.5, 1.0, 1.9):
        closed_lower, closed_upper = divergence.closed_form(logp, delta)
        num_lower, num_upper = solve_bounds(divergence, logp, delta)
        assert torch.allclose(num_upper, closed_upper, rtol=1e-10, atol=0)
        assert torch.allclose(num_lower, closed_lower, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", [*BUILTINS, "alpha:0.5", "alpha:-1"])
def test_r_star_matches_the_generic_limit_solver(name: str) -> None:
    divergence = get_divergence(name)
    for delta in (1e-4, 0.05, 1.0, 3.0):
        assert divergence.lower_at_p_one(delta) == pytest.approx(
            solve_p_one_limit(divergence, delta), abs=1e-12
        )


def test_registered_user_divergence_by_name(registry: None) -> None:
    register_divergence("quartic", f=lambda u: (u - 1) ** 4)
    b = band_bounds(torch.log(torch.tensor([0.5], dtype=torch.float64)), delta=0.01, divergence="quartic")
    # (r − 1)^4·p(1 + p^3/(1 − p)^3) = δ at p = 1/2: (r − 1)^4 = 0.01
    assert b.upper.item() == pytest.approx(1 + 0.01**0.25, rel=1e-12)
    assert b.lower.item() == pytest.approx(1 - 0.01**0.25, abs=1e-12)


def test_user_limits_can_be_given() -> None:
    user = Divergence("given", lambda u: (u - 1) ** 2, f_at_zero=1.0, slope_at_infinity=math.inf)
    assert user.lower_at_p_one(0.05) == 1.0


# --- validation of user generators ----------------------------------------------------------------------


def test_f_one_not_zero_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"f\(1\) must be 0"):
        Divergence("shifted", lambda u: (u - 1) ** 2 + 0.1)


@pytest.mark.parametrize(
    "f",
    [lambda u: -((u - 1) ** 2), lambda u: torch.sin(u - 1), lambda u: torch.log(u) ** 2],
    ids=["concave", "sine", "log_squared"],
)
def test_non_convex_f_is_an_error(f) -> None:
    with pytest.raises(ValueError, match="not convex"):
        Divergence("bad", f)


def test_nan_or_broken_f_is_an_error() -> None:
    with pytest.raises(ValueError, match="NaN"):
        Divergence("nan", lambda u: torch.where(u > 5, math.nan, (u - 1) ** 2))
    with pytest.raises(ValueError, match="could not be evaluated"):
        Divergence("broken", lambda u: float(u))  # not elementwise torch
    with pytest.raises(ValueError, match="elementwise"):
        Divergence("reducing", lambda u: ((u - 1) ** 2).sum())
    with pytest.raises(ValueError, match="callable"):
        Divergence("nope", 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty string"):
        Divergence("", lambda u: (u - 1) ** 2)


# --- the α-family ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alpha", "name", "scale"),
    [
        (0.0, "kl", 1.0),
        (1.0, "reverse_kl", 1.0),
        (2.0, "chi2", 0.5),
        (0.5, "hellinger", 2.0),
        (-1.0, "neyman_chi2", 0.5),
    ],
)
def test_alpha_family_members(alpha: float, name: str, scale: float) -> None:
    """f_α = scale·f_name, so Band-α(δ) = Band-name(δ/scale)."""
    logp = _logp()
    for delta in (1e-3, 0.05):
        ours = band_bounds(logp, delta=delta, divergence=alpha_divergence(alpha))
        ref = band_bounds(logp, delta=delta / scale, divergence=name)
        assert torch.allclose(ours.upper, ref.upper, rtol=1e-10, atol=0)
        assert torch.allclose(ours.lower, ref.lower, rtol=0, atol=1e-12)


def test_alpha_limits() -> None:
    assert alpha_divergence(0.5).f_at_zero == 2.0
    assert alpha_divergence(0.5).slope_at_infinity == 2.0
    assert alpha_divergence(-1.0).f_at_zero == math.inf
    assert alpha_divergence(3.0).slope_at_infinity == math.inf
    assert get_divergence("alpha:0.5").name == "alpha:0.5"


# --- per-(divergence, δ) caching and the shared numerics ----------------------------------------------------


def test_p_one_limit_is_solved_once_per_divergence_and_delta(monkeypatch: pytest.MonkeyPatch) -> None:
    """r* without a closed form is an ~80-step scalar bisection: it must not run on every `band_bounds` call."""
    calls: list[float] = []
    real = generator_module.solve_p_one_limit

    def counting(divergence: Divergence, delta: float) -> float:
        calls.append(delta)
        return real(divergence, delta)

    monkeypatch.setattr(generator_module, "solve_p_one_limit", counting)
    user = Divergence("user_js_cached", USER_COPIES["js"])
    logp = _logp()
    first = band_bounds(logp, delta=0.05, divergence=user)
    for _ in range(3):
        again = band_bounds(logp, delta=0.05, divergence=user)
        assert torch.equal(again.lower, first.lower) and torch.equal(again.upper, first.upper)
    assert calls == [0.05]
    band_bounds(logp, delta=0.1, divergence=user)
    band_bounds(logp, delta=0.05, divergence="alpha:0.3125")
    band_bounds(logp, delta=0.05, divergence="alpha:0.3125")  # the name resolves to the same cached record
    assert calls == [0.05, 0.1, 0.05]
    assert get_divergence("alpha:0.3125") is get_divergence("alpha:0.3125")
    assert hash(user) == hash(user)  # the cache field is excluded from eq/hash: the record stays hashable


def test_solvers_share_one_floor_and_one_log1mexp() -> None:
    from bandpo.band import generic_solver, kl
    from bandpo.band._numerics import LOG_FLOOR, log1mexp

    assert generic_solver.X_MAX == -LOG_FLOOR
    x = torch.tensor([-1e-300, -1e-20, -0.5, -math.log(2.0), -1.0, -50.0, -800.0], dtype=torch.float64)
    with mpmath.workdps(50):
        expected = [float(mpmath.log(-mpmath.expm1(mpmath.mpf(v)))) for v in x.tolist()]
    assert torch.allclose(log1mexp(x), torch.tensor(expected, dtype=torch.float64), rtol=1e-15, atol=0)
    # both paths read p just below e^LOG_FLOOR as 0 and p just above as finite
    logp = torch.tensor([LOG_FLOOR * (1 + 1e-12), LOG_FLOOR * (1 - 1e-12)], dtype=torch.float64)
    for lower, upper in (
        kl.kl_bounds_newton(logp, 0.05),
        generic_solver.solve_bounds(get_divergence("kl"), logp, 0.05),
    ):
        assert lower[0] == 0 and upper[0] == math.inf and math.isfinite(upper[1].item())


# --- the path is chosen by the record's fields, never by name or identity --------------------------------


def test_fast_paths_are_fields_of_the_record() -> None:
    """A record's `float32_path` serves float32 input and its `closed_form` float64 input, whatever its name;
    without them the generic solver runs (was: KL chosen by comparing `f_of_log` with the built-in lambda)."""

    def float32_path(logp: torch.Tensor, delta: float) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.full_like(logp, 0.25), torch.full_like(logp, 3.0)

    def closed_form(logp: torch.Tensor, delta: float) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.full_like(logp, 0.5), torch.full_like(logp, 2.0)

    kl = get_divergence("kl")
    marked = Divergence("kl", kl.f, kl.f_at_zero, kl.slope_at_infinity, float32_path=float32_path)
    logp = torch.log(torch.tensor([0.3, 0.4]))
    assert band_bounds(logp, delta=0.05, divergence=marked).upper.tolist() == [3.0, 3.0]
    plain = band_bounds(logp.double(), delta=0.05, divergence=marked)  # no closed form: generic solver
    exact = band_bounds(logp.double(), delta=0.05)
    assert torch.allclose(plain.upper, exact.upper, rtol=1e-10, atol=0)
    formed = Divergence("other", kl.f, closed_form=closed_form)
    for dtype in (torch.float64, torch.float32, torch.bfloat16):
        assert band_bounds(logp.to(dtype), delta=0.05, divergence=formed).upper.tolist() == [2.0, 2.0]


def test_band_modules_import_one_way_and_at_the_top() -> None:
    """No import circle inside bandpo.band and no import of bandpo inside a function (a lazy import that
    dodges a circle): each module's bandpo imports, read from its source, form an acyclic graph."""
    import ast
    from pathlib import Path

    import bandpo.band

    folder = Path(bandpo.band.__file__).parent
    graph: dict[str, set[str]] = {}
    for path in folder.glob("*.py"):
        module = f"bandpo.band.{path.stem}" if path.stem != "__init__" else "bandpo.band"
        tree = ast.parse(path.read_text())
        top_level = set(map(id, tree.body))
        graph[module] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bandpo"):
                assert id(node) in top_level, f"{module} imports {node.module} inside a function"
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
                graph[module] |= {name for name in names if name.startswith("bandpo.band.")} - {module}
    for module in graph:
        graph[module] = {name for name in graph[module] if name in graph}
    visiting: list[str] = []

    def visit(module: str) -> None:
        assert module not in visiting, f"import circle: {' -> '.join([*visiting, module])}"
        visiting.append(module)
        for target in graph[module]:
            visit(target)
        visiting.pop()

    for module in graph:
        if module != "bandpo.band":
            visit(module)
