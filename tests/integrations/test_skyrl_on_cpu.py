"""BandPO as a SkyRL policy loss, on CPU: registry, Ray sync, config, and the numbers against SkyRL's own losses.

Runs only in the SkyRL environment (`.venv-skyrl/bin/python -m pytest -m skyrl tests/integrations`); the main
run deselects it with `-m "not verl and not skyrl"`. SkyRL is imported inside fixtures and tests, never at module
level, so collecting this file without SkyRL works.

skyrl 0.3.0 does not import on Python 3.11 (pydantic refuses its `typing.TypedDict` fields): the `skyrl` fixture
applies the test-only `skyrl_cpu/py311/sitecustomize.py` in this process and puts its directory on PYTHONPATH
for the processes the tests start (subprocesses and Ray workers).

Tolerances: SkyRL computes its ratio in float32 (`safe_exp_delta` casts the log-ratio to float32) whatever the
input dtype, and bandpo in the input's dtype (float64 here), so the two losses and gradients agree to float32's
rounding of exp(Δ) for |Δ| up to a few units: rtol 2e-6. Clip decisions (which tokens are clipped) agree
exactly on these inputs (no token sits within 1e-6 of a bound).
"""

from __future__ import annotations

import dataclasses
import importlib.util
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

pytestmark = pytest.mark.skyrl

REPO = Path(__file__).resolve().parents[2]
PY311 = Path(__file__).resolve().parent / "skyrl_cpu" / "py311"
RTOL = 2e-6  # SkyRL's float32 ratio against bandpo's float64 one (see the module docstring)


def _with_py311_path(env: dict[str, str] | None = None) -> dict[str, str]:
    pythonpath = os.pathsep.join([str(PY311), str(REPO / "src"), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": pythonpath, **(env or {})}


def _run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, cwd=REPO, env=env, timeout=300, check=False)


@pytest.fixture(scope="module")
def skyrl() -> SimpleNamespace:
    """SkyRL's modules and bandpo's integration, imported the way a SkyRL process imports them."""
    pytest.importorskip("skyrl")
    spec = importlib.util.spec_from_file_location("_bandpo_py311_sitecustomize", PY311 / "sitecustomize.py")
    spec.loader.exec_module(importlib.util.module_from_spec(spec))  # typing.TypedDict fix, this process
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", _with_py311_path()["PYTHONPATH"])  # and every process started from here
        from skyrl.backends.skyrl_train.utils import ppo_utils
        from skyrl.backends.skyrl_train.workers import worker_utils
        from skyrl.train import config as skyrl_config

        from bandpo.integrations import skyrl as integration

        yield SimpleNamespace(
            ppo_utils=ppo_utils, config=skyrl_config, worker_utils=worker_utils, integration=integration
        )


def _batch(seed: int = 0, batch: int = 6, length: int = 9) -> SimpleNamespace:
    """Right-padded float64 micro-batch: p_old from 1e-4 to 1, ratios from ~0.05 to ~20, both advantage signs."""
    gen = torch.Generator().manual_seed(seed)
    old_logp = torch.log(torch.rand(batch, length, generator=gen, dtype=torch.float64).clamp(min=1e-4))
    logp = (old_logp + 1.2 * torch.randn(batch, length, generator=gen, dtype=torch.float64)).clamp(max=0.0)
    lengths = torch.randint(1, length + 1, (batch,), generator=gen)
    lengths[0] = length
    mask = (torch.arange(length) < lengths[:, None]).to(torch.float64)  # (B, T) 0/1, as SkyRL passes it
    seq_adv = torch.randn(batch, generator=gen, dtype=torch.float64)
    seq_adv[:2] = torch.tensor([1.5, -1.5], dtype=torch.float64)
    advantages = seq_adv[:, None].expand(batch, length).clone() * mask  # (B, T)
    rollout_logp = old_logp + 0.3 * torch.randn(batch, length, generator=gen, dtype=torch.float64)
    return SimpleNamespace(
        logp=logp, old_logp=old_logp, advantages=advantages, mask=mask, rollout_logp=rollout_logp
    )


def _loss(fn, config, data, rollout: bool = False):
    """(loss, gradient w.r.t. log_probs, metrics) of a SkyRL policy-loss function on `data`."""
    logp = data.logp.clone().requires_grad_()
    loss, metrics = fn(
        logp,
        data.old_logp,
        data.advantages,
        config=config,
        loss_mask=data.mask,
        rollout_logprobs=data.rollout_logp if rollout else None,
    )
    loss.backward()
    return loss.detach(), logp.grad, metrics


def _algorithm(skyrl, **fields):
    """SkyRL's own AlgorithmConfig (not bandpo's subclass)."""
    return skyrl.config.AlgorithmConfig(**fields)


def _bandpo_algorithm(skyrl, bandpo=None, **fields):
    return skyrl.integration.BandPOAlgorithmConfig(
        bandpo=skyrl.integration.BandPOConfig(**(bandpo or {})), **fields
    )


# --- import and registration --------------------------------------------------------------------------------


def test_import_without_skyrl_names_the_extra():
    code = "import sys\nsys.modules['skyrl'] = None\nimport bandpo.integrations.skyrl\n"
    result = _run([sys.executable, "-c", code], _with_py311_path())
    assert result.returncode != 0
    assert "ImportError" in result.stderr and "bandpo[skyrl]" in result.stderr


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="skyrl imports on Python >= 3.12")
def test_python_311_import_failure_is_one_line_naming_the_fix():
    """Without the test-only sitecustomize, skyrl 0.3.0 fails to import on 3.11; bandpo says why and what to do."""
    entries = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    pythonpath = os.pathsep.join(p for p in entries if p and Path(p).resolve() != PY311)
    env = {**os.environ, "PYTHONPATH": pythonpath}
    result = _run([sys.executable, "-c", "import bandpo.integrations.skyrl"], env)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError:") and "Python >= 3.12" in last and "TypedDict" in last


