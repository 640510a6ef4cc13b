"""One declaration type for every value a user sets: its default, one line of help and its valid values.

A bound method's parameters (`bandpo.method_params.param`), a ``bandpo train`` setting
(`bandpo.training.setting.setting`) and the warm-up's values (`bandpo.training.warmup.WarmupConfig`) are
dataclass fields whose metadata is a `Declaration`. Validation, CLI flags, help texts and configs read it, so a
default or a range is written once; a reader that needs a default elsewhere (a function's keyword default, a
CLI flag) takes it from here rather than restating it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

__all__ = ["Declaration", "declarations", "declare", "default_of"]

DECLARATION_KEY = "bandpo_declaration"
"""The dataclass field metadata key that holds a field's `Declaration`."""


@dataclass(frozen=True, kw_only=True)
class Declaration:
    """One settable value: its default, what it means and its valid values.

    Attributes:
        name: the field name (filled from the field by `declarations`).
        default: the default value.
        help: one line: what the value does.
        kind: int, float, str, bool, or tuple (a tuple of `choices`); None: the default's type. A float
            accepts an int.
        optional: None is valid too.
        low, high: bounds of a number (None: unbounded); closed unless `low_open` / `high_open`.
        choices: the valid values (of a str, or the items of a tuple), or a function returning them (read when
            checked, for a registry that grows).
    """

    name: str = ""
    default: Any = None
    help: str
    kind: type | None = None
    optional: bool = False
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] | None = None

    def __post_init__(self) -> None:
        if self.kind is None:
            object.__setattr__(self, "kind", type(self.default))

    def valid_choices(self) -> tuple[str, ...] | None:
        return self.choices() if callable(self.choices) else self.choices

    @property
    def valid(self) -> str:
        """The valid values in words, e.g. "a number in [0, 1]" or "one of ['band', 'fixed']"."""
        choices = self.valid_choices()
        if choices is not None:
            text = f"{'any' if self.kind is tuple else 'one'} of {list(choices)}"
        elif self.kind is bool:
            text = "True or False"
        elif self.kind is float:
            low = -math.inf if self.low is None else self.low
            high = math.inf if self.high is None else self.high
            text = f"a number in {'(' if self.low_open else '['}{low:g}, {high:g}{')' if self.high_open else ']'}"
        elif self.kind is int:
            low = -math.inf if self.low is None else self.low
            if self.high is not None and math.isfinite(self.high):
                text = f"an integer in [{low:g}, {self.high:g}]"
            else:
                text = "an integer" if self.low is None else f"an integer >= {low:g}"
        else:
            text = f"a {getattr(self.kind, '__name__', self.kind)}"
        return f"{text} or None" if self.optional else text

    def accepts(self, value: Any) -> bool:
        """True when `value` has the declared kind and lies in the range and choices (NaN never does)."""
        if value is None and self.optional:
            return True
        choices = self.valid_choices()
        if self.kind is tuple:
            return isinstance(value, tuple) and all(item in (choices or ()) for item in value)
        if self.kind is bool:
            ok = isinstance(value, bool)
        elif self.kind is float:
            ok = not isinstance(value, bool) and isinstance(value, int | float) and not math.isnan(value)
        elif self.kind is int:
            ok = not isinstance(value, bool) and isinstance(value, int)
        else:
            ok = isinstance(value, self.kind)
        if ok and self.kind in (int, float):
            if self.low is not None:
                ok = value > self.low if self.low_open else value >= self.low
            if ok and self.high is not None:
                ok = value < self.high if self.high_open else value <= self.high
        if ok and choices is not None:
            ok = value in choices
        return ok

    def check(self, owner: str, value: Any) -> None:
        """Raise a ValueError naming `owner`, the value's name, the bad value and the valid values."""
        if not self.accepts(value):
            raise ValueError(
                f"{owner}: {self.name} must be {self.valid}, got {value!r} (default {self.default!r}; "
                f"{self.help})"
            )


def declare(
    default: Any, help: str, *, declaration: type[Declaration] = Declaration, **attributes: Any
) -> Any:
    """A dataclass field: its default plus the `Declaration` (or subclass) that everything else reads.

    A None default makes the value optional (give its `kind`).

    Example:
        max_steps: int = declare(1500, "warm-up steps at most", low=1)
    """
    if default is None:
        attributes["optional"] = True
    spec = declaration(default=default, help=help, **attributes)
    return field(default=default, metadata={DECLARATION_KEY: spec})


def declarations(cls: type) -> dict[str, Declaration]:
    """{field name: its declaration, named} for the fields of dataclass `cls` declared with `declare`."""
    return {
        f.name: replace(f.metadata[DECLARATION_KEY], name=f.name)
        for f in fields(cls)
        if DECLARATION_KEY in f.metadata
    }


def default_of(cls: type, name: str) -> Any:
    """The declared default of field `name` of dataclass `cls` (to reuse a default, not restate it)."""
    return cls.__dataclass_fields__[name].default
