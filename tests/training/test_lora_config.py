"""The LoRA settings (``--lora-r`` and the three that go with it): validation, the CLI, TRL's arguments and the
`peft.LoraConfig` they make, and the one-line refusal without peft."""

from __future__ import annotations

import sys

import pytest

from bandpo.cli import main
from bandpo.training import TrainConfig


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lora_alpha": 16}, "lora_alpha=16 has no effect without lora_r"),
        ({"lora_dropout": 0.1}, "lora_dropout=0.1 has no effect without lora_r"),
        ({"lora_target_modules": "q_proj"}, "lora_target_modules='q_proj' has no effect without lora_r"),
        ({"lora_r": 0}, "lora_r=0 is not valid; use a rank >= 1"),
        ({"lora_r": 8, "lora_alpha": 0}, "lora_alpha=0 is not valid"),
        ({"lora_r": 8, "lora_dropout": 1.0}, "drops every input of the adapter"),
        ({"lora_r": 8, "lora_dropout": -0.1}, "lora_dropout=-0.1 is not valid"),
        ({"lora_r": 8, "lora_target_modules": "q_proj,,v_proj"}, "has an empty or spaced name"),
        ({"lora_r": 8, "lora_target_modules": "q_proj,lm_head"}, "names lm_head"),
    ],
)
def test_bad_lora_settings_are_refused_naming_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**overrides)


def test_target_modules_as_peft_takes_them():
    assert TrainConfig(lora_r=8).peft_target_modules is None  # peft's default for the architecture
    assert TrainConfig(lora_r=8, lora_target_modules="all-linear").peft_target_modules == "all-linear"
    config = TrainConfig(lora_r=8, lora_target_modules="q_proj, v_proj")
    assert config.peft_target_modules == ["q_proj", "v_proj"]
    assert TrainConfig.from_dict(config.to_dict()) == config  # config.json round trip
    assert not TrainConfig().lora and config.lora


def test_the_cli_flags_reach_the_config():
    from bandpo.cli import build_parser

    args = build_parser().parse_args(
        [
            "train",
            "--lora-r",
            "4",
            "--lora-alpha",
            "8",
            "--lora-dropout",
            "0.05",
            "--lora-target-modules",
            "q_proj",
        ]
    )
    from bandpo.cli.train import build_config

    config = build_config(args)
    assert (config.lora_r, config.lora_alpha, config.lora_dropout) == (4, 8, 0.05)
    assert config.lora_target_modules == "q_proj"


def test_the_lora_config_is_trls_mapping_and_dropout_stays_off_without_lora_dropout(tmp_path):
    peft = pytest.importorskip("peft")
    pytest.importorskip("trl")
    from bandpo.training.lora import lora_config
    from bandpo.training.trl_args import trl_arguments

    assert lora_config(TrainConfig()) is None
    made = lora_config(TrainConfig(lora_r=4, lora_alpha=8, lora_target_modules="q_proj,o_proj"))
    assert isinstance(made, peft.LoraConfig)
    assert (made.r, made.lora_alpha, made.lora_dropout, made.bias) == (4, 8, 0.0, "none")
    assert made.target_modules == {"q_proj", "o_proj"} and made.task_type == "CAUSAL_LM"
    # model dropout off (the ratio is 1 on the tokens just sampled) unless LoRA dropout is asked for
    assert trl_arguments(TrainConfig(), tmp_path).disable_dropout
    assert trl_arguments(TrainConfig(lora_r=4), tmp_path).disable_dropout
    assert not trl_arguments(TrainConfig(lora_r=4, lora_dropout=0.05), tmp_path).disable_dropout


def test_without_peft_a_lora_run_is_refused_in_one_line_naming_the_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` raises ImportError, as when not installed
    run_dir = tmp_path / "run"
    assert main(["train", "--lora-r", "8", "--output-dir", str(run_dir), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "lora_r=8" in err and "pip install 'bandpo[lora]'" in err
    assert not run_dir.exists()  # refused before the first write
