"""Settings of `bandpo train` that only change its speed (the numbers are pinned by the e2e tests)."""

from __future__ import annotations

import pytest

pytest.importorskip("trl")

from bandpo.training import TrainConfig
from bandpo.training.trainer import trl_arguments


def test_embedded_model_is_trained_without_activation_checkpointing(tmp_path):
    """TRL turns gradient checkpointing on by default; for the 0.1M-parameter model it only recomputes."""
    assert trl_arguments(TrainConfig(), tmp_path).gradient_checkpointing is False


def test_a_users_model_keeps_trls_activation_checkpointing(tmp_path):
    config = TrainConfig(model=str(tmp_path))  # any existing path: the config only checks it exists
    assert trl_arguments(config, tmp_path / "checkpoints").gradient_checkpointing is True
