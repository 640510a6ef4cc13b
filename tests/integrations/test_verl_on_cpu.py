"""BandPO as a stock-verl policy loss, on CPU: registry, entry point, config, numbers vs bandpo.policy_loss.

Runs only in the verl environment (`.venv-verl/bin/python -m pytest -m verl tests/integrations`); the main
run deselects it with `-m "not verl"`. verl is imported inside fixtures and tests, never at module level, so
collecting this file without verl works.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import pytest
import torch

import bandpo
from bandpo import methods
from bandpo import metric_names as mn
from bandpo.method_params import param
from bandpo.methods import DeclaredMethod

pytestmark = pytest.mark.verl

REPO = Path(__file__).resolve().parents[2]
AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")

# (method, params of BandPOPolicyLossConfig) covering every built-in method family and each config field
METHOD_CASES = {
    "band_defaults": ("band", {}),
    "band_kl_relaxed": ("band", {"delta": 0.1, "ratio_max": 5.0, "relax": True, "eps_high": 0.3}),
    "band_tv_fixed_lower": ("band", {"divergence": "tv", "lower_side": "fixed", "eps_low": 0.25}),
    "band_upper_chi2": ("band_upper", {"divergence": "chi2"}),
    "band_lower": ("band_lower", {"upper_side": None}),
    "dcpo": ("dcpo", {"ratio_max": 4.0}),
    "clip_higher": ("clip_higher", {}),
}


def _run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(args, capture_output=True, text=True, cwd=REPO, env=full_env, timeout=300)


@pytest.fixture(scope="module")
def verl_api() -> SimpleNamespace:
    import verl  # noqa: F401  (loads the verl.plugins entry points, as on every Ray worker)
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf, open_dict
    from verl.trainer.ppo import core_algos
    from verl.utils.config import omega_conf_to_dataclass

    integration = sys.modules.get("bandpo.integrations.verl")
    assert integration is not None, "import verl did not load the bandpo plugin"

    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        base = compose(
            config_name="ppo_trainer",
            overrides=[
                "actor_rollout_ref.actor.strategy=fsdp",
                "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
            ],
        )

    def actor_config(policy_loss: dict | None = None, **actor_fields):
        """ActorConfig built as verl's workers build it: hydra config -> omega_conf_to_dataclass."""
        actor = OmegaConf.create(OmegaConf.to_container(base.actor_rollout_ref.actor))
        with open_dict(actor):
            actor.policy_loss.loss_mode = "bandpo"
            if policy_loss is not None:
                actor.policy_loss._target_ = "bandpo.integrations.verl.BandPOPolicyLossConfig"
                actor.policy_loss.update(policy_loss)
            actor.update(actor_fields)
        return omega_conf_to_dataclass(actor)

    return SimpleNamespace(
        core_algos=core_algos,
        integration=integration,
        actor_config=actor_config,
    )


def _batch(seed: int = 0, batch: int = 6, length: int = 9) -> SimpleNamespace:
    """Right-padded float64 micro-batch whose tokens span p_old from 1e-4 to 1 and ratios from ~0.05 to ~20."""
    gen = torch.Generator().manual_seed(seed)
    old_logp = torch.log(torch.rand(batch, length, generator=gen, dtype=torch.float64).clamp(min=1e-4))
    logp = old_logp + 1.2 * torch.randn(batch, length, generator=gen, dtype=torch.float64)
    logp = logp.clamp(max=0.0)
    lengths = torch.randint(1, length + 1, (batch,), generator=gen)
    lengths[0] = length  # one full row
    mask = torch.arange(length) < lengths[:, None]  # (B, T) bool, right padding
    seq_adv = torch.randn(batch, generator=gen, dtype=torch.float64)
    seq_adv[:2] = torch.tensor([1.5, -1.5], dtype=torch.float64)  # both signs present
    advantages = seq_adv[:, None].expand(batch, length).clone()  # (B, T), as verl passes them
    old_logp = torch.where(mask, old_logp, 0.0)
    return SimpleNamespace(logp=logp, old_logp=old_logp, advantages=advantages, mask=mask)


