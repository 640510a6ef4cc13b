"""`trainer.trl_arguments`: TrainConfig → TRL arguments (micro-batching, plain k3 KL, one warning, activation
checkpointing)."""

from __future__ import annotations

import warnings

import pytest

pytest.importorskip("trl")

from bandpo.training import TrainConfig
from bandpo.training.trl_args import trl_arguments as _trl_config


def test_micro_batching_keeps_minibatches_optimiser_steps_per_generation_batch(tmp_path):
    config = TrainConfig(micro_batch_size=16)  # 256 completions per RL step, minibatches of 64
    args = _trl_config(config, tmp_path)
    assert args.per_device_train_batch_size == 16 and args.gradient_accumulation_steps == 4
    assert args.generation_batch_size == config.samples_per_step == 256
    # optimiser steps per generation batch and iteration = micro-batches per generation batch / accumulation
    assert args.steps_per_generation // args.gradient_accumulation_steps == config.minibatches
    assert args.num_iterations == 2
    # TRL's global_step counts optimiser steps: 8 per RL step whatever the micro-batch size
    assert (args.max_steps, args.logging_steps, args.save_steps) == (250 * 8, 8, 25 * 8)
    whole = _trl_config(TrainConfig(), tmp_path)
    assert (whole.per_device_train_batch_size, whole.gradient_accumulation_steps) == (64, 1)
    assert whole.steps_per_generation == 4 and whole.generation_batch_size == 256
    assert (whole.max_steps, whole.logging_steps, whole.save_steps) == (args.max_steps, 8, 200)


def test_paper_preset_is_micro_batched_with_plain_k3(tmp_path):
    config = TrainConfig.from_preset("paper")
    args = _trl_config(config, tmp_path)
    assert args.per_device_train_batch_size == 16 and args.gradient_accumulation_steps == 64
    assert args.generation_batch_size == 256 * 16
    assert args.steps_per_generation // args.gradient_accumulation_steps == 4
    assert args.beta == 0.001 and args.use_bias_correction_kl is False and args.loss_type == "grpo"
    assert args.max_completion_length == 8  # resolved for the embedded Countdown task


def test_one_update_schedule_warns_once(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = TrainConfig(num_iterations=1, minibatches=1)
        args = _trl_config(config, tmp_path)
    messages = [str(w.message) for w in caught if "every method is identical" in str(w.message)]
    assert len(messages) == 1 and args.gradient_accumulation_steps == 1


def test_embedded_model_is_trained_without_activation_checkpointing(tmp_path):
    """TRL turns gradient checkpointing on by default; for the 0.1M-parameter model it only recomputes."""
    assert _trl_config(TrainConfig(), tmp_path).gradient_checkpointing is False


def test_a_users_model_keeps_trls_activation_checkpointing(tmp_path):
    config = TrainConfig(model=str(tmp_path))  # any existing path: the config only checks it exists
    assert _trl_config(config, tmp_path / "checkpoints").gradient_checkpointing is True


@pytest.mark.parametrize("model", [False, True])
@pytest.mark.parametrize("wanted", [False, True])
def test_gradient_checkpointing_set_either_way_overrides_the_default(tmp_path, model, wanted):
    config = TrainConfig(model=str(tmp_path) if model else None, gradient_checkpointing=wanted)
    assert _trl_config(config, tmp_path / "checkpoints").gradient_checkpointing is wanted


def test_the_method_is_built_once_from_config_to_trls_arguments(tmp_path, monkeypatch):
    """TrainConfig builds (and checks) the bound method; TRL's arguments carry that object, not a dict that
    each later step would build again."""
    from bandpo.methods import DeclaredMethod

    builds = []
    real = DeclaredMethod.__post_init__
    monkeypatch.setattr(DeclaredMethod, "__post_init__", lambda self: builds.append(self) or real(self))
    config = TrainConfig(delta=0.1)
    args = _trl_config(config, tmp_path)
    args.validate()  # what BandPOTrainer runs at start-up
    assert args.bound_method is config.bound_method() and args.bound_method.params["delta"] == 0.1
    assert len(builds) == 1
