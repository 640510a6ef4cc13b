"""One declaration type (`bandpo.declarations.Declaration`) for method parameters, train settings and the
warm-up: each default and range is written once and read by everything else."""

import dataclasses
import inspect
import math

import pytest

from bandpo.declarations import Declaration, declarations, declare
from bandpo.method_params import MethodParameter
from bandpo.methods import BandMethod, settable_parameters
from bandpo.training.config import SETTINGS, TrainConfig
from bandpo.training.evaluate import evaluate
from bandpo.training.rewards import GuardedReward
from bandpo.training.setting import Setting
from bandpo.training.warmup import WARMUP_DECLARATIONS, WarmupConfig


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Example:
    count: int = declare(3, "a count", low=1, high=10)
    share: float = declare(0.5, "a share", low=0.0, low_open=True, high=1.0)
    side: str = declare("band", "a side", choices=("band", "fixed"))
    switch: bool = declare(False, "a switch")
    limit: float | None = declare(None, "an optional limit", kind=float, low=0.0)


def test_declarations_are_named_after_their_fields_and_keep_the_defaults():
    specs = declarations(_Example)
    assert list(specs) == [f.name for f in dataclasses.fields(_Example)]
    assert all(spec.name == name for name, spec in specs.items())
    assert {name: spec.default for name, spec in specs.items()} == dataclasses.asdict(_Example())
    assert specs["count"].kind is int and specs["limit"].optional


@pytest.mark.parametrize(
    ("name", "good", "bad"),
    [
        ("count", [1, 10], [0, 11, 2.0, True, None, "3"]),
        ("share", [1e-9, 1, 1.0], [0.0, 1.5, math.nan, True, None]),
        ("side", ["band", "fixed"], ["middle", "", None, 1]),
        ("switch", [True, False], [0, 1, "true", None]),
        ("limit", [None, 0.0, math.inf], [-1.0, math.nan, "x"]),
    ],
)
def test_accepts_the_kind_the_range_and_the_choices(name, good, bad):
    spec = declarations(_Example)[name]
    assert all(spec.accepts(value) for value in good), good
    assert not any(spec.accepts(value) for value in bad), bad
    with pytest.raises(ValueError, match=rf"^owner: {name} must be .*, got "):
        spec.check("owner", bad[0])


def test_valid_values_in_words():
    specs = declarations(_Example)
    assert specs["count"].valid == "an integer in [1, 10]"
    assert specs["share"].valid == "a number in (0, 1]"
    assert specs["side"].valid == "one of ['band', 'fixed']"
    assert specs["limit"].valid == "a number in [0, inf] or None"


def test_method_parameters_settings_and_the_warm_up_share_the_type():
    assert all(isinstance(spec, MethodParameter) for spec in BandMethod.parameters())
    assert all(isinstance(spec, Setting) for spec in SETTINGS.values())
    assert all(type(spec) is Declaration for spec in WARMUP_DECLARATIONS.values())
    assert issubclass(MethodParameter, Declaration) and issubclass(Setting, Declaration)
    assert settable_parameters()["delta"].default == TrainConfig().delta


def test_warmup_settings_are_the_warm_up_declarations():
    """``warmup_*`` restate nothing: default, help and range are WarmupConfig's (the count limit is added)."""
    for name in ("target_accuracy", "max_steps", "rare_fraction"):
        setting, declared = SETTINGS[f"warmup_{name}"], WARMUP_DECLARATIONS[name]
        assert (setting.default, setting.help, setting.low, setting.low_open) == (
            declared.default,
            declared.help,
            declared.low,
            declared.low_open,
        )
        assert getattr(TrainConfig(), f"warmup_{name}") == getattr(WarmupConfig(), name)
    assert SETTINGS["warmup_rare_fraction"].high == WARMUP_DECLARATIONS["rare_fraction"].high == 1.0
    assert TrainConfig().policy_source.warmup == WarmupConfig()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"max_steps": 0}, "warmup: max_steps must be an integer >= 1, got 0"),
        ({"rare_fraction": 1.5}, r"warmup: rare_fraction must be a number in \[0, 1\], got 1.5"),
        ({"target_accuracy": 0.0}, r"warmup: target_accuracy must be a number in \(0, 1\], got 0.0"),
        ({"task": "nope"}, "warmup: task must be one of"),
        ({"task": "sums"}, "needs a pretrained model"),
    ],
)
def test_warmup_config_checks_its_declarations(overrides, message):
    with pytest.raises(ValueError, match=message):
        WarmupConfig(**overrides)


def test_functions_default_to_the_declared_run_defaults():
    """GuardedReward and evaluate take a run's defaults from the settings table, not from literals."""
    reward = inspect.signature(GuardedReward).parameters
    assert (
        reward["timeout_s"].default == SETTINGS["reward_timeout_s"].default == TrainConfig().reward_timeout_s
    )
    assert reward["answer_column"].default == TrainConfig().answer_column
    evaluation = inspect.signature(evaluate).parameters
    assert evaluation["k"].default == TrainConfig().eval_samples
    assert evaluation["timeout_s"].default == TrainConfig().reward_timeout_s
    assert evaluation["seed"].default == TrainConfig().seed
    assert evaluation["temperature"].default == TrainConfig().temperature
    assert evaluation["max_new_tokens"].default == TrainConfig().resolved_max_completion_length