def _verl_loss(verl_api, config, data, logp, agg, weights=None):
    fn = verl_api.core_algos.get_policy_loss_fn("bandpo")
    return fn(
        old_log_prob=data.old_logp,
        log_prob=logp,
        advantages=data.advantages,
        response_mask=data.mask,
        loss_agg_mode=agg,
        config=config,
        rollout_is_weights=weights,
    )


def _reference(data, logp, method, agg, dual_clip_c):
    return bandpo.policy_loss(
        logp,
        data.old_logp,
        data.advantages,
        data.mask,
        method=method,
        agg=agg.replace("-", "_"),
        dual_clip_c=dual_clip_c,
    )


# --- registration and entry point --------------------------------------------------------------------


def test_entry_point_is_declared_and_loads_the_module():
    eps = [ep for ep in importlib.metadata.entry_points(group="verl.plugins") if ep.name == "bandpo"]
    assert len(eps) == 1, "pyproject must declare [project.entry-points.'verl.plugins'] bandpo"
    assert eps[0].value == "bandpo.integrations.verl"
    module = eps[0].load()
    assert callable(module.compute_policy_loss_bandpo)


def test_import_verl_registers_the_loss_in_a_fresh_process():
    code = (
        "import importlib, sys\n"
        "import verl\n"
        "assert 'bandpo.integrations.verl' in sys.modules, 'plugin not loaded by import verl'\n"
        "from verl.trainer.ppo.core_algos import get_policy_loss_fn\n"
        "m = sys.modules['bandpo.integrations.verl']\n"
        "assert get_policy_loss_fn('bandpo') is m.compute_policy_loss_bandpo\n"
        "importlib.reload(m)\n"  # re-import is a no-op, not a refusal
        "assert get_policy_loss_fn('bandpo') is m.compute_policy_loss_bandpo\n"
        "print('registered')\n"
    )
    result = _run([sys.executable, "-c", code])
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("registered")


def test_import_without_verl_names_the_extra():
    code = "import sys\nsys.modules['verl'] = None\nimport bandpo.integrations.verl\n"
    result = _run([sys.executable, "-c", code])
    assert result.returncode != 0
    assert "ImportError" in result.stderr and "bandpo[verl]" in result.stderr


def test_nothing_else_in_bandpo_imports_verl_or_ray():
    """Only the plugin imports verl, and `bandpo doctor`, which inspects verl's registry inside its check; the
    SkyRL integration imports ray (SkyRL's driver runs on it), never verl."""
    pattern = re.compile(r"^\s*(import|from)\s+(verl|ray)\b", re.MULTILINE)
    allowed = {
        REPO / "src" / "bandpo" / "integrations" / "verl.py",
        REPO / "src" / "bandpo" / "cli" / "doctor.py",
    }
    ray_only = {REPO / "src" / "bandpo" / "integrations" / "skyrl.py"}
    offenders = [
        str(path.relative_to(REPO))
        for path in (REPO / "src" / "bandpo").rglob("*.py")
        if path not in allowed
        and any(
            match.group(2) == "verl" or path not in ray_only
            for match in pattern.finditer(path.read_text(encoding="utf-8"))
        )
    ]
    assert offenders == []


def test_refuses_to_shadow_a_builtin_verl_loss(verl_api):
    registry = verl_api.core_algos.POLICY_LOSS_REGISTRY
    vanilla = registry["vanilla"]
    with pytest.raises(ValueError, match=r"'vanilla'.*will not shadow"):
        verl_api.integration.register_bandpo_loss("vanilla")
    assert registry["vanilla"] is vanilla


