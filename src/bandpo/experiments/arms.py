"""The arms of a comparison on the command line: method specs `name` or `name:key=value,key=value` (e.g.
`band:delta=0.1`), and a sweep over one method parameter (`bandpo compare --sweep delta=0.02,0.05,0.1,0.2`).

Spec keys are the method's parameters, plus the loss settings of `LOSS_PARAMS` (e.g. `dual_clip_c`), which an
arm may set for itself: `band:ratio_max=inf,dual_clip_c=20` is Band-KL without its cap under a dual-clip of 20.
A sweep makes every arm whose method takes the parameter one arm per value (`band` -> `band:delta=0.02`, ...);
arms whose method does not take it (e.g. `clip` for `delta`) stay as they are (the report draws them as
horizontal reference lines).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_METHODS",
    "LOSS_PARAMS",
    "MethodSpec",
    "expand_sweep",
    "parse_method_spec",
    "parse_method_specs",
    "parse_sweep",
    "parse_value",
]

# The comparison set of the issue: clip, Clip-Higher, DCPO, Band (KL, delta = 0.05) and Band with a fixed lower side.
DEFAULT_METHODS: tuple[str, ...] = ("clip", "clip_higher", "dcpo", "band", "band_upper")

# `TrainConfig` loss fields an arm may set, besides its method's
LOSS_PARAMS: tuple[str, ...] = ("dual_clip_c",)

_LABEL_SAFE = re.compile(r"[^A-Za-z0-9_.=-]+")


@dataclass(frozen=True)
class MethodSpec:
    """A method name from the `bandpo.methods` registry plus keyword parameters, and its label in reports."""

    name: str
    params: dict[str, object] = field(default_factory=dict)

    @property
    def label(self) -> str:
        if not self.params:
            return self.name
        return self.name + ":" + ",".join(f"{key}={value}" for key, value in self.params.items())

    @property
    def slug(self) -> str:
        """A file-system safe form of the label (run directory names)."""
        return _LABEL_SAFE.sub("_", self.label.replace(":", "__").replace(",", "_"))

    def build(self):
        """The method object (`bandpo.methods.get_method`); raises ValueError for unknown names or params."""
        from bandpo.methods import get_method

        method_params = {key: value for key, value in self.params.items() if key not in LOSS_PARAMS}
        try:
            return get_method(self.name, **method_params)
        except TypeError as error:  # unexpected keyword
            raise ValueError(f"method {self.label!r}: {error}") from None


def parse_value(text: str) -> object:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_method_spec(text: str) -> MethodSpec:
    """Parse `name` or `name:key=value,...`; values become bool, int, float or str."""
    name, _, rest = text.strip().partition(":")
    if not name:
        raise ValueError(f"method spec {text!r}: empty name (expected name or name:key=value,...)")
    params: dict[str, object] = {}
    if rest:
        for item in rest.split(","):
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"method spec {text!r}: {item!r} is not key=value (e.g. band:delta=0.1)")
            params[key.strip()] = parse_value(value.strip())
    return MethodSpec(name=name, params=params)


def parse_method_specs(texts: list[str] | tuple[str, ...]) -> list[MethodSpec]:
    specs = [parse_method_spec(text) for text in texts]
    labels = [spec.label for spec in specs]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ValueError(f"--methods lists {', '.join(duplicates)} more than once")
    for spec in specs:
        spec.build()  # fail early, before any run starts, with the registry's list of valid names
    return specs


def parse_sweep(text: str) -> tuple[str, list[Any]]:
    """`delta=0.02,0.05,0.1` -> ("delta", [0.02, 0.05, 0.1]); values parsed as in method specs."""
    key, sep, values = text.partition("=")
    if not sep or not key.strip() or not values.strip():
        raise ValueError(f"--sweep {text!r}: expected PARAM=V1,V2,... (e.g. delta=0.02,0.05,0.1,0.2)")
    parsed = [
        parse_method_spec(f"x:{key.strip()}={value.strip()}").params[key.strip()]
        for value in values.split(",")
    ]
    if len(set(map(repr, parsed))) != len(parsed):
        raise ValueError(f"--sweep {text!r}: a value is listed twice")
    return key.strip(), parsed


def expand_sweep(specs: Sequence[MethodSpec], param: str, values: Sequence[Any]) -> list[MethodSpec]:
    """One arm per value for every spec whose method takes `param`; the others unchanged."""
    from bandpo.methods import method_parameters

    expanded: list[MethodSpec] = []
    swept = False
    for spec in specs:
        if param not in method_parameters(spec.name):
            expanded.append(spec)
            continue
        if param in spec.params:
            raise ValueError(
                f"--methods {spec.label!r} sets {param}, which --sweep varies; drop it from the spec"
            )
        swept = True
        expanded += [MethodSpec(name=spec.name, params={**spec.params, param: value}) for value in values]
    if not swept:
        raise ValueError(f"--sweep {param}: none of --methods {[s.label for s in specs]} takes {param!r}")
    return expanded
