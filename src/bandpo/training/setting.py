"""`Setting`: the declaration of one ``bandpo train`` setting, a `bandpo.declarations.Declaration` that also
knows how the command line shows it.

The default, the help, the kind and the valid values are the `Declaration`'s (the type a method's parameters
and the warm-up's values use too); a setting adds where ``--help`` lists it, its flag, the advice of its error
and its default in words. `setting(...)` declares a field with one; `bandpo.training.settings` holds the table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bandpo.declarations import Declaration, declare

__all__ = ["Setting", "setting", "setting_from"]


@dataclass(frozen=True, kw_only=True)
class Setting(Declaration):
    """The declaration of one `TrainConfig` field: a `Declaration` with its place on the command line.

    Attributes (beyond the `Declaration`'s: name, default, help, kind, optional, low, high, low_open, choices):
        section: where the field is listed (``bandpo.training.settings.METHOD``, ``LOSS``, ...).
        high: as the `Declaration`'s, inf when unbounded. Every count has a finite `high`: a value beyond what
            any run needs is a typo or a unit slip, refused before any work rather than found by the
            out-of-memory killer.
        fix: the advice of the error for a bad value (default: the valid range or choices).
        default_text: the default in words where the default is None or needs explaining.
        flag: the CLI flag ("" for none; default ``--`` + the name with dashes); `aliases` more of them.
        metavar: the CLI's placeholder for the value.
    """

    section: str
    high: float = math.inf
    fix: str | None = None
    default_text: str | None = None
    flag: str | None = None
    aliases: tuple[str, ...] = ()
    metavar: str | None = None

    def int_range(self) -> str:
        """The valid integers in words: "use an integer in [1, 1,024]" (or ">= low" without a limit)."""
        low = 0 if self.low is None else self.low
        if math.isinf(self.high):
            return f"use an integer >= {low}"
        return f"use an integer in [{low:,}, {int(self.high):,}]"

    def accepts(self, value: Any) -> bool:
        """The `Declaration`'s rule; a str setting also needs a non-empty value."""
        return super().accepts(value) and not (self.kind is str and value == "")

    def check(self, name: str, value: Any) -> None:
        """Raise a one-line ValueError naming the field (or flag) `name`, the bad value and the fix."""
        if self.accepts(value):
            return
        choices = self.valid_choices()
        if self.kind is tuple:
            advice = self.fix or f"use any of {list(choices or ())}"
        elif choices is not None:
            advice = f"use one of {list(choices)}"
        elif self.kind is int:
            if isinstance(value, int) and not isinstance(value, bool) and value > self.high:
                raise ValueError(f"{name}={value!r} is more than bandpo allows; {self.int_range()}")
            advice = self.fix or self.int_range()
        elif self.kind is float:
            low = -math.inf if self.low is None else self.low
            interval = f"{'(' if self.low_open else '['}{low}, {self.high}{')' if self.high_open else ']'}"
            advice = self.fix or f"use a number in {interval}"
        elif self.kind is bool:
            advice = self.fix or "use true or false"
        else:
            advice = self.fix or "use a non-empty string"
        raise ValueError(f"{name}={value!r} is not valid; {advice}")


def setting(default: Any, help: str, section: str, *, kind: type | None = None, **declaration: Any) -> Any:
    """A `TrainConfig` field: its default plus the `Setting` that everything else reads.

    The kind is the default's type unless given (it must be, for a None default, which makes the field
    optional).

    Example:
        max_steps: int = setting(250, "RL steps", SCHEDULE, low=1)
    """
    return declare(default, help, declaration=Setting, section=section, kind=kind, **declaration)


def setting_from(spec: Declaration, section: str, **declaration: Any) -> Any:
    """A `TrainConfig` field that sets a value declared elsewhere (the warm-up's): its default, help, kind and
    range are `spec`'s; `declaration` adds the command line's side (and may narrow the range)."""
    inherited = {
        "kind": spec.kind,
        "low": spec.low,
        "high": math.inf if spec.high is None else spec.high,
        "low_open": spec.low_open,
        "high_open": spec.high_open,
        "choices": spec.choices,
    }
    return setting(spec.default, spec.help, section, **{**inherited, **declaration})