def test_refuses_to_replace_another_plugins_bandpo(verl_api, monkeypatch):
    def foreign_loss(*args, **kwargs):  # pragma: no cover - never called
        raise AssertionError

    registry = verl_api.core_algos.POLICY_LOSS_REGISTRY
    monkeypatch.setitem(registry, "bandpo", foreign_loss)
    with pytest.raises(ValueError, match="will not shadow"):
        verl_api.integration.register_bandpo_loss()
    assert registry["bandpo"] is foreign_loss


def test_registration_is_idempotent(verl_api):
    verl_api.integration.register_bandpo_loss()
    verl_api.integration.register_bandpo_loss()
    assert verl_api.core_algos.get_policy_loss_fn("bandpo") is verl_api.integration.compute_policy_loss_bandpo


# --- numbers: same as bandpo.policy_loss ---------------------------------------------------------------


@pytest.mark.parametrize("agg", AGG_MODES)
@pytest.mark.parametrize("case", sorted(METHOD_CASES))
def test_loss_and_gradient_match_bandpo_policy_loss(verl_api, case, agg):
    method_name, params = METHOD_CASES[case]
    config = verl_api.actor_config({"method": method_name, **params}, clip_ratio_c=10.0, loss_agg_mode=agg)
    set_params = {key: value for key, value in params.items() if value is not None}
    method = bandpo.get_method(method_name, **set_params)
    data = _batch(seed=sorted(METHOD_CASES).index(case))

    logp = data.logp.clone().requires_grad_()
    loss, metrics = _verl_loss(verl_api, config, data, logp, agg)
    loss.backward()

    ref_logp = data.logp.clone().requires_grad_()
    ref = _reference(data, ref_logp, method, agg, 10.0)
    ref.loss.backward()

    torch.testing.assert_close(loss, ref.loss, rtol=1e-7, atol=1e-12)
    torch.testing.assert_close(logp.grad, ref_logp.grad, rtol=1e-7, atol=1e-12)
    assert logp.grad.abs().sum() > 0
    assert metrics["actor/" + mn.BOUNDS_HIGH_MEAN] == pytest.approx(ref.metrics[mn.BOUNDS_HIGH_MEAN].item())


def test_token_sum_is_the_sum_of_bandpo_per_token_losses(verl_api):
    config = verl_api.actor_config(clip_ratio_c=10.0, loss_agg_mode="token-sum")
    data = _batch(seed=3)
    loss, _ = _verl_loss(verl_api, config, data, data.logp, "token-sum")
    ref = _reference(data, data.logp, "band", "token-mean", 10.0)
    torch.testing.assert_close(loss, ref.per_token_loss.sum(), rtol=1e-9, atol=1e-12)


