"""`bandpo train` flags: derived from the TrainConfig declarations and the registered methods' parameters."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest
import torch

from bandpo import methods
from bandpo.cli import build_parser
from bandpo.cli.train import build_config
from bandpo.method_params import param
from bandpo.methods import DeclaredMethod
from bandpo.training import TrainConfig
from bandpo.training.config import METHOD_FIELDS, PRESETS, SETTINGS, default_text


class Tight(DeclaredMethod):
    """A user method with a parameter of its own (no TrainConfig field holds `tightness`)."""

    name: ClassVar[str] = "tight"
    tightness: float = param(0.05, "half-width of the fixed interval", low=0.0, high=1.0)

    def compute_bounds(self, old_logp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.full_like(old_logp, 1 - self.tightness), torch.full_like(old_logp, 1 + self.tightness)


Tight = dataclasses.dataclass(frozen=True, kw_only=True)(Tight)


@pytest.fixture
def tight_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(methods, "_REGISTRY", dict(methods._REGISTRY))
    methods.register_method("tight", Tight)


def parse(*argv: str) -> TrainConfig:
    return build_config(build_parser().parse_args(["train", *argv]))


def test_a_registered_methods_own_parameter_is_set_from_the_cli(tight_registered):
    config = parse("--method", "tight", "--tightness", "0.1")
    assert config.method_options == {"tightness": 0.1}
    assert config.method_params == {"tightness": 0.1}
    assert config.bound_method() == Tight(tightness=0.1)
    assert TrainConfig.from_dict(config.to_dict()) == config  # config.json round trip (and --resume)
    assert parse("--method", "tight").bound_method() == Tight()  # left out: the method's default
    help_text = " ".join(_help().split())
    assert "--tightness" in help_text and "default: 0.05 for tight" in help_text


def test_a_registered_methods_own_parameter_is_checked_like_the_built_ins(tight_registered):
    with pytest.raises(ValueError, match=r"tight: tightness must be a number in \[0, 1\], got 2"):
        parse("--method", "tight", "--tightness", "2")
    with pytest.raises(ValueError, match=r"^method_options tightness=0.1 has no effect with method='band'"):
        parse("--tightness", "0.1")
    with pytest.raises(ValueError, match=r"a TrainConfig field of its own; set delta=0\.1"):
        TrainConfig(method_options={"delta": 0.1})
    with pytest.raises(ValueError, match="no registered method takes"):
        TrainConfig(method="tight", method_options={"nope": 1})


def test_config_json_of_a_built_in_method_has_no_method_options():
    assert "method_options" not in TrainConfig().to_dict()


def _help() -> str:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["train"]
    return sub.format_help()


def test_every_field_has_one_declaration():
    """Each field is a `setting` (help, range, flag) or a bound-method field (declared by the methods)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    assert names == set(SETTINGS) | set(METHOD_FIELDS) | {"method_options"}
    assert not set(SETTINGS) & set(METHOD_FIELDS)
    for name, spec in SETTINGS.items():
        assert spec.help and not spec.help.endswith(".") and "default" not in spec.help, name
    assert set(PRESETS["paper"]) <= names


def test_help_shows_the_declared_defaults():
    """The default and a count's limit in the help are read from the declaration, so the help cannot disagree
    with the config."""
    text = " ".join(_help().split())
    for name, spec in SETTINGS.items():
        if spec.flag != "" and name not in {"preset", "resume"}:
            limit = f"; at most {int(spec.high):,}" if spec.kind is int else ""
            assert f"(default: {default_text(name)}{limit})" in text, name
    assert "RL steps (generation batches) (default: 250; paper preset 1020; at most 1,000,000)" in text
    assert TrainConfig().max_steps == 250 and PRESETS["paper"]["max_steps"] == 1020


def test_flags_set_their_field():
    config = parse("--max-steps", "7", "--lr", "0.001", "--reward-timeout", "2", "--no-chat-template")
    assert (config.max_steps, config.learning_rate, config.reward_timeout_s) == (7, 0.001, 2.0)
    assert config.use_chat_template is False and config.report_to == ("tensorboard",)
    assert parse("--dual-clip-c", "off").dual_clip_c is None
    assert parse("--relax").relax is True
    assert parse() == TrainConfig()  # no flag: every field keeps its default
    assert parse("--preset", "paper") == TrainConfig.from_preset("paper")


def test_a_switch_is_three_way_keep_on_off():
    assert (
        parse().gradient_checkpointing is None
    )  # the default: on for a real model, off for the embedded one
    assert parse("--gradient-checkpointing").gradient_checkpointing is True
    assert parse("--no-gradient-checkpointing").gradient_checkpointing is False
