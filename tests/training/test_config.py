"""TrainConfig: validation errors name the field and the fix; presets; derived values."""

from __future__ import annotations

import dataclasses
import json

import pytest

from bandpo.training import TrainConfig
from bandpo.training.config import PRESETS


def test_defaults_are_the_embedded_cpu_run():
    config = TrainConfig()
    assert config.method == "band" and config.delta == 0.05 and config.ratio_max == 10.0
    assert config.reward is None and config.max_completion_length is None  # the user's None is kept
    assert config.resolved_reward == "countdown" and config.resolved_max_completion_length == 8
    assert config.samples_per_step == 256 and config.optimizer_steps_per_rl_step == 8
    assert config.trl_max_steps == 250 * 8
    assert config.embedded
    assert config.method_params == {
        "divergence": "kl",
        "delta": 0.05,
        "ratio_max": 10.0,
        "relax": False,
        "lower_side": "band",
        "upper_side": "band",
    }


def test_frozen_and_keyword_only():
    config = TrainConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        TrainConfig("band")  # type: ignore[misc]


def test_method_params_only_those_the_method_takes():
    assert TrainConfig(method="clip").method_params == {}
    assert TrainConfig(method="clip", eps_low=0.1).method_params == {"eps_low": 0.1}
    assert TrainConfig(method="band_upper").method_params == {
        "divergence": "kl",
        "delta": 0.05,
        "ratio_max": 10.0,
        "relax": False,
    }
    assert TrainConfig(method="dcpo").method_params == {"ratio_max": 10.0}
    assert TrainConfig(method="clip_higher").bound_method().params["eps_high"] == 0.28


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"method": "ppo"}, "method"),
        ({"delta": 0.0}, "delta"),
        ({"divergence": "nope"}, "divergence|nope"),
        ({"lower_side": "middle"}, "lower_side"),
        ({"method": "clip", "eps_low": 1.5}, "eps_low"),
        ({"agg": "sum"}, "agg"),
        ({"dual_clip_c": 0.5}, "dual_clip_c"),
        ({"kl_coef": -1.0}, "kl_coef"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"temperature": 0}, "temperature"),
        ({"max_steps": 0}, "max_steps"),
        ({"max_steps": 2.5}, "max_steps"),
        ({"num_generations": 1}, "num_generations"),
        ({"prompts_per_step": 30}, "prompts_per_step"),
        ({"scale_rewards": "std"}, "scale_rewards"),
        ({"reward": "exact"}, "reward"),
        ({"dataset": "/no/such/file.jsonl"}, "dataset"),
        ({"model": "/no/such/model"}, "model"),
        ({"reward_timeout_s": -1.0}, "reward_timeout_s"),
        ({"eval_every": -1}, "eval_every"),
        ({"seed": True}, "seed"),
        ({"use_chat_template": "false"}, "use_chat_template"),
        ({"gradient_checkpointing": 1}, "gradient_checkpointing"),
    ],
)
def test_bad_values_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=field) as info:
        TrainConfig(**overrides)
    assert "\n" not in str(info.value)


def test_math_reward_needs_a_dataset():
    with pytest.raises(ValueError, match="dataset"):
        TrainConfig(reward="math")


def test_paper_preset():
    config = TrainConfig.from_preset("paper")
    assert config.preset == "paper"
    assert (config.kl_coef, config.dual_clip_c, config.agg, config.entropy_coef) == (
        0.001,
        10.0,
        "seq_mean_token_mean",
        0.0,
    )
    assert (config.temperature, config.delta, config.scale_rewards) == (1.0, 0.05, "group")
    assert config.samples_per_step == 256 * 16 and config.minibatches == 4
    assert config.optimizer_steps_per_rl_step > 1  # several optimiser steps per rollout batch
    assert TrainConfig.from_preset("paper", delta=0.1, seed=None).delta == 0.1  # None keeps the preset
    assert set(PRESETS) == {"default", "paper"}
    with pytest.raises(ValueError, match="preset"):
        TrainConfig.from_preset("fast")
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        TrainConfig.from_preset("default", sped=1)


def test_the_preset_label_always_comes_with_its_values():
    """TrainConfig(preset="paper") is the paper preset (the keywords given override it), never the label on
    the default values; replace() refuses another preset, which would keep every other value."""
    assert TrainConfig(preset="paper") == TrainConfig.from_preset("paper")
    assert TrainConfig(preset="paper").max_steps == PRESETS["paper"]["max_steps"] != TrainConfig().max_steps
    assert TrainConfig(preset="paper", max_steps=5) == TrainConfig.from_preset("paper", max_steps=5)
    assert TrainConfig(preset="paper", kl_coef=0.0).kl_coef == 0.0  # a keyword given wins, the default too
    assert TrainConfig(preset="paper").replace(seed=3).max_steps == PRESETS["paper"]["max_steps"]
    with pytest.raises(ValueError, match="from_preset") as info:
        TrainConfig().replace(preset="paper")
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="preset='fast' is not valid"):
        TrainConfig(preset="fast")


