"""Method parameters, declared once: a default, a one-line help and the valid values, as dataclass field metadata.

A bound method (`bandpo.methods.DeclaredMethod`) is a frozen dataclass whose fields are its parameters,
each declared with `param(default, help, range)`. Everything that shows or checks a parameter reads the
`MethodParameter` built from that declaration: the method's validation, the registry's parameter lists,
the CLI flags and help, `TrainConfig` and the engine configs. No other module restates a default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["MethodParameter", "declared_parameters", "default_of", "param"]

_PARAM_KEY = "bandpo_parameter"


@dataclass(frozen=True, kw_only=True)
class MethodParameter:
    """One parameter of a bound method: its default, what it means and its valid values.

    Declared once, as the metadata of a method dataclass's field (`param`); the method's validation, the
    registry's parameter lists and every help text that shows a default are read from it.

    Attributes:
        name: the field name (also the config key and, with dashes, the CLI flag).
        default: the default value; its type (float, bool or str) is the parameter's type.
        help: one line: what the parameter does.
        low, high: closed bounds of a numeric parameter (None: unbounded); `low_open` / `high_open` exclude
            the end point.
        choices: the valid values of a str parameter with a fixed set.
    """

    name: str
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] | None = None

    @property
    def kind(self) -> type:
        """float, bool or str (an int default counts as float: numeric parameters accept ints)."""
        return float if type(self.default) is int else type(self.default)

    @property
    def valid(self) -> str:
        """The valid values in words, e.g. "a number in [0, 1]" or "one of ['band', 'fixed']"."""
        if self.choices is not None:
            return f"one of {list(self.choices)}"
        if self.kind is bool:
            return "True or False"
        if self.kind is float:
            low = -math.inf if self.low is None else self.low
            high = math.inf if self.high is None else self.high
            return f"a number in {'(' if self.low_open else '['}{low:g}, {high:g}{')' if self.high_open else ']'}"
        return f"a {self.kind.__name__}"

    def check(self, owner: str, value: Any) -> None:
        """Raise a ValueError naming `owner`, the parameter, the bad value and the valid values."""
        ok = True
        if self.kind is bool:
            ok = isinstance(value, bool)
        elif self.kind is float:
            ok = not isinstance(value, bool) and isinstance(value, int | float) and not math.isnan(value)
            if ok and self.low is not None:
                ok = value > self.low if self.low_open else value >= self.low
            if ok and self.high is not None:
                ok = value < self.high if self.high_open else value <= self.high
        else:
            ok = isinstance(value, self.kind)
        if ok and self.choices is not None:
            ok = value in self.choices
        if not ok:
            raise ValueError(
                f"{owner}: {self.name} must be {self.valid}, got {value!r} (default {self.default!r}; "
                f"{self.help})"
            )


def param(
    default: Any,
    help: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A method dataclass field: its default plus the `MethodParameter` metadata that everything reads.

    Example:
        eps: float = param(0.2, "both epsilons: [1 - eps, 1 + eps]", low=0.0, high=1.0)
    """
    spec = {
        "default": default,
        "help": help,
        "low": low,
        "high": high,
        "low_open": low_open,
        "high_open": high_open,
        "choices": choices,
    }
    return field(default=default, metadata={_PARAM_KEY: spec})


def default_of(cls: type, name: str) -> Any:
    """The declared default of field `name` of method dataclass `cls` (to reuse a default, not restate it)."""
    return cls.__dataclass_fields__[name].default


def declared_parameters(cls: type) -> tuple[MethodParameter, ...]:
    """The parameters of method dataclass `cls`: its `init` fields, in order, each declared with `param`.

    A field with `init=False` is a constant of the method, not a parameter.

    Raises:
        TypeError: an `init` field was not declared with `param`.
    """
    out = []
    for f in fields(cls):
        if f.init:
            if _PARAM_KEY not in f.metadata:
                raise TypeError(
                    f"{cls.__name__}.{f.name}: declare method parameters with bandpo.method_params.param"
                )
            out.append(MethodParameter(name=f.name, **f.metadata[_PARAM_KEY]))
    return tuple(out)
