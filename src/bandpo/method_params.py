"""Method parameters, declared once: a default, a one-line help and the valid values, as dataclass field metadata.

A bound method (`bandpo.methods.DeclaredMethod`) is a frozen dataclass whose fields are its parameters,
each declared with `param(default, help, range)`: a `bandpo.declarations.Declaration` (the one declaration
type, shared with ``bandpo train``'s settings and the warm-up) whose numbers are floats. Everything that shows
or checks a parameter reads it: the method's validation, the registry's parameter lists, the CLI flags and
help, `TrainConfig` and the engine configs. No other module restates a default.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from bandpo.declarations import DECLARATION_KEY, Declaration, declarations, declare, default_of

__all__ = ["MethodParameter", "declared_parameters", "default_of", "param"]


@dataclass(frozen=True, kw_only=True)
class MethodParameter(Declaration):
    """One parameter of a bound method: a `Declaration` whose kind is float, bool or str (an int default
    counts as float: numeric parameters accept ints).

    ``check(method_name, value)`` raises a ValueError naming the method, the parameter, the bad value, the
    valid values, the default and the help.
    """

    def __post_init__(self) -> None:
        if self.kind is None:
            object.__setattr__(self, "kind", float if type(self.default) is int else type(self.default))


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
    """A method dataclass field: its default plus the `MethodParameter` that everything reads.

    Example:
        eps: float = param(0.2, "both epsilons: [1 - eps, 1 + eps]", low=0.0, high=1.0)
    """
    return declare(
        default,
        help,
        declaration=MethodParameter,
        low=low,
        high=high,
        low_open=low_open,
        high_open=high_open,
        choices=choices,
    )


def declared_parameters(cls: type) -> tuple[MethodParameter, ...]:
    """The parameters of method dataclass `cls`: its `init` fields, in order, each declared with `param`.

    A field with `init=False` is a constant of the method, not a parameter.

    Raises:
        TypeError: an `init` field was not declared with `param`.
    """
    declared = declarations(cls)
    out = []
    for f in fields(cls):
        if f.init:
            if not isinstance(f.metadata.get(DECLARATION_KEY), MethodParameter):
                raise TypeError(
                    f"{cls.__name__}.{f.name}: declare method parameters with bandpo.method_params.param"
                )
            out.append(declared[f.name])
    return tuple(out)
