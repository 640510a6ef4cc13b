"""Settings files: ``bandpo train --config run.yaml`` (YAML or JSON), a run's own config.json included.

A file holds `TrainConfig` fields by name (``max_steps: 40``), the same names as config.json and as the
flags without their dashes. `read_config_file` checks it the way the flags are checked: an unknown key is
refused with the close names and the valid ones, a bad value with the setting's own message (prefixed with
the file), and a text where a number is expected is read as the flag would read it. YAML is read with
YAML 1.2's booleans and floats, as a user expects: ``3e-4`` is a number, ``dual_clip_c: off`` the flag's
"off" (not YAML 1.1's false). A registered method's own parameter may stand at the top
level as on the command line; it goes into ``method_options``. config.json's ``resolved`` block is derived,
so it is skipped (recomputed from the fields); its ``report_tensorboard`` (before ``report_to``) is
converted by `TrainConfig.from_dict`.

`load_config` builds the `TrainConfig` of a file: the preset (the file's ``preset``, else ``default``),
then the file, then the overrides (the flags given).
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

from bandpo.training.config import (
    PRESETS,
    SETTINGS,
    TrainConfig,
    method_option_names,
    settable_method_parameters,
)

__all__ = ["DUAL_CLIP_OFF", "flag_value", "load_config", "parse_dual_clip_c", "read_config_file"]

DUAL_CLIP_OFF = ("off", "none", "inf", "+inf", "infinity")
IGNORED_KEYS = frozenset({"resolved"})  # config.json's derived values, recomputed from the fields
LEGACY_KEYS = frozenset({"report_tensorboard"})  # read by TrainConfig.from_dict


def parse_dual_clip_c(text: str) -> float:
    """``--dual-clip-c``: a number, or off (returned as inf, stored as None: the run's "off")."""
    if text.strip().lower() in DUAL_CLIP_OFF:
        return math.inf
    return float(text)


def flag_value(name: str, text: str) -> Any:
    """`text` read as the flag of field `name` reads it (int, float, the dual clip's "off"); `text` itself
    when that fails, so the setting's check names the bad value."""
    if name == "dual_clip_c":
        kind: Any = parse_dual_clip_c
    elif name in SETTINGS:
        kind = SETTINGS[name].kind
    elif name in settable_method_parameters():
        kind = settable_method_parameters()[name].kind
    else:
        return text
    if kind not in (int, float, parse_dual_clip_c):
        return text
    try:
        return kind(text.strip())
    except ValueError:
        return text


def _parse(path: Path) -> Any:
    """The file's content: JSON for ``.json``, YAML otherwise (JSON is YAML too)."""
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} does not exist; pass a YAML or JSON file of settings")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{path} is not valid JSON (line {error.lineno}: {error.msg}); fix the file"
            ) from None
    import yaml

    try:
        return yaml.load(text, Loader=_yaml_loader())  # a SafeLoader: no Python objects
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ValueError(f"{path} is not valid YAML ({where}{problem}); fix the file") from None


@functools.cache
def _yaml_loader() -> Any:
    """PyYAML's SafeLoader with YAML 1.2's booleans and floats: ``off``/``no`` stay text (``dual_clip_c: off``
    is the flag's "off", not False) and ``3e-4`` is a number (YAML 1.1 needs ``3.0e-4``)."""
    import yaml

    bool_tag, float_tag = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:float"

    class Loader(yaml.SafeLoader):
        pass

    Loader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag not in (bool_tag, float_tag)]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    Loader.add_implicit_resolver(
        bool_tag, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
    )
    Loader.add_implicit_resolver(
        float_tag,
        re.compile(
            r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"
        ),
        list("-+0123456789."),
    )
    return Loader


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The settings in `path`, by `TrainConfig` field, checked as the flags are (see the module docstring).

    Raises:
        ValueError: a missing or unparsable file, a top level that is no mapping, an unknown key or a bad
            value (one line naming the file and the fix).
    """
    path = Path(path).expanduser()
    content = _parse(path)
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise ValueError(
            f"{path} holds a {type(content).__name__}, not settings; write one `name: value` per line "
            "(the names of config.json and of `bandpo train --help`, without the dashes)"
        )
    field_names = {f.name for f in fields(TrainConfig)}
    options = set(method_option_names()) - field_names
    known = field_names | options | IGNORED_KEYS | LEGACY_KEYS
    unknown = [key for key in content if key not in known]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(str(key).replace("-", "_"), sorted(known), n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(
            f"{path}: unknown setting(s) {', '.join(hints)}; valid: {sorted(field_names | options)}"
        )
    values: dict[str, Any] = {}
    if not isinstance(content.get("method_options") or {}, dict):
        raise ValueError(
            f"{path}: method_options={content['method_options']!r} is not valid; use a mapping of method "
            "parameters (or put each at the top level)"
        )
    method_options = dict(content.get("method_options") or {})
    for key, value in content.items():
        if key in IGNORED_KEYS or key == "method_options":
            continue
        if isinstance(value, str):
            value = flag_value(key, value)
        if key in options:
            method_options[key] = value
            continue
        if key in SETTINGS:
            try:
                SETTINGS[key].check(key, _as_setting(key, value))
            except ValueError as error:
                raise ValueError(f"{path}: {error}") from None
        values[key] = value
    if method_options:
        values["method_options"] = method_options
    return values


def _as_setting(name: str, value: Any) -> Any:
    """The value as TrainConfig stores it, for its check (report_to's forms, the dual clip's inf)."""
    if name == "report_to":
        from bandpo.training.loggers import normalize_report_to

        return normalize_report_to(value)
    if name == "dual_clip_c" and value == math.inf:
        return None
    return value


def load_config(
    path: str | Path, *, preset: str | None = None, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """The `TrainConfig` of the file at `path`: `preset` (else the file's, else ``default``), then the file,
    then `overrides` (the flags given, by field name).

    Example:
        config = load_config("run.yaml", overrides={"max_steps": 10})
    """
    values = read_config_file(path)
    name = preset or values.get("preset") or "default"
    if name not in PRESETS:
        raise ValueError(f"preset={name!r} is unknown; use one of {sorted(PRESETS)}")
    merged = {**PRESETS[name], **values, **(overrides or {}), "preset": name}
    options = {**(values.get("method_options") or {}), **((overrides or {}).get("method_options") or {})}
    if options:
        merged["method_options"] = options
    return TrainConfig.from_dict(merged)
