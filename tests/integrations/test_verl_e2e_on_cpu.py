"""Stock verl's trainer on CPU: `python -m verl.trainer.main_ppo` (Ray local, GRPO) with loss_mode=bandpo.

Three runs of verl's own entry point, 3 GRPO steps each on a tiny Qwen2 model, a byte-level tokenizer and
parquet data built here (`verl_cpu/verl_cpu_assets.py`); the assertions read verl's own logged metrics (its
`file` logger, one JSON line per step):

- `loss_mode=vanilla` (verl's GRPO loss, ε = 0.02, actor in float32): the rollout samples with every
  update's weights. verl logs |p_rollout − p_actor| of the same tokens (`training/rollout_probs_diff_max`),
  ≤ 1e-5 in float32 at every step, while `actor/pg_clipfrac` > 0 shows that each update moved the ratio
  of some tokens beyond 1 ± 0.02 (a stale rollout would differ by that much, not by 1e-5).
- `loss_mode=bandpo`, nothing else: verl finds the loss through bandpo's `verl.plugins` entry point only
  (no `_target_`, no module named anywhere in the command). verl's default bf16 mixed precision. Band-KL
  with the paper's defaults; the tiny model's peaked distributions and the learning rate make its bounds
  bind: bandpo's metrics appear, `actor/pg_loss` is finite, `actor/clip/frac` > 0.
- The same bandpo command with `VERL_USE_EXTERNAL_PLUGINS=none` fails with verl's own "Unsupported loss
  mode: bandpo", so the entry point is what made the second run work.

verl does not run on a CPU as shipped; `verl_cpu/verl_cpu_backend.py` (loaded by verl's
`VERL_USE_EXTERNAL_MODULES` hook) adds a CPU platform and an HF-sampling rollout. Each run takes 1.5-3 min
here, most of it Ray start-up. Marked `verl` and `slow`: `scripts/test.sh` runs it in `.venv-verl`.
"""

from __future__ import annotations

import importlib.util
import math
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.verl, pytest.mark.slow, pytest.mark.integration]

FIXTURE = Path(__file__).resolve().parent / "verl_cpu"
STEPS = 3
RUN_TIMEOUT_S = 900
ROLLOUT_PROBS_TOL = 1e-5  # float32 actor vs float32 HF sampler, same weights: observed ≤ 1e-6
CLIP_EPS = 0.02
# imported by verl 0.9.1's default trainer and rollout, not declared by verl (scripts/setup.sh installs them)
VERL_RUNTIME_MODULES = ("transfer_queue", "cachetools", "uvicorn", "fastapi", "zmq", "msgspec")


def _load_fixture_module(name: str):
    spec = importlib.util.spec_from_file_location(name, FIXTURE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


verl_cpu_assets = _load_fixture_module("verl_cpu_assets")
verl_cpu_run = _load_fixture_module("verl_cpu_run")


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("verl")
    missing = [name for name in VERL_RUNTIME_MODULES if importlib.util.find_spec(name) is None]
    assert not missing, f"verl's trainer imports {missing} without declaring them: run scripts/setup.sh"
    return verl_cpu_assets.build_all(tmp_path_factory.mktemp("verl_assets"))


def _main_ppo(
    assets: dict[str, Path],
    out: Path,
    overrides: list[str],
    env: dict[str, str] | None = None,
    steps: int = STEPS,
) -> subprocess.CompletedProcess[str]:
    """Run stock `python -m verl.trainer.main_ppo` with the CPU fixture; metrics go to out/metrics.jsonl."""
    return verl_cpu_run.main_ppo_on_cpu(
        model=assets["model"],
        data=assets,
        reward=FIXTURE / "verl_cpu_assets.py",
        out=out,
        steps=steps,
        learning_rate=1e-3,
        max_prompt_length=32,
        # transformers 5 would load Qwen2's tokenizer for the tiny Qwen2 model without it
        overrides=[f"actor_rollout_ref.model.tokenizer_path={assets['tokenizer']}", *overrides],
        env=env,
        timeout_s=RUN_TIMEOUT_S,
    )


_metrics = verl_cpu_run.read_step_metrics


def _tail(result: subprocess.CompletedProcess[str]) -> str:
    return (result.stdout + result.stderr)[-4000:]


def test_vanilla_grpo_rollout_samples_with_every_update(assets, tmp_path):
    out = tmp_path / "vanilla"
    result = _main_ppo(
        assets,
        out,
        [
            "actor_rollout_ref.actor.policy_loss.loss_mode=vanilla",
            f"actor_rollout_ref.actor.clip_ratio_low={CLIP_EPS}",
            f"actor_rollout_ref.actor.clip_ratio_high={CLIP_EPS}",
            "+actor_rollout_ref.actor.fsdp_config.mixed_precision.param_dtype=fp32",  # fp32 to compare log-probs
        ],
    )
    assert result.returncode == 0, _tail(result)
    steps = _metrics(out)
    assert len(steps) == STEPS, _tail(result)
    for step, metrics in enumerate(steps, start=1):
        assert math.isfinite(metrics["actor/pg_loss"]), (step, metrics["actor/pg_loss"])
        assert metrics["training/rollout_probs_diff_valid"] == 1
        assert metrics["training/rollout_probs_diff_max"] <= ROLLOUT_PROBS_TOL, (step, metrics)
        assert metrics["actor/pg_clipfrac"] > 0, (step, "the update moved no ratio beyond 1 ± ε")
        assert not any(key.startswith("actor/clip/") for key in metrics)  # no bandpo metrics in a vanilla run


def test_bandpo_loss_found_through_the_entry_point_only(assets, tmp_path):
    out = tmp_path / "bandpo"
    result = _main_ppo(assets, out, ["actor_rollout_ref.actor.policy_loss.loss_mode=bandpo"])
    assert result.returncode == 0, _tail(result)
    steps = _metrics(out)
    assert len(steps) == STEPS, _tail(result)
    expected = {"actor/clip/frac", "actor/clip/frac_up", "actor/bounds/ratio_low_mean", "actor/ratio/max"}
    for step, metrics in enumerate(steps, start=1):
        assert expected <= set(metrics), (step, sorted(metrics))
        assert math.isfinite(metrics["actor/pg_loss"]), (step, metrics["actor/pg_loss"])
        assert all(math.isfinite(value) for key, value in metrics.items() if key.startswith("actor/clip/"))
        assert 0 < metrics["actor/bounds/ratio_low_mean"] < 1 < metrics["actor/bounds/ratio_high_mean"] <= 10
    assert max(metrics["actor/clip/frac"] for metrics in steps) > 0, "Band's bounds never bound"


def test_without_the_entry_point_verl_refuses_bandpo(assets, tmp_path):
    out = tmp_path / "no_plugins"
    result = _main_ppo(
        assets,
        out,
        ["actor_rollout_ref.actor.policy_loss.loss_mode=bandpo"],
        env={"VERL_USE_EXTERNAL_PLUGINS": "none"},
        steps=1,
    )
    assert result.returncode != 0
    assert "Unsupported loss mode: bandpo" in result.stdout + result.stderr, _tail(result)
    assert _metrics(out) == []
