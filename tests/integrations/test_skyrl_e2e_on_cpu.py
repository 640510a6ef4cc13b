"""SkyRL's own GRPO loop on CPU with policy_loss_type=bandpo: `BasePPOExp` -> `RayPPOTrainer` -> FSDP2 `PolicyWorker`.

Runs of the fixture's driver (`skyrl_cpu/skyrl_cpu_run.py`, the Python way in: `register_bandpo_loss()`,
`BandPOSkyRLConfig`, SkyRL's `validate_cfg` and `initialize_ray`), 2 GRPO steps each of a tiny Qwen2 model
(4 prompts x 4 samples, 2 mini-batches per step, lr 1e-3); the assertions read SkyRL's own logged metrics:

- `policy_loss_type=regular` (SkyRL's stock loss, ε = 0.02) through the same fixture: the loop runs, the HF
  rollout receives every update's weights (SkyRL's `policy/rollout_train_logprobs_abs_diff_max`, rollout vs
  trainer log-probs of the same tokens at each step's start, stays at float32 rounding) while the clip binds
  (`clip_ratio` > 0): the fixture works for SkyRL's own loss, so it is not what makes bandpo's work.
- `policy_loss_type=bandpo` with the paper's defaults: bandpo's metrics appear, the bounds are Band's
  (0 < mean low < 1 < mean high <= 10), they bind (`clip_ratio` > 0) and the loss is finite.
- `trainer.algorithm.bandpo.method=clip` with eps 0.05 / 0.1 and dual-clip off: the bounds the workers used
  are exactly 0.95 and 1.1 and no token is dual-clipped, so a second method's parameters reached the workers.
- The bandpo command without `register_bandpo_loss()`: SkyRL's own `validate_cfg` refuses the name.

SkyRL does not run on a CPU as shipped; `skyrl_cpu/skyrl_cpu_backend.py` lists what it replaces and why.
Each Ray run takes 1-5 min here (most of it imports and Ray start-up; docs/skyrl.md). Marked `skyrl` and `slow`:
`scripts/test.sh` runs it in `.venv-skyrl`.
"""

from __future__ import annotations

import importlib.util
import math
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.skyrl, pytest.mark.slow, pytest.mark.integration]

FIXTURE = Path(__file__).resolve().parent / "skyrl_cpu"
STEPS = 2
PROMPTS_PER_STEP = 4  # skyrl_cpu_run.run_on_cpu's train_batch_size
RUN_TIMEOUT_S = 900
ROLLOUT_LOGPROB_TOL = 1e-5  # float32 trainer vs float32 HF sampler, same weights: observed 2.4e-6
CLIP_EPS = 0.02


def _load_fixture_module(name: str):
    spec = importlib.util.spec_from_file_location(name, FIXTURE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


skyrl_cpu_assets = _load_fixture_module("skyrl_cpu_assets")
skyrl_cpu_run = _load_fixture_module("skyrl_cpu_run")
_metrics = skyrl_cpu_run.read_step_metrics


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("skyrl")
    return skyrl_cpu_assets.build_all(
        tmp_path_factory.mktemp("skyrl_assets"), train_rows=STEPS * PROMPTS_PER_STEP
    )


def _run(assets, out: Path, overrides: list[str], register: bool = True) -> subprocess.CompletedProcess[str]:
    return skyrl_cpu_run.run_on_cpu(
        assets=assets, out=out, overrides=overrides, register=register, timeout_s=RUN_TIMEOUT_S
    )


def _tail(result: subprocess.CompletedProcess[str]) -> str:
    return (result.stdout + result.stderr)[-4000:]


def _weight_updates(result: subprocess.CompletedProcess[str]) -> int:
    line = next(line for line in result.stdout.splitlines() if line.startswith("weight updates: "))
    return int(line.split(": ")[1])


def _check_loop_ran(result, steps) -> None:
    assert result.returncode == 0, _tail(result)
    assert len(steps) == STEPS, _tail(result)
    assert _weight_updates(result) == STEPS + 1  # the initial sync, then one after each step
    for step, metrics in enumerate(steps, start=1):
        assert math.isfinite(metrics["policy/policy_loss"]), (step, metrics["policy/policy_loss"])
        assert metrics["policy/rollout_train_logprobs_abs_diff_max"] <= ROLLOUT_LOGPROB_TOL, (step, metrics)


def test_stock_regular_loss_runs_through_the_fixture(assets, tmp_path):
    out = tmp_path / "regular"
    result = _run(
        assets,
        out,
        [
            "trainer.algorithm.policy_loss_type=regular",
            f"trainer.algorithm.eps_clip_low={CLIP_EPS}",
            f"trainer.algorithm.eps_clip_high={CLIP_EPS}",
        ],
    )
    steps = _metrics(out)
    _check_loop_ran(result, steps)
    assert max(metrics["policy/loss_metrics/clip_ratio"] for metrics in steps) > 0, "no ratio left 1 ± ε"
    assert not any(key.startswith("policy/loss_metrics/bandpo/") for metrics in steps for key in metrics)


def test_bandpo_loss_runs_in_skyrls_loop_and_its_bounds_bind(assets, tmp_path):
    out = tmp_path / "bandpo"
    result = _run(assets, out, ["trainer.algorithm.policy_loss_type=bandpo"])
    steps = _metrics(out)
    _check_loop_ran(result, steps)
    prefix = "policy/loss_metrics/bandpo/"
    for step, metrics in enumerate(steps, start=1):
        assert {prefix + "clip/frac_up", prefix + "bounds/ratio_low_mean", prefix + "ratio_max"} <= set(
            metrics
        )
        assert (
            0
            < metrics[prefix + "bounds/ratio_low_mean"]
            < 1
            < metrics[prefix + "bounds/ratio_high_mean"]
            <= 10
        )
        assert metrics["policy/loss_metrics/clip_ratio"] == pytest.approx(metrics[prefix + "clip/frac"]), step
    assert max(metrics["policy/loss_metrics/clip_ratio"] for metrics in steps) > 0, (
        "Band's bounds never bound"
    )


def test_a_second_methods_parameters_reach_the_workers(assets, tmp_path):
    out = tmp_path / "clip"
    overrides = [
        "trainer.algorithm.policy_loss_type=bandpo",
        "trainer.algorithm.bandpo.method=clip",
        "trainer.algorithm.bandpo.eps_low=0.05",
        "trainer.algorithm.bandpo.eps_high=0.1",
        "trainer.algorithm.bandpo.dual_clip_c=inf",
    ]
    result = _run(assets, out, overrides)
    steps = _metrics(out)
    _check_loop_ran(result, steps)
    prefix = "policy/loss_metrics/bandpo/"
    for step, metrics in enumerate(steps, start=1):  # float32 bounds, averaged over micro-batches
        assert metrics[prefix + "bounds/ratio_low_mean"] == pytest.approx(0.95, abs=1e-6), step
        assert metrics[prefix + "bounds/ratio_high_mean"] == pytest.approx(1.1, abs=1e-6), step
        assert metrics[prefix + "clip/frac_dual"] == 0.0, step
    assert max(metrics["policy/loss_metrics/clip_ratio"] for metrics in steps) > 0


def test_without_registration_skyrl_refuses_bandpo(assets, tmp_path):
    out = tmp_path / "unregistered"
    result = _run(assets, out, ["trainer.algorithm.policy_loss_type=bandpo"], register=False)
    assert result.returncode != 0
    assert "invalid policy_loss_type: bandpo" in result.stdout + result.stderr, _tail(result)
    assert _metrics(out) == []