def test_json_round_trip():
    config = TrainConfig(method="band_upper", seed=3, max_steps=7)
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert TrainConfig.from_dict(json.loads(config.to_json())) == config
    assert '"method": "band_upper"' in config.to_json()
    resolved = config.to_dict()["resolved"]  # what the run uses, written to config.json
    assert resolved["reward"] == "countdown" and resolved["max_completion_length"] == 8
    assert resolved["method_params"] == config.method_params


def test_derived_values_follow_replace(tmp_path):
    """A resolved default is recomputed, not frozen into the field: replace(dataset=...) switches to math."""
    dataset = tmp_path / "data.jsonl"
    dataset.write_text('{"prompt": "1+1", "answer": "2"}\n')
    config = TrainConfig().replace(dataset=str(dataset))
    assert config.resolved_reward == "math" and config.resolved_max_completion_length == 1024
    assert config.replace(reward="countdown").resolved_max_completion_length == 8
    assert config.replace(max_completion_length=64).resolved_max_completion_length == 64
    assert (
        TrainConfig().replace(max_completion_length=5).replace(dataset=str(dataset)).resolved_reward == "math"
    )
    with pytest.raises(ValueError, match="dataset"):
        config.replace(dataset=None, reward="math")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"method": "band_upper", "lower_side": "band", "upper_side": "fixed"}, "upper_side"),
        ({"method": "band_lower", "lower_side": "fixed"}, "lower_side"),
        ({"method": "clip", "delta": 0.3, "divergence": "tv"}, "divergence"),
        ({"method": "clip", "delta": 0.3}, "delta"),
        ({"method": "clip_higher", "ratio_max": 5.0}, "ratio_max"),
        ({"method": "dcpo", "relax": True}, "relax"),
    ],
)
def test_method_fields_the_method_does_not_take_are_refused(overrides, field):
    with pytest.raises(ValueError, match=f"^{field}=.*method={overrides['method']!r}.*drop {field}"):
        TrainConfig(**overrides)


def test_method_fields_at_their_default_are_accepted_for_every_method():
    from bandpo.methods import list_methods

    for method in list_methods():
        assert TrainConfig(method=method).method == method
    assert TrainConfig.from_preset("paper", method="clip").method_params == {}


def test_micro_batch_size_splits_the_minibatch():
    config = TrainConfig(micro_batch_size=16)  # 32 prompts x 8 samples / 4 minibatches = 64 per minibatch
    assert config.minibatch_samples == 64 and config.gradient_accumulation_steps == 4
    assert config.optimizer_steps_per_rl_step == 8 and config.trl_max_steps == 250 * 8
    assert TrainConfig().resolved_micro_batch_size == 64 and TrainConfig().gradient_accumulation_steps == 1
    with pytest.raises(ValueError, match="micro_batch_size=24 must divide the 64"):
        TrainConfig(micro_batch_size=24)
    with pytest.raises(ValueError, match="micro_batch_size"):
        TrainConfig(micro_batch_size=0)
    paper = TrainConfig.from_preset("paper")
    assert paper.micro_batch_size == 16 and paper.gradient_accumulation_steps == 64


def test_one_optimiser_step_per_rollout_batch_warns():
    with pytest.warns(UserWarning, match="every method is identical"):
        TrainConfig(num_iterations=1, minibatches=1)


@pytest.mark.parametrize(
    "agg", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_mean_token_sum_norm"]
)
def test_train_accepts_exactly_the_loss_aggregations_trl_runs(agg):
    """An aggregation of `bandpo.losses` is accepted iff TRL has a loss type for it; the rest are refused
    up front (naming agg and the valid ones), not by TRL after the run directory is written."""
    from bandpo import losses
    from bandpo.integrations.trl_names import AGG_TO_LOSS_TYPE

    assert agg in losses.AGG_MODES
    if agg == "seq_mean_token_sum":  # no TRL loss type sums over tokens without a constant divisor
        assert agg not in AGG_TO_LOSS_TYPE
        with pytest.raises(
            ValueError, match=r"^agg='seq_mean_token_sum' is not valid; use one of \['token_mean'"
        ):
            TrainConfig(agg=agg)
    else:
        assert TrainConfig(agg=agg).agg == agg and agg in AGG_TO_LOSS_TYPE


def test_default_aggregation_is_the_papers():
    assert TrainConfig().agg == "seq_mean_token_mean" == TrainConfig.from_preset("paper").agg