def test_nothing_else_in_bandpo_imports_skyrl():
    pattern = re.compile(r"^\s*(import|from)\s+skyrl\b", re.MULTILINE)
    allowed = {
        REPO / "src" / "bandpo" / "integrations" / "skyrl.py",
        REPO / "src" / "bandpo" / "cli" / "doctor.py",
    }
    offenders = [
        str(path.relative_to(REPO))
        for path in (REPO / "src" / "bandpo").rglob("*.py")
        if path not in allowed and pattern.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_registration_is_idempotent_and_refuses_to_shadow(skyrl):
    registry = skyrl.ppo_utils.PolicyLossRegistry
    skyrl.integration.register_bandpo_loss()
    skyrl.integration.register_bandpo_loss()  # again: a no-op, not SkyRL's "already registered"
    assert registry.get("bandpo") is skyrl.integration.compute_policy_loss_bandpo
    regular = registry.get("regular")
    with pytest.raises(ValueError, match=r"'regular'.*will not shadow"):
        skyrl.integration.register_bandpo_loss("regular")
    assert registry.get("regular") is regular

    def foreign_loss(*args, **kwargs):  # pragma: no cover - never called
        raise AssertionError

    registry.register("bandpo_foreign", foreign_loss)
    try:
        with pytest.raises(ValueError, match="will not shadow"):
            skyrl.integration.register_bandpo_loss("bandpo_foreign")
        assert registry.get("bandpo_foreign") is foreign_loss
    finally:
        registry.unregister("bandpo_foreign")


def test_a_worker_that_never_imported_bandpo_gets_the_loss_through_rays_named_actor(skyrl):
    """The Python way: register in the driver, then SkyRL's `sync_registries` (what `initialize_ray` calls);
    a Ray worker process fetches the loss from the named registry actor by name, importing bandpo only then."""
    import ray

    skyrl.integration.register_bandpo_loss()
    data = _batch(seed=1)
    config = _algorithm(
        skyrl, policy_loss_type="bandpo", clip_ratio_c=10.0
    )  # SkyRL's class: no bandpo import
    expected, _, _ = _loss(skyrl.integration.compute_policy_loss_bandpo, config, data)

    def in_worker(config, data):
        import sys

        before = "bandpo" in sys.modules
        from skyrl.backends.skyrl_train.utils.ppo_utils import PolicyLossRegistry

        fn = PolicyLossRegistry.get("bandpo")
        loss, metrics = fn(data.logp, data.old_logp, data.advantages, config=config, loss_mask=data.mask)
        return before, fn.__module__, float(loss), metrics["bandpo/bounds/ratio_high_mean"]

    ray.init(
        num_cpus=1,
        include_dashboard=False,
        runtime_env={"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}},
    )
    try:
        skyrl.ppo_utils.sync_registries()
        before, module, loss, high_mean = ray.get(ray.remote(in_worker).remote(config, data))
    finally:
        ray.shutdown()
    assert before is False, "the worker had bandpo imported before fetching the loss"
    assert module == "bandpo.integrations.skyrl"
    assert loss == pytest.approx(float(expected), rel=1e-12)
    assert high_mean > 1.0


# --- the numbers: SkyRL's own losses where they coincide ----------------------------------------------------


@pytest.mark.parametrize("rollout", [False, True], ids=["no_correction", "token_tis"])
def test_clip_without_dual_clip_is_skyrls_regular_loss(skyrl, rollout):
    """method=clip with SkyRL's eps_clip_low/high and dual-clip off is `regular`, off-policy correction included."""
    correction = {"tis_ratio_type": "token", "token_tis_ratio_clip_high": 1.5} if rollout else {}
    off_policy = skyrl.config.OffPolicyCorrectionConfig(**correction)
    data = _batch(seed=2)
    regular = _algorithm(
        skyrl,
        policy_loss_type="regular",
        eps_clip_low=0.2,
        eps_clip_high=0.28,
        off_policy_correction=off_policy,
    )
    ours = _bandpo_algorithm(
        skyrl,
        {"method": "clip", "eps_low": 0.2, "eps_high": 0.28, "dual_clip_c": math.inf},
        off_policy_correction=off_policy,
    )
    loss, grad, metrics = _loss(skyrl.integration.compute_policy_loss_bandpo, ours, data, rollout)
    ref_loss, ref_grad, ref_metrics = _loss(skyrl.ppo_utils.ppo_policy_loss, regular, data, rollout)
    torch.testing.assert_close(loss, ref_loss, rtol=RTOL, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=RTOL, atol=1e-12)
    assert (
        metrics["clip_ratio"] == pytest.approx(ref_metrics["clip_ratio"], abs=1e-7)
        and metrics["clip_ratio"] > 0
    )
    for key, value in ref_metrics.items():  # the off-policy correction's own metrics, unchanged
        assert metrics[key] == pytest.approx(value, rel=1e-6), key
    if rollout:
        assert "tis_token_clip_high_ratio" in metrics


def test_clip_with_clip_ratio_c_is_skyrls_dual_clip_loss(skyrl):
    data = _batch(seed=3)
    data.logp[1, :3] = data.old_logp[1, :3] + 2.5  # row 1 has A < 0: ratio e^2.5 > c = 3, dual-clip binds
    dual = _algorithm(
        skyrl, policy_loss_type="dual_clip", eps_clip_low=0.2, eps_clip_high=0.2, clip_ratio_c=3.0
    )
    ours = _bandpo_algorithm(skyrl, {"method": "clip", "eps_low": 0.2, "eps_high": 0.2}, clip_ratio_c=3.0)
    loss, grad, metrics = _loss(skyrl.integration.compute_policy_loss_bandpo, ours, data)
    ref_loss, ref_grad, _ = _loss(skyrl.ppo_utils.ppo_policy_loss, dual, data)
    torch.testing.assert_close(loss, ref_loss, rtol=RTOL, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=RTOL, atol=1e-12)
    assert metrics["bandpo/" + mn.CLIP_FRAC_DUAL] > 0  # the dual-clip path was exercised


def _binary_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Exact two-point KL(p || q) in float64 (DPPO's binary KL without its 1e-8 guards)."""
    return p * (p.log() - q.log()) + (1 - p) * (torch.log1p(-p) - torch.log1p(-q))


@pytest.mark.parametrize("divergence", ["tv", "kl"])
def test_band_without_cap_and_dual_clip_has_skyrls_dppo_gradient(skyrl, divergence):
    """SkyRL's `dppo` (binary TV / KL mask, arXiv 2602.04879) as an oracle for Band-TV / Band-KL's trust region.

    DPPO keeps a token's gradient while p stays within δ of p_old on the side the advantage pushes it; Band's
    interval is that same set of ratios. With Band's cap and dual-clip off, per-token gradients agree (the loss
    values differ: DPPO zeroes a masked token's loss, the clipped surrogate keeps a constant). Tokens that sit
    on the band's edge to within the two codes' rounding (DPPO adds 1e-8 in its logs, its ratio is float32)
    may differ; they are counted, must be rare, and must really be on the edge.
    """
    delta = 0.05
    gen = torch.Generator().manual_seed(4 if divergence == "tv" else 5)
    rows, length = 64, 64
    old_logp = torch.log(torch.rand(rows, length, generator=gen, dtype=torch.float64).clamp(1e-4, 0.9999))
    logp = (old_logp + 0.6 * torch.randn(rows, length, generator=gen, dtype=torch.float64)).clamp(max=-1e-6)
    advantages = torch.randn(rows, 1, generator=gen, dtype=torch.float64).expand(rows, length).clone()
    data = SimpleNamespace(
        logp=logp,
        old_logp=old_logp,
        advantages=advantages,
        mask=torch.ones(rows, length, dtype=torch.float64),
    )
    dppo_config = _algorithm(
        skyrl,
        policy_loss_type="dppo",
        dppo=skyrl.config.DPPOConfig(dppo_type=f"binary_{divergence}", delta_low=delta, delta_high=delta),
    )
    band_config = _bandpo_algorithm(
        skyrl,
        {
            "method": "band",
            "divergence": divergence,
            "delta": delta,
            "ratio_max": math.inf,
            "dual_clip_c": math.inf,
        },
    )
    _, band_grad, _ = _loss(skyrl.integration.compute_policy_loss_bandpo, band_config, data)
    _, dppo_grad, _ = _loss(skyrl.ppo_utils.dppo_policy_loss, dppo_config, data)

    p, q = old_logp.exp(), logp.exp()
    if divergence == "kl":
        distance = _binary_kl(p, q)
        dppo_distance = p * (old_logp - logp) + (1 - p) * torch.log((1 - p + 1e-8) / (1 - q + 1e-8))
    else:
        distance = dppo_distance = (q - p).abs()
    dppo_masked, band_clipped = dppo_grad == 0, band_grad == 0
    assert dppo_masked.float().mean() > 0.2 and (~dppo_masked).float().mean() > 0.2  # both regions populated
    disagree = dppo_masked != band_clipped
    on_edge = (distance - delta).abs() <= (dppo_distance - distance).abs() + 1e-6 * delta
    assert bool(on_edge[disagree].all()), "a token away from the band's edge is masked by one loss only"
    assert int(disagree.sum()) <= 2, f"{int(disagree.sum())} of {disagree.numel()} tokens differ"
    torch.testing.assert_close(band_grad[~disagree], dppo_grad[~disagree], rtol=RTOL, atol=0.0)


@pytest.mark.parametrize(
    ("reduction", "agg"), [("token_mean", "token_mean"), ("sequence_mean", "seq_mean_token_mean")]
)
def test_prescaled_advantages_and_masked_sum_give_bandpos_aggregation(skyrl, reduction, agg):
    """SkyRL scales advantages for its `loss_reduction` and sums; the result is `bandpo.policy_loss`'s mean."""
    data = _batch(seed=6)
    scaled = skyrl.ppo_utils.apply_loss_reduction_to_advantages_minibatch(
        data.advantages,
        data.mask,
        reduction,
        micro_batch_size=data.mask.shape[0],
        max_seq_len=data.mask.shape[1],
    )
    config = _bandpo_algorithm(skyrl, {"dual_clip_c": 10.0}, loss_reduction=reduction)
    prescaled = SimpleNamespace(**{**vars(data), "advantages": scaled})
    loss, grad, _ = _loss(skyrl.integration.compute_policy_loss_bandpo, config, prescaled)
    ref_logp = data.logp.clone().requires_grad_()
    ref = bandpo.policy_loss(
        ref_logp, data.old_logp, data.advantages, data.mask.bool(), method="band", agg=agg
    )
    ref.loss.backward()
    torch.testing.assert_close(loss, ref.loss.detach(), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(grad, ref_logp.grad, rtol=1e-9, atol=1e-12)


def test_skyrls_own_config_gives_the_paper_defaults_and_clip_ratio_c(skyrl):
    """policy_loss_type=bandpo with SkyRL's AlgorithmConfig (the Python way, no subclass): Band-KL defaults,
    dual-clip c from SkyRL's clip_ratio_c."""
    data = _batch(seed=7)
    loss, _, _ = _loss(
        skyrl.integration.compute_policy_loss_bandpo, _algorithm(skyrl, clip_ratio_c=3.0), data
    )
    ref = bandpo.policy_loss(
        data.logp, data.old_logp, data.advantages, data.mask.bool(), agg="token_mean", dual_clip_c=3.0
    )
    torch.testing.assert_close(loss, ref.per_token_loss.sum(), rtol=1e-9, atol=1e-12)


def test_metrics_are_floats_named_for_skyrls_reduction(skyrl):
    data = _batch(seed=8)
    config = _bandpo_algorithm(skyrl)
    halves = [
        SimpleNamespace(**{key: value[rows] for key, value in vars(data).items()})
        for rows in (slice(0, 3), slice(3, 6))
    ]
    per_micro = [_loss(skyrl.integration.compute_policy_loss_bandpo, config, half)[2] for half in halves]
    catalogue = {
        mn.CLIP_FRAC, mn.CLIP_FRAC_UP, mn.CLIP_FRAC_DOWN, mn.CLIP_FRAC_DUAL, mn.BOUND_BINDING_FRAC,
        mn.BOUNDS_LOW_MEAN, mn.BOUNDS_HIGH_MEAN, mn.RATIO_MEAN, mn.RATIO_MAX, mn.APPROX_KL_K1, mn.APPROX_KL_K3,
        *mn.CLIP_FRAC_UP_BINS, *mn.CLIP_FRAC_DOWN_BINS,
    }  # fmt: skip
    expected = {"clip_ratio"} | {skyrl.integration.skyrl_metric_key(key) for key in catalogue}
    assert set(per_micro[0]) == expected
    assert "bandpo/ratio_max" in expected and not any(key.endswith(("_loss", "_min")) for key in expected)
    assert all(type(value) is float and math.isfinite(value) for value in per_micro[0].values())
    # SkyRL's own reduction over micro-batches: a maximum stays a maximum, fractions are averaged
    reduced = skyrl.worker_utils.reduce_metrics({key: [m[key] for m in per_micro] for key in per_micro[0]})
    assert reduced["bandpo/ratio_max"] == max(m["bandpo/ratio_max"] for m in per_micro)
    assert reduced["clip_ratio"] == pytest.approx(sum(m["clip_ratio"] for m in per_micro) / 2)


def test_bf16_log_probs_give_float32_bounds(skyrl):
    config = _bandpo_algorithm(skyrl, {"method": "clip", "eps_low": 0.05, "eps_high": 0.05})
    data = _batch(seed=9)
    loss, metrics = skyrl.integration.compute_policy_loss_bandpo(
        data.logp.to(torch.bfloat16), data.old_logp.to(torch.bfloat16), data.advantages.to(torch.bfloat16),
        config=config, loss_mask=data.mask.to(torch.bfloat16),
    )  # fmt: skip
    f32_ulp = torch.finfo(torch.float32).eps
    assert metrics["bandpo/" + mn.BOUNDS_LOW_MEAN] == pytest.approx(0.95, abs=f32_ulp)
    assert metrics["bandpo/" + mn.BOUNDS_HIGH_MEAN] == pytest.approx(1.05, abs=2 * f32_ulp)
    assert loss.dtype == torch.float32 and math.isfinite(float(loss))


# --- config: SkyRL's command line, its worker-side rebuild, refusals ----------------------------------------


def test_config_round_trip_through_the_command_line_and_the_workers_rebuild(skyrl):
    from omegaconf import OmegaConf

    cfg = skyrl.integration.BandPOSkyRLConfig.from_cli_overrides(
        [
            "trainer.algorithm.bandpo.method=band_upper",
            "trainer.algorithm.bandpo.delta=0.1",
            "trainer.algorithm.bandpo.divergence=tv",
            "trainer.algorithm.bandpo.dual_clip_c=inf",
            "trainer.algorithm.clip_ratio_c=5.0",
        ]
    )
    algorithm = cfg.trainer.algorithm
    assert algorithm.policy_loss_type == "bandpo"  # bandpo's config selects its loss by default
    assert algorithm.bandpo == skyrl.integration.BandPOConfig(
        method="band_upper", delta=0.1, divergence="tv", dual_clip_c=math.inf
    )
    method, c = skyrl.integration.resolve_loss_settings(algorithm)
    assert method == bandpo.get_method("band_upper", delta=0.1, divergence="tv") and c is None
    # what SkyRL's worker does with a loss_fn_config override (workers/worker.py): asdict -> from_dict_config
    rebuilt = type(algorithm).from_dict_config(OmegaConf.create(dataclasses.asdict(algorithm)))
    assert rebuilt == algorithm
    # and SkyRL's whole-config rebuild
    assert (
        type(cfg).from_dict_config(OmegaConf.create(dataclasses.asdict(cfg))).trainer.algorithm == algorithm
    )
    # no bandpo section set: c is SkyRL's clip_ratio_c
    plain = skyrl.integration.BandPOSkyRLConfig.from_cli_overrides(["trainer.algorithm.clip_ratio_c=5.0"])
    assert skyrl.integration.resolve_loss_settings(plain.trainer.algorithm) == (
        bandpo.get_method("band"),
        5.0,
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Widened(methods.DeclaredMethod):
    """A user method with a parameter of its own (no BandPOConfig field holds `widen`)."""

    name: ClassVar[str] = "widened"
    widen: float = param(0.1, "half-width of the fixed interval", low=0.0, high=1.0)

    def compute_bounds(self, old_logp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.full_like(old_logp, 1 - self.widen), torch.full_like(old_logp, 1 + self.widen)


def test_a_registered_methods_own_parameter_goes_through_method_options(skyrl, monkeypatch):
    monkeypatch.setattr(methods, "_REGISTRY", dict(methods._REGISTRY))
    methods.register_method("widened", Widened)
    cfg = skyrl.integration.BandPOSkyRLConfig.from_cli_overrides(
        ["trainer.algorithm.bandpo.method=widened", "trainer.algorithm.bandpo.method_options={widen: 0.25}"]
    )
    method, _ = skyrl.integration.resolve_loss_settings(cfg.trainer.algorithm)
    assert method == Widened(widen=0.25)
    with pytest.raises(ValueError, match="widen"):
        skyrl.integration.BandPOConfig(method="band", method_options={"widen": 0.2})


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("trainer.algorithm.bandpo.method=nope", r"trainer\.algorithm\.bandpo: .*valid methods"),
        ("trainer.algorithm.bandpo.delta=-1", r"trainer\.algorithm\.bandpo: .*delta"),
        ("trainer.algorithm.bandpo.method=clip trainer.algorithm.bandpo.delta=0.1", "delta"),
        ("trainer.algorithm.bandpo.lower_side=sideways", "lower_side"),
        ("trainer.algorithm.bandpo.dual_clip_c=1.0", r"trainer\.algorithm\.bandpo\.dual_clip_c"),
        ("trainer.algorithm.bandpo.delta=wide", r"trainer\.algorithm\.bandpo\.delta must be a number"),
        ("trainer.algorithm.bandpo.nope=1", r"Invalid fields \{'nope'\} for BandPOConfig"),
    ],
)
def test_bad_parameters_are_refused_naming_the_field(skyrl, override, match):
    with pytest.raises(ValueError, match=match) as info:
        skyrl.integration.BandPOSkyRLConfig.from_cli_overrides(override.split())
    assert "\n" not in str(info.value)


def test_bad_clip_ratio_c_is_refused_when_the_loss_reads_it(skyrl):
    with pytest.raises(ValueError, match=r"trainer\.algorithm\.clip_ratio_c"):
        skyrl.integration.compute_policy_loss_bandpo(
            *(lambda d: (d.logp, d.old_logp, d.advantages))(_batch()),
            config=_algorithm(skyrl, clip_ratio_c=0.5),
        )


def test_stock_command_dispatches_to_bandpo_and_refuses_a_bad_parameter_in_one_line():
    """`python -m skyrl.train.entrypoints.main_base trainer.override_entrypoint=bandpo.integrations.skyrl ...`:
    SkyRL's own main imports bandpo's and calls it; a bad setting stops there, before Ray, in one line."""
    command = [
        sys.executable,
        "-m",
        "skyrl.train.entrypoints.main_base",
        "trainer.override_entrypoint=bandpo.integrations.skyrl",
        "trainer.algorithm.bandpo.method=clip",
        "trainer.algorithm.bandpo.delta=0.1",
    ]
    result = _run(command, _with_py311_path())
    assert result.returncode == 1
    assert (
        result.stderr.strip().splitlines()[-1].startswith("bandpo (SkyRL config): trainer.algorithm.bandpo: ")
    )
    assert "delta" in result.stderr.strip().splitlines()[-1] and "Traceback" not in result.stderr
