"""The built-in f-divergences of the Band operator, the α-family and the registry of names.

A divergence is a `bandpo.band.generator.Divergence`: a convex generator f on (0, ∞) with f(1) = 0, where
D_f(π‖π_old) = Σ_b π_old(b)·f(π(b)/π_old(b)).

Built-ins (u = π_new/π_old):

| name          | f(u)                                   | divergence                          |
|---------------|----------------------------------------|-------------------------------------|
| `kl`          | −log u + u − 1                         | KL(π_old‖π_new), the paper's default |
| `reverse_kl`  | u·log u − u + 1                        | KL(π_new‖π_old)                     |
| `tv`          | ½·|u − 1|                              | total variation                     |
| `chi2`        | (u − 1)²                               | Pearson χ²(π_new‖π_old)             |
| `neyman_chi2` | (u − 1)²/u                             | Neyman χ²                           |
| `hellinger`   | (√u − 1)²                              | squared Hellinger (max 2)           |
| `js`          | ½·[u·log(2u/(1+u)) + log(2/(1+u))]     | Jensen–Shannon (natural log)        |
| `alpha:<a>`   | (u^a − a·u − (1 − a)) / (a·(a − 1))    | Amari α-divergence                  |

α convention (Amari / Cichocki–Amari): α = 0 is `kl`, α = 1 is `reverse_kl`, α = 2 is ½·`chi2`,
α = ½ is 2·`hellinger`, α = −1 is ½·`neyman_chi2`. Any real α is accepted through `alpha_divergence(α)` or
the name `"alpha:<α>"` (e.g. `"alpha:0.5"`), which `get_divergence` builds on demand without registering.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch import Tensor

from bandpo.band import closed_forms
from bandpo.band.generator import Divergence
from bandpo.band.kl import kl_bounds_newton, kl_bounds_table

__all__ = ["alpha_divergence", "get_divergence", "list_divergences", "register_divergence"]


def _kl_f(u: Tensor) -> Tensor:
    return -torch.log(u) + u - 1


def _reverse_kl_f(u: Tensor) -> Tensor:
    return torch.xlogy(u, u) - u + 1


def _tv_f(u: Tensor) -> Tensor:
    return 0.5 * (u - 1).abs()


def _chi2_f(u: Tensor) -> Tensor:
    return (u - 1) ** 2


def _neyman_f(u: Tensor) -> Tensor:
    return (u - 1) ** 2 / u


def _hellinger_f(u: Tensor) -> Tensor:
    return (torch.sqrt(u) - 1) ** 2


def _js_f(u: Tensor) -> Tensor:
    return 0.5 * (torch.xlogy(u, 2 * u / (1 + u)) + torch.log(2 / (1 + u)))


def _js_f_log(t: Tensor) -> Tensor:
    # u = e^t; log(2u/(1+u)) = log 2 − softplus(−t), log(2/(1+u)) = log 2 − softplus(t)
    sp_neg = torch.nn.functional.softplus(-t)
    sp_pos = torch.nn.functional.softplus(t)
    return 0.5 * (torch.exp(t) * (math.log(2.0) - sp_neg) + (math.log(2.0) - sp_pos))


def _kl_r_star(delta: float) -> float:
    return math.exp(-delta)


def _make_builtins() -> dict[str, Divergence]:
    return {
        d.name: d
        for d in (
            Divergence(
                "kl",
                _kl_f,
                math.inf,
                1.0,
                f_of_log=lambda t: torch.expm1(t) - t,
                closed_form=kl_bounds_newton,
                float32_path=kl_bounds_table,
                r_star=_kl_r_star,
                description="KL(π_old‖π_new), f(u) = −log u + u − 1 (paper default; Newton, float32 table)",
            ),
            Divergence(
                "reverse_kl",
                _reverse_kl_f,
                1.0,
                math.inf,
                f_of_log=lambda t: t * torch.exp(t) - torch.expm1(t),
                r_star=lambda delta: 1.0,
                description="KL(π_new‖π_old), f(u) = u·log u − u + 1",
            ),
            Divergence(
                "tv",
                _tv_f,
                0.5,
                0.5,
                f_of_log=lambda t: 0.5 * torch.expm1(t).abs(),
                closed_form=closed_forms.tv_bounds,
                r_star=lambda delta: max(1.0 - delta, 0.0),
                description="total variation, f(u) = ½|u − 1| (closed form)",
            ),
            Divergence(
                "chi2",
                _chi2_f,
                1.0,
                math.inf,
                f_of_log=lambda t: torch.expm1(t) ** 2,
                closed_form=closed_forms.chi2_bounds,
                r_star=lambda delta: 1.0,
                description="Pearson χ², f(u) = (u − 1)² (closed form)",
            ),
            Divergence(
                "neyman_chi2",
                _neyman_f,
                math.inf,
                1.0,
                f_of_log=lambda t: -torch.expm1(t) * torch.expm1(-t),
                closed_form=closed_forms.neyman_chi2_bounds,
                r_star=lambda delta: 1.0 / (1.0 + delta),
                description="Neyman χ², f(u) = (u − 1)²/u (closed form)",
            ),
            Divergence(
                "hellinger",
                _hellinger_f,
                1.0,
                1.0,
                f_of_log=lambda t: torch.expm1(0.5 * t) ** 2,
                closed_form=closed_forms.hellinger_bounds,
                r_star=lambda delta: (1.0 - delta / 2.0) ** 2 if delta < 2.0 else 0.0,
                description="squared Hellinger, f(u) = (√u − 1)² (closed form)",
            ),
            Divergence(
                "js",
                _js_f,
                0.5 * math.log(2.0),
                0.5 * math.log(2.0),
                f_of_log=_js_f_log,
                description="Jensen–Shannon, f(u) = ½[u·log(2u/(1+u)) + log(2/(1+u))]",
            ),
        )
    }


def alpha_divergence(alpha: float) -> Divergence:
    """The Amari α-divergence f_α(u) = (u^α − α·u − (1 − α)) / (α·(α − 1)), named `alpha:<α>`.

    α → 0 gives `kl` (−log u + u − 1) and α → 1 gives `reverse_kl`; those two limits reuse the built-in
    generators. f_α(0) = 1/α for α > 0 (∞ otherwise); f_α'(∞) = 1/(1 − α) for α < 1 (∞ otherwise).
    """
    alpha = float(alpha)
    if not math.isfinite(alpha):
        raise ValueError(f"alpha must be a finite number, got {alpha!r}")
    return _alpha_divergence(alpha)


@functools.lru_cache(maxsize=64)
def _alpha_divergence(alpha: float) -> Divergence:
    # cached: `get_divergence("alpha:<α>")` runs on every `band_bounds` call, and building a Divergence runs
    # the convexity check; one record per α also keeps its r* cache alive between calls
    name = f"alpha:{alpha:g}"
    if alpha == 0.0:
        base = _BUILTINS["kl"]
    elif alpha == 1.0:
        base = _BUILTINS["reverse_kl"]
    else:
        a = alpha
        scale = 1.0 / (a * (a - 1.0))
        f_zero = 1.0 / a if a > 0 else math.inf
        # numerator u^a − 1 − a(u − 1), written so that it does not cancel: for α near 0 as
        # expm1(α·log u) − α(u − 1), for α near 1 as u·expm1((α − 1)·log u) + (1 − α)(u − 1) (each term is
        # O(α), resp. O(1 − α), where the plain form loses everything: α = 1e−12 gave noise of 2e−4)
        if a < 0.5:

            def f(u: Tensor) -> Tensor:
                return (torch.expm1(a * torch.log(u)) - a * (u - 1.0)) * scale

            def f_of_log(t: Tensor) -> Tensor:
                return (torch.expm1(a * t) - a * torch.expm1(t)) * scale

        else:

            def f(u: Tensor) -> Tensor:
                value = (u * torch.expm1((a - 1.0) * torch.log(u)) + (1.0 - a) * (u - 1.0)) * scale
                return torch.where(u == 0, f_zero, value)  # 0·expm1(+inf) is NaN for α < 1

            def f_of_log(t: Tensor) -> Tensor:
                return (torch.exp(t) * torch.expm1((a - 1.0) * t) + (1.0 - a) * torch.expm1(t)) * scale

        return Divergence(
            name,
            f,
            f_zero,
            1.0 / (1.0 - a) if a < 1 else math.inf,
            f_of_log=f_of_log,
            r_star=(lambda delta: 1.0) if a >= 1 else None,
            description=f"Amari α-divergence, α = {alpha:g}",
        )
    return Divergence(
        name,
        base.f,
        base.f_at_zero,
        base.slope_at_infinity,
        f_of_log=base.f_of_log,
        closed_form=base.closed_form,
        float32_path=base.float32_path,
        r_star=base.r_star,
        description=f"Amari α-divergence, α = {alpha:g} (= {base.name})",
    )


_BUILTINS: dict[str, Divergence] = _make_builtins()
_REGISTRY: dict[str, Divergence] = dict(_BUILTINS)


def register_divergence(
    name: str | Divergence,
    f: Callable[[Tensor], Tensor] | None = None,
    *,
    divergence: Divergence | None = None,
    f_at_zero: float | None = None,
    slope_at_infinity: float | None = None,
    description: str = "",
) -> Divergence:
    """Register a user divergence under `name` (refuses a name already taken) and return it.

    Either pass `f` (a convex elementwise torch callable with f(1) = 0) or a ready `divergence`, by keyword or
    as the only argument (`register_divergence(div)` registers `div` under `div.name`).

    Example:
        >>> register_divergence("my_kl", f=lambda u: -torch.log(u) + u - 1)  # doctest: +SKIP
    """
    if isinstance(name, Divergence):
        if divergence is not None or f is not None:
            raise ValueError("register_divergence(divergence) takes no f= or divergence= besides it")
        name, divergence = name.name, name
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_divergence needs a non-empty name (str) or a Divergence, got {name!r}")
    if name in _REGISTRY:
        raise ValueError(f"divergence {name!r} is already registered; choose another name")
    if name.startswith("alpha:"):
        raise ValueError(f"the 'alpha:' prefix is reserved for the α-family, got {name!r}")
    if (f is None) == (divergence is None):
        raise ValueError("register_divergence needs exactly one of f=... or divergence=...")
    if divergence is None:
        divergence = Divergence(
            name, f, f_at_zero=f_at_zero, slope_at_infinity=slope_at_infinity, description=description
        )
    elif divergence.name != name:
        raise ValueError(f"divergence.name {divergence.name!r} differs from the name {name!r}")
    _REGISTRY[name] = divergence
    return divergence


def get_divergence(name: str | Divergence) -> Divergence:
    """Look up a registered divergence by name (or build `alpha:<α>`); a `Divergence` is returned as is."""
    if isinstance(name, Divergence):
        return name
    if not isinstance(name, str):
        raise ValueError(f"divergence must be a name or a Divergence, got {type(name).__name__}")
    found = _REGISTRY.get(name)
    if found is not None:
        return found
    if name.startswith("alpha:"):
        try:
            alpha = float(name.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"bad α-divergence name {name!r}; write e.g. 'alpha:0.5'") from None
        return alpha_divergence(alpha)
    valid = ", ".join([*list_divergences(), "alpha:<α>"])
    raise ValueError(f"unknown divergence {name!r}; valid names: {valid}")


def list_divergences() -> list[str]:
    """Names of the registered divergences (built-ins first, then user ones in registration order)."""
    return list(_REGISTRY)
