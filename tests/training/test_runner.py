"""Small pieces of the run (its summary, the process settings): missing metrics stay missing; the environment is restored."""

from __future__ import annotations

import os

import pytest

from bandpo import metric_names as mn
from bandpo.training.processes import offline_environment
from bandpo.training.summary import mean_present as _mean_present


def test_an_absent_metric_is_missing_not_zero():
    key = mn.clip_frac_up_bin("p0_001")
    assert _mean_present([{key: 0.5}, {}, {key: 0.25}], key) == pytest.approx(0.375)
    assert _mean_present([{}, {key: None}], key) is None
    assert _mean_present([], key) is None


def test_offline_environment_is_restored(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    with pytest.raises(RuntimeError), offline_environment():
        assert os.environ["HF_HUB_OFFLINE"] == os.environ["TRANSFORMERS_OFFLINE"] == "1"
        assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
        raise RuntimeError("the run failed")
    assert os.environ["HF_HUB_OFFLINE"] == "0"
    assert "TRANSFORMERS_OFFLINE" not in os.environ and "TOKENIZERS_PARALLELISM" not in os.environ
