"""The evaluation before RL is computed once per policy: the arms of a seed read it from a shared file, and a
file made for other settings or prompts is not read (the run evaluates and replaces it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bandpo.training import TrainConfig, train
from bandpo.training.shared_eval import evaluation_key

pytest.importorskip("trl")

SMALL = {"max_steps": 1, "prompts_per_step": 4, "num_generations": 2, "minibatches": 2, "eval_prompts": 4}


def _config(model: Path, run_dir: Path, shared: Path, method: str, **overrides) -> TrainConfig:
    settings = {**SMALL, "eval_samples": 2, "max_completion_length": 4, **overrides}
    return TrainConfig.from_preset(
        "default",
        model=str(model),
        method=method,
        seed=0,
        output_dir=str(run_dir),
        eval_before_file=str(shared),
        report_to=(),
        **settings,
    )


def test_the_arms_of_a_seed_share_one_evaluation_before_rl(tiny_model_dir: Path, tmp_path: Path) -> None:
    shared = tmp_path / "before" / "seed0.json"
    first = train(_config(tiny_model_dir, tmp_path / "clip", shared, "clip"), progress=False)
    stored = json.loads(shared.read_text())
    assert stored["key"] == evaluation_key(
        _config(tiny_model_dir, tmp_path / "x", shared, "band")
    )  # method-free
    assert stored["result"]["metrics"] == first.before.metrics
    # mark the shared result: a run that reads it (rather than sampling again) reports the mark
    stored["result"]["metrics"]["eval/mean_at_k"] = 0.123
    shared.write_text(json.dumps(stored))
    second = train(_config(tiny_model_dir, tmp_path / "band", shared, "band"), progress=False)
    assert second.before.metrics["eval/mean_at_k"] == 0.123
    before_file = json.loads((tmp_path / "band" / "eval_before.json").read_text())
    assert before_file["metrics"]["eval/mean_at_k"] == 0.123
    # other evaluation settings: not read; the run evaluates and the file becomes its own
    third = train(_config(tiny_model_dir, tmp_path / "k3", shared, "band", eval_samples=3), progress=False)
    assert third.before.k == 3 and third.before.metrics["eval/mean_at_k"] != 0.123
    assert json.loads(shared.read_text())["key"]["eval_samples"] == 3


def test_the_shared_file_is_not_a_setting_of_what_a_run_measures(tmp_path: Path) -> None:
    from bandpo.experiments.lm_results import comparable

    config = TrainConfig.from_preset("default", eval_before_file=str(tmp_path / "x.json"))
    assert "eval_before_file" not in comparable(config.to_dict())  # runs with and without it compare equal