def test_plain_verl_policy_loss_config_gives_paper_defaults(verl_api):
    """loss_mode=bandpo without the _target_ override: Band-KL, delta 0.05, cap 10; c from clip_ratio_c."""
    config = verl_api.actor_config(None, clip_ratio_c=10.0, loss_agg_mode="seq-mean-token-mean")
    assert type(config.policy_loss).__name__ == "PolicyLossConfig"
    data = _batch(seed=4)
    loss, _ = _verl_loss(verl_api, config, data, data.logp, "seq-mean-token-mean")
    ref = _reference(data, data.logp, bandpo.get_method("band"), "seq-mean-token-mean", 10.0)
    torch.testing.assert_close(loss, ref.loss, rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("agg", (*AGG_MODES, "token-sum"))
def test_data_parallel_and_micro_batch_invariance(verl_api, agg):
    """2 ranks x uneven micro-batches with verl's global_batch_info == one full-batch bandpo.policy_loss."""
    data = _batch(seed=5, batch=6)
    config = verl_api.actor_config(clip_ratio_c=10.0, loss_agg_mode=agg)
    config.global_batch_info.update(
        dp_size=2,
        batch_num_tokens=int(data.mask.sum()),
        global_batch_size=data.mask.shape[0],
        loss_scale_factor=None,
    )
    logp = data.logp.clone().requires_grad_()
    ranks = ([slice(0, 2), slice(2, 3)], [slice(3, 5), slice(5, 6)])
    rank_losses = []
    for micro_batches in ranks:
        rank_loss = 0.0
        for rows in micro_batches:
            micro = SimpleNamespace(
                old_logp=data.old_logp[rows], advantages=data.advantages[rows], mask=data.mask[rows]
            )
            loss, _ = _verl_loss(verl_api, config, micro, logp[rows], agg)
            rank_loss = rank_loss + loss  # gradient accumulation over micro-batches
        rank_losses.append(rank_loss)
    total = sum(rank_losses) / len(ranks)  # DDP/FSDP average the gradients over ranks
    total.backward()

    ref_logp = data.logp.clone().requires_grad_()
    ref = _reference(data, ref_logp, "band", agg if agg != "token-sum" else "token-mean", 10.0)
    ref_loss = ref.per_token_loss.sum() if agg == "token-sum" else ref.loss
    ref_loss.backward()
    torch.testing.assert_close(total, ref_loss, rtol=1e-7, atol=1e-12)
    torch.testing.assert_close(logp.grad, ref_logp.grad, rtol=1e-7, atol=1e-12)


def test_clip_method_equals_verl_vanilla_loss_and_metrics(verl_api):
    """method=clip with eps 0.2/0.28 is verl's own vanilla loss: the conventions line up."""
    agg = "seq-mean-token-mean"
    data = _batch(seed=6)
    data.old_logp[1], data.logp[1] = math.log(0.01), math.log(0.5)  # row 1 has A < 0: r = 50 > c, dual-clip
    ours_config = verl_api.actor_config(
        {"method": "clip", "eps_low": 0.2, "eps_high": 0.28}, clip_ratio_c=10.0, loss_agg_mode=agg
    )
    vanilla_config = verl_api.actor_config(
        None, clip_ratio_c=10.0, loss_agg_mode=agg, clip_ratio_low=0.2, clip_ratio_high=0.28
    )

    logp = data.logp.clone().requires_grad_()
    loss, metrics = _verl_loss(verl_api, ours_config, data, logp, agg)
    loss.backward()
    vanilla_logp = data.logp.clone().requires_grad_()
    vanilla_loss, vanilla_metrics = verl_api.core_algos.compute_policy_loss_vanilla(
        data.old_logp, vanilla_logp, data.advantages, data.mask, agg, vanilla_config
    )
    vanilla_loss.backward()

    torch.testing.assert_close(loss, vanilla_loss, rtol=1e-7, atol=1e-12)
    torch.testing.assert_close(logp.grad, vanilla_logp.grad, rtol=1e-7, atol=1e-12)
    assert set(vanilla_metrics) <= set(metrics)
    for key, value in vanilla_metrics.items():
        assert metrics[key] == pytest.approx(value, rel=1e-6), key  # verl's fractions are float32
    assert metrics["actor/pg_clipfrac"] > 0 and metrics["actor/pg_clipfrac_lower"] > 0  # both paths exercised


def test_metrics_are_floats_with_catalogued_keys(verl_api):
    config = verl_api.actor_config(clip_ratio_c=10.0)
    data = _batch(seed=7)
    _, metrics = _verl_loss(verl_api, config, data, data.logp, "token-mean")
    expected = {
        "actor/" + key
        for key in (
            mn.CLIP_FRAC,
            mn.CLIP_FRAC_UP,
            mn.CLIP_FRAC_DOWN,
            mn.CLIP_FRAC_DUAL,
            mn.BOUND_BINDING_FRAC,
            mn.BOUNDS_LOW_MEAN,
            mn.BOUNDS_HIGH_MEAN,
            mn.RATIO_MEAN,
            mn.RATIO_MAX,
            mn.APPROX_KL_K1,
            mn.APPROX_KL_K3,
            *mn.CLIP_FRAC_UP_BINS,
            *mn.CLIP_FRAC_DOWN_BINS,
        )
    } | {"actor/pg_clipfrac", "actor/ppo_kl", "actor/pg_clipfrac_lower"}
    assert set(metrics) == expected
    assert all(type(value) is float and math.isfinite(value) for value in metrics.values())


def test_rollout_is_weights_multiply_the_per_token_loss(verl_api):
    agg = "seq-mean-token-mean"
    config = verl_api.actor_config(clip_ratio_c=10.0, loss_agg_mode=agg)
    data = _batch(seed=8)
    weights = (
        torch.rand(data.mask.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 0.5
    )
    loss, _ = _verl_loss(verl_api, config, data, data.logp, agg, weights=weights)
    ref = _reference(data, data.logp, "band", agg, 10.0)
    expected = bandpo.aggregate_loss(ref.per_token_loss * weights, data.mask, "seq_mean_token_mean")
    torch.testing.assert_close(loss, expected, rtol=1e-7, atol=1e-12)
    assert not torch.isclose(loss, ref.loss)


def test_dual_clip_c_comes_from_clip_ratio_c_unless_set(verl_api):
    agg = "token-mean"
    data = _batch(seed=9)
    data.logp = torch.where(data.advantages < 0, data.logp + 3.0, data.logp).clamp(
        max=0.0
    )  # ratios > 3 for A < 0
    ref3 = _reference(data, data.logp, "band", agg, 3.0)
    ref10 = _reference(data, data.logp, "band", agg, 10.0)
    ref_off = _reference(data, data.logp, "band", agg, None)
    assert ref3.metrics[mn.CLIP_FRAC_DUAL] > 0 and not torch.isclose(ref3.loss, ref10.loss)

    from_actor, _ = _verl_loss(verl_api, verl_api.actor_config({}, clip_ratio_c=3.0), data, data.logp, agg)
    from_field, _ = _verl_loss(
        verl_api, verl_api.actor_config({"dual_clip_c": 10.0}, clip_ratio_c=3.0), data, data.logp, agg
    )
    disabled, _ = _verl_loss(
        verl_api, verl_api.actor_config({"dual_clip_c": math.inf}, clip_ratio_c=3.0), data, data.logp, agg
    )
    torch.testing.assert_close(from_actor, ref3.loss)
    torch.testing.assert_close(from_field, ref10.loss)
    torch.testing.assert_close(disabled, ref_off.loss)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Widened(DeclaredMethod):
    """A user method with a parameter of its own (no BandPOPolicyLossConfig field holds `widen`)."""

    name: ClassVar[str] = "widened"
    widen: float = param(0.1, "half-width of the fixed interval", low=0.0, high=1.0)

    def compute_bounds(self, old_logp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.full_like(old_logp, 1 - self.widen), torch.full_like(old_logp, 1 + self.widen)


def test_a_registered_methods_own_parameter_is_read_from_the_config(verl_api, monkeypatch):
    """A user-registered method's parameter is set from the policy_loss mapping under its own name, or from
    method_options with the BandPOPolicyLossConfig _target_."""
    monkeypatch.setattr(methods, "_REGISTRY", dict(methods._REGISTRY))
    methods.register_method("widened", Widened)
    read = verl_api.integration.resolve_loss_settings
    method, _ = read({"policy_loss": {"method": "widened", "widen": 0.3}, "clip_ratio_c": 10.0})
    assert method == Widened(widen=0.3)
    config = verl_api.actor_config(
        {"method": "widened", "method_options": {"widen": 0.25}}, clip_ratio_c=10.0
    )
    method, c = read(config)
    assert method == Widened(widen=0.25) and c == 10.0
    with pytest.raises(ValueError, match="widen"):
        verl_api.integration.BandPOPolicyLossConfig(method="band", method_options={"widen": 0.2})


# --- config validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"loss_mode": "vanilla"}, "loss_mode"),
        ({"method": "nope"}, "valid methods"),
        ({"method": "clip", "delta": 0.1}, "delta"),
        ({"delta": -1.0}, "delta"),
        ({"lower_side": "sideways"}, "lower_side"),
        ({"dual_clip_c": 1.0}, "dual_clip_c"),
    ],
)
def test_bad_config_raises_naming_the_field(verl_api, fields, match):
    with pytest.raises(ValueError, match=match):
        verl_api.integration.BandPOPolicyLossConfig(**fields)


def test_bad_clip_ratio_c_and_missing_config_raise(verl_api):
    data = _batch(seed=10)
    with pytest.raises(ValueError, match=r"actor\.clip_ratio_c"):
        _verl_loss(verl_api, verl_api.actor_config(clip_ratio_c=1.0), data, data.logp, "token-mean")
    with pytest.raises(ValueError, match="needs the actor config"):
        _verl_loss(verl_api, None, data, data.logp, "token-mean")


# --- bf16: bounds and ratio in float32 whatever dtype arrives --------------------------------------------------


def test_bf16_inputs_give_float32_bounds_and_ratio(verl_api):
    """verl's default bf16 mixed precision hands the loss bf16 log-probs: bounds must not be rounded to bf16.

    With ε = 0.05, bf16 bounds would read 0.94921875 / 1.046875; float32 ones are 0.95 / 1.05 within 1 ulp.
    The loss and gradient equal the float32 computation on the same (bf16-representable) values.
    """
    config = verl_api.actor_config({"method": "clip", "eps_low": 0.05, "eps_high": 0.05}, clip_ratio_c=10.0)
    data = _batch(seed=11)
    old_bf16 = data.old_logp.to(torch.bfloat16)
    logp_bf16 = data.logp.to(torch.bfloat16).requires_grad_()
    loss, metrics = verl_api.core_algos.get_policy_loss_fn("bandpo")(
        old_log_prob=old_bf16,
        log_prob=logp_bf16,
        advantages=data.advantages.to(torch.bfloat16),
        response_mask=data.mask,
        loss_agg_mode="token-mean",
        config=config,
    )
    loss.backward()
    f32_ulp = torch.finfo(torch.float32).eps
    assert metrics["actor/" + mn.BOUNDS_LOW_MEAN] == pytest.approx(0.95, abs=f32_ulp)
    assert metrics["actor/" + mn.BOUNDS_HIGH_MEAN] == pytest.approx(1.05, abs=2 * f32_ulp)
    assert loss.dtype == torch.float32

    logp32 = logp_bf16.detach().float().requires_grad_()
    loss32, _ = verl_api.core_algos.get_policy_loss_fn("bandpo")(
        old_log_prob=old_bf16.float(),
        log_prob=logp32,
        advantages=data.advantages.to(torch.bfloat16).float(),
        response_mask=data.mask,
        loss_agg_mode="token-mean",
        config=config,
    )
    loss32.backward()
    torch.testing.assert_close(loss, loss32, rtol=4 * f32_ulp, atol=0.0)
    # the gradient itself is bf16 (autograd casts back to the leaf's dtype): compare it there
    torch.testing.assert_close(logp_bf16.grad, logp32.grad.to(torch.bfloat16), rtol=0.0, atol=0.0)


# --- DPPO (verl's dppo_kl / dppo_tv) is Band's region, masked ---------------------------------------------------

DPPO_DELTA = 0.05


def _dppo_batch(seed: int, rows: int = 64, length: int = 64) -> SimpleNamespace:
    """float64 tokens across p_old in [1e-4, 1) and ratios on both sides of the band, both advantage signs."""
    gen = torch.Generator().manual_seed(seed)
    old_logp = torch.log(
        torch.rand(rows, length, generator=gen, dtype=torch.float64).clamp(min=1e-4, max=0.9999)
    )
    logp = (old_logp + 0.6 * torch.randn(rows, length, generator=gen, dtype=torch.float64)).clamp(max=-1e-6)
    advantages = torch.randn(rows, 1, generator=gen, dtype=torch.float64).expand(rows, length).clone()
    mask = torch.ones(rows, length, dtype=torch.bool)
    return SimpleNamespace(old_logp=old_logp, logp=logp, advantages=advantages, mask=mask)


def _per_token_grad(fn, data, config) -> torch.Tensor:
    """d(token-sum loss)/d(log_prob): each token's loss depends only on its own log-prob."""
    logp = data.logp.clone().requires_grad_()
    loss, _ = fn(
        old_log_prob=data.old_logp,
        log_prob=logp,
        advantages=data.advantages,
        response_mask=data.mask,
        loss_agg_mode="token-sum",
        config=config,
    )
    loss.backward()
    return logp.grad


def _binary_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Exact two-point KL(p || q) in float64 (DPPO's binary KL without its 1e-8 guards)."""
    return p * (p.log() - q.log()) + (1 - p) * (torch.log1p(-p) - torch.log1p(-q))


@pytest.mark.parametrize("divergence", ["kl", "tv"])
def test_dppo_equals_band_without_cap_dual_clip_and_truncation(verl_api, divergence):
    """verl's dppo_kl / dppo_tv (an independent implementation) as an oracle for Band-KL / Band-TV.

    Settings that make the two the same objective: Band's cap off (ratio_max = inf), dual-clip off
    (dual_clip_c = inf) and DPPO's truncated importance weight off (clip_ratio_c = inf); δ = clip_ratio.
    Then per-token gradients agree within 4 ulps (float64) on every token except those that sit on the
    band's edge to within the two codes' rounding (DPPO adds 1e-8 inside its logs); such tokens are
    counted and must be rare, and each one must really be on the edge.
    """
    data = _dppo_batch(seed=3 if divergence == "kl" else 4)
    dppo_config = verl_api.actor_config(
        None,
        clip_ratio=DPPO_DELTA,
        clip_ratio_low=DPPO_DELTA,
        clip_ratio_high=DPPO_DELTA,
        clip_ratio_c=math.inf,
    )
    band_config = verl_api.actor_config(
        {
            "method": "band",
            "divergence": divergence,
            "delta": DPPO_DELTA,
            "ratio_max": math.inf,
            "dual_clip_c": math.inf,
        }
    )
    dppo_grad = _per_token_grad(
        verl_api.core_algos.get_policy_loss_fn(f"dppo_{divergence}"), data, dppo_config
    )
    band_grad = _per_token_grad(verl_api.core_algos.get_policy_loss_fn("bandpo"), data, band_config)

    p, q = data.old_logp.exp(), data.logp.exp()
    if divergence == "kl":
        distance = _binary_kl(p, q)
        dppo_distance = p * (data.old_logp - data.logp) + (1 - p) * torch.log((1 - p + 1e-8) / (1 - q + 1e-8))
    else:
        distance = dppo_distance = (q - p).abs()
    dppo_masked = dppo_grad == 0
    band_clipped = band_grad == 0
    assert dppo_masked.float().mean() > 0.2 and (~dppo_masked).float().mean() > 0.2  # both regions populated
    disagree = dppo_masked != band_clipped
    on_edge = (distance - DPPO_DELTA).abs() <= (dppo_distance - distance).abs() + 1e-9 * DPPO_DELTA
    assert bool(on_edge[disagree].all()), "a token away from the band's edge is masked by one loss only"
    assert int(disagree.sum()) <= 2, f"{int(disagree.sum())} of {disagree.numel()} tokens differ"
    ulp = torch.finfo(torch.float64).eps
    agree = ~disagree
    torch.testing.assert_close(band_grad[agree], dppo_grad[agree], rtol=4 * ulp, atol=0.0)
