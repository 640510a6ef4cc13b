"""The paper recipe of examples/verl against stock verl 0.9.1, on CPU and offline: every key it sets exists in
verl, both arms compose and validate, the verifier is the paper's (verl's own `math_dapo` as the oracle), and
the data preparation builds the expected files from tiny local sources.

Runs only in the verl environment (`.venv-verl/bin/python -m pytest -m verl ...`); verl is imported inside
fixtures and tests, never at module level.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib.util
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import torch

import bandpo
from bandpo.integrations import math_dapo

pytestmark = pytest.mark.verl

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "verl"
CONFIG_DIR = EXAMPLES / "config"
CONFIGS = sorted(str(path.relative_to(CONFIG_DIR)) for path in CONFIG_DIR.rglob("*.yaml"))
PAPER_MODELS = {
    "qwen2.5-3b-instruct": "Qwen/Qwen2.5-3B-Instruct",
    "r1-distill-qwen-1.5b": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
    "r1-distill-qwen-7b": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
    "r1-distill-llama-8b": "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
}

# what run.sh adds on the command line (data, reward), with placeholder paths
RUN_OVERRIDES = (
    "data.train_files=['/data/dapo_math_17k.parquet','/data/math_level3to5.parquet']",
    "data.val_files=['/data/aime24.parquet','/data/aime25.parquet','/data/amc23.parquet']",
    f"reward.custom_reward_function.path={EXAMPLES / 'reward.py'}",
    "reward.custom_reward_function.name=compute_score",
)

LOSS = "actor_rollout_ref.actor.policy_loss."
ACTOR = "actor_rollout_ref.actor."
ROLLOUT = "actor_rollout_ref.rollout."
REF = "actor_rollout_ref.ref."

# Every arm of the paper's scripts (OpenMOSS/BandPO baselinescripts/<model>/), written down from reading them:
# arm -> (the arm it is derived from, the resolved keys that differ from it). The compose test checks that
# these and only these keys differ, so a setting lost on the way to verl's config fails there.
ARMS: dict[str, tuple[str | None, dict[str, object]]] = {
    "grpo": (
        None,
        {LOSS + "loss_mode": "vanilla", ACTOR + "clip_ratio_low": 0.2, ACTOR + "clip_ratio_high": 0.2},
    ),
    "clip_higher": ("grpo", {ACTOR + "clip_ratio_high": 0.28}),
    "bandpo": (
        None,
        {
            LOSS + "_target_": "bandpo.integrations.verl.BandPOPolicyLossConfig",
            LOSS + "loss_mode": "bandpo",
            LOSS + "method": "band",
            LOSS + "divergence": "kl",
            LOSS + "delta": 0.05,
            LOSS + "ratio_max": 10.0,
            LOSS + "relax": False,
        },
    ),
    "bandpo_tv": ("bandpo", {LOSS + "divergence": "tv"}),
    "bandpo_chi2": ("bandpo", {LOSS + "divergence": "chi2"}),
    "bandpo_relax": ("bandpo", {LOSS + "relax": True, LOSS + "eps_low": 0.2, LOSS + "eps_high": 0.28}),
    "dcpo": (
        "bandpo",
        {
            LOSS + "method": "dcpo",
            LOSS + "divergence": None,
            LOSS + "delta": None,
            LOSS + "relax": None,
            LOSS + "eps_low": 0.16,
            LOSS + "eps_high": 0.20,
        },
    ),
    "dapo": (
        "clip_higher",
        {
            "data.max_response_length": 4608,
            ACTOR + "loss_agg_mode": "token-mean",
            ACTOR + "use_kl_loss": False,
            ACTOR + "kl_loss_coef": 0.0,
            ACTOR + "optim.lr_warmup_steps": 10,
            ACTOR + "optim.weight_decay": 0.1,
            ACTOR + "use_dynamic_bsz": True,
            ACTOR + "ppo_max_token_len_per_gpu": 5632,
            ROLLOUT + "max_num_batched_tokens": 5632,
            ROLLOUT + "log_prob_use_dynamic_bsz": True,
            ROLLOUT + "log_prob_max_token_len_per_gpu": 5632,
            REF + "log_prob_use_dynamic_bsz": True,
            REF + "log_prob_max_token_len_per_gpu": 5632,
            "algorithm.filter_groups.enable": True,
            "algorithm.filter_groups.metric": "acc",
            "algorithm.kl_ctrl.kl_coef": 0.0,
            "reward.reward_manager.name": "dapo",
            "reward.reward_kwargs.overlong_buffer_cfg.enable": True,
            "reward.reward_kwargs.overlong_buffer_cfg.len": 512,
            "reward.reward_kwargs.overlong_buffer_cfg.penalty_factor": 1.0,
            "reward.reward_kwargs.overlong_buffer_cfg.log": False,
            "reward.reward_kwargs.max_resp_len": 4608,
            "trainer.total_epochs": 20,
            # verl's own keys that interpolate the ones above
            ROLLOUT + "response_length": 4608,
            "distillation.teacher_models.teacher_model.inference.response_length": 4608,
            "critic.loss_agg_mode": "token-mean",
            "critic.use_dynamic_bsz": True,
        },
    ),
    "bandpo_filter_groups": (
        "bandpo",
        {
            "algorithm.filter_groups.enable": True,
            "algorithm.filter_groups.metric": "acc",
            "trainer.total_epochs": 24,
        },
    ),
}

# arm -> the bandpo method (name, parameters) its loss must equal, and the aggregation: verl's `vanilla` for
# grpo/clip_higher/dapo (equal to bandpo's `clip` with the same epsilons), bandpo's loss for the others
ARM_LOSSES = {
    "grpo": ("clip", {"eps_low": 0.2, "eps_high": 0.2}, "seq-mean-token-mean"),
    "clip_higher": ("clip", {"eps_low": 0.2, "eps_high": 0.28}, "seq-mean-token-mean"),
    "dapo": ("clip", {"eps_low": 0.2, "eps_high": 0.28}, "token-mean"),
    "dcpo": ("dcpo", {"eps_low": 0.16, "eps_high": 0.20, "ratio_max": 10.0}, "seq-mean-token-mean"),
    "bandpo": ("band", {"divergence": "kl", "delta": 0.05, "ratio_max": 10.0}, "seq-mean-token-mean"),
    "bandpo_tv": ("band", {"divergence": "tv", "delta": 0.05, "ratio_max": 10.0}, "seq-mean-token-mean"),
    "bandpo_chi2": ("band", {"divergence": "chi2", "delta": 0.05, "ratio_max": 10.0}, "seq-mean-token-mean"),
    "bandpo_relax": (
        "band",
        {"divergence": "kl", "delta": 0.05, "relax": True, "eps_low": 0.2, "eps_high": 0.28},
        "seq-mean-token-mean",
    ),
    "bandpo_filter_groups": ("band", {"divergence": "kl", "delta": 0.05}, "seq-mean-token-mean"),
}
FILTERING_ARMS = ("dapo", "bandpo_filter_groups")
VERL_LOSS_ARMS = ("grpo", "clip_higher", "dapo")  # verl's own `vanilla`; the other arms use loss_mode=bandpo


def _load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_script(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHON": sys.executable, **env}
    return subprocess.run(
        ["bash", str(EXAMPLES / "run.sh"), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=full_env,
        timeout=300,
    )


@pytest.fixture(scope="module")
def recipe() -> SimpleNamespace:
    import verl  # noqa: F401  (loads the bandpo plugin, as on every Ray worker)
    from hydra import compose, initialize_config_dir, initialize_config_module
    from omegaconf import OmegaConf

    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        stock = compose(config_name="ppo_trainer")

    @functools.cache
    def compose_arm(config_name: str, overrides: tuple[str, ...] = RUN_OVERRIDES):
        """The composed config of a recipe file (cached: callers read it, never change it)."""
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
            return compose(config_name=config_name, overrides=list(overrides))

    # plain nested dicts, interpolations and "???" left as they are
    stock_keys = OmegaConf.to_container(stock, resolve=False)
    return SimpleNamespace(stock=stock_keys, compose=compose_arm, OmegaConf=OmegaConf)


# --- every key the recipe sets exists in stock verl -------------------------------------------------------


def _leaf_keys(node, prefix: str = ""):
    """Dotted paths of the leaves of a plain YAML mapping (lists count as leaves)."""
    for key, value in node.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            yield from _leaf_keys(value, path)
        else:
            yield path


# keys verl reads without declaring them: `reward.reward_kwargs` is read with .get by verl's `dapo` reward
# manager (verl/experimental/reward_loop/reward_manager/dapo.py); a test builds that manager from the config
UNDECLARED_BUT_READ = ("reward.reward_kwargs.",)


def _unknown_keys(yaml_path: Path, stock) -> list[str]:
    """Keys set in a recipe file that stock verl's ppo_trainer does not have.

    Hydra merges a config file over ppo_trainer without complaint when a key is new, and verl's plain
    sections (data, trainer, ...) keep it unread: a key renamed by a verl upgrade would be ignored silently.
    The extra fields of bandpo's own policy-loss config (selected by its `_target_`) are allowed, and so are
    the keys of `UNDECLARED_BUT_READ`.
    """
    import yaml

    from bandpo.integrations.verl import BandPOPolicyLossConfig

    raw = yaml.safe_load(yaml_path.read_text())
    ours = {field.name for field in dataclasses.fields(BandPOPolicyLossConfig)}
    missing = []
    for key in _leaf_keys({k: v for k, v in raw.items() if k not in ("hydra", "defaults")}):
        head, _, leaf = key.rpartition(".")
        if head == "actor_rollout_ref.actor.policy_loss" and leaf in ours:
            continue
        if key.startswith(UNDECLARED_BUT_READ):
            continue
        if not _has_key(stock, key):
            missing.append(key)
    return missing


def _has_key(config: dict, dotted: str) -> bool:
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


@pytest.mark.parametrize("name", CONFIGS)
def test_every_key_the_recipe_sets_exists_in_stock_verl(recipe, name):
    assert _unknown_keys(CONFIG_DIR / name, recipe.stock) == []


def test_the_key_check_catches_a_renamed_key(recipe, tmp_path):
    text = (CONFIG_DIR / "math_common.yaml").read_text()
    renamed = text.replace("  shuffle: true", "  shuffle_data: true").replace(
        "    n: 16", "    num_samples: 16"
    )
    assert renamed != text
    (tmp_path / "math_common.yaml").write_text(renamed)
    assert sorted(_unknown_keys(tmp_path / "math_common.yaml", recipe.stock)) == [
        "actor_rollout_ref.rollout.num_samples",
        "data.shuffle_data",
    ]


# --- the arms -----------------------------------------------------------------------------------------------


def _flat(node, prefix: str = "") -> dict[str, object]:
    """{dotted key: value} of a plain nested dict (lists are values)."""
    out: dict[str, object] = {}
    for key, value in node.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(_flat(value, path))
        else:
            out[path] = value
    return out


def _arm(recipe, arm: str, *overrides: str):
    """The arm's composed config, with run.sh's overrides and one experiment name for every arm."""
    return recipe.compose(f"{arm}_math", (*RUN_OVERRIDES, "trainer.experiment_name=same", *overrides))


_RESOLVED: dict[tuple[str, ...], dict[str, object]] = {}


def _resolved(recipe, arm: str, *overrides: str) -> dict[str, object]:
    """The arm's config as verl resolves it, flattened (cached: callers read it, never change it)."""
    key = (arm, *overrides)
    if key not in _RESOLVED:
        _RESOLVED[key] = _flat(recipe.OmegaConf.to_container(_arm(recipe, arm, *overrides), resolve=True))
    return _RESOLVED[key]


_MISSING = "<missing>"


def _differences(base: dict[str, object], other: dict[str, object]) -> dict[str, object]:
    """{key: other's value} for every key whose value differs (or that only one side has)."""
    return {
        key: other.get(key, _MISSING)
        for key in base.keys() | other.keys()
        if base.get(key, _MISSING) != other.get(key, _MISSING)
    }


def test_every_arm_is_a_config_file_and_run_script_choice():
    files = {path.name.removesuffix("_math.yaml") for path in CONFIG_DIR.glob("*_math.yaml")}
    assert files == set(ARMS) == set(ARM_LOSSES)
    listed = _run_script("no_such_arm").stderr
    assert listed.count("|") == len(ARMS) - 1 and all(
        f"{arm}|" in listed or f"{arm}}}" in listed for arm in ARMS
    )


@pytest.mark.parametrize("arm", sorted(ARMS))
def test_each_arm_differs_from_its_parent_exactly_as_the_papers_scripts_do(recipe, arm):
    parent, changes = ARMS[arm]
    resolved = _resolved(recipe, arm)
    if parent is None:  # grpo and bandpo: they set their loss, and differ from each other only in policy_loss
        assert {key: resolved[key] for key in changes} == changes
        other = _resolved(recipe, "bandpo" if arm == "grpo" else "grpo")
        assert [key for key in _differences(other, resolved) if not key.startswith(LOSS)] == []
    else:
        assert _differences(_resolved(recipe, parent), resolved) == changes


def test_the_shared_settings_are_the_papers(recipe):
    """The settings of the paper's scripts (docs/verl.md, "Example: the paper's math runs"), which every arm
    but `dapo` keeps (the arm table above says what each arm changes)."""
    band = _resolved(recipe, "bandpo")
    expected = {
        "data.train_batch_size": 256,
        "data.max_prompt_length": 1024,
        "data.max_response_length": 4096,
        "data.shuffle": True,
        "data.seed": 1,
        ROLLOUT + "n": 16,
        ROLLOUT + "temperature": 1.0,
        ROLLOUT + "top_p": 1.0,
        ROLLOUT + "top_k": -1,
        ROLLOUT + "val_kwargs.n": 32,
        ROLLOUT + "calculate_log_probs": False,
        ACTOR + "ppo_mini_batch_size": 64,
        ACTOR + "ppo_micro_batch_size_per_gpu": 8,
        ACTOR + "ppo_epochs": 1,
        ACTOR + "optim.lr": 1e-6,
        ACTOR + "use_kl_loss": True,
        ACTOR + "kl_loss_type": "low_var_kl",
        ACTOR + "kl_loss_coef": 0.001,
        ACTOR + "entropy_coeff": 0,
        ACTOR + "clip_ratio_c": 10.0,
        ACTOR + "loss_agg_mode": "seq-mean-token-mean",
        "algorithm.use_kl_in_reward": False,
        "trainer.total_epochs": 10,
        "trainer.test_freq": 5,
        "trainer.save_freq": 10,
        "actor_rollout_ref.model.path": "Qwen/Qwen2.5-3B-Instruct",
    }
    assert {key: band[key] for key in expected} == expected


@pytest.mark.parametrize("arm", sorted(ARMS))
def test_each_arm_composes_validates_and_builds_verl_configs(recipe, arm):
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import omega_conf_to_dataclass, validate_config

    cfg = copy.deepcopy(
        _arm(recipe, arm)
    )  # validate_config may write to it; the cached one stays as composed
    validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    # built as verl's workers build them: an unknown or renamed field raises here, and so does a bandpo
    # parameter its method does not take (BandPOPolicyLossConfig.__post_init__)
    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    rollout = omega_conf_to_dataclass(cfg.actor_rollout_ref.rollout)
    algorithm = omega_conf_to_dataclass(cfg.algorithm)
    agg = ARM_LOSSES[arm][2]
    assert actor.policy_loss.loss_mode == ("vanilla" if arm in VERL_LOSS_ARMS else "bandpo")
    assert actor.loss_agg_mode == agg and actor.clip_ratio_c == 10.0
    assert rollout.calculate_log_probs is False and rollout.n == 16 and rollout.val_kwargs.n == 32
    assert algorithm.adv_estimator == "grpo" and algorithm.norm_adv_by_std_in_grpo is True
    assert algorithm.filter_groups.enable is (arm in FILTERING_ARMS)
    assert cfg.data.seed == 1 and cfg.actor_rollout_ref.model.path == "Qwen/Qwen2.5-3B-Instruct"
    assert cfg.trainer.project_name == "bandpo_math_qwen2.5-3b-instruct"


@pytest.mark.parametrize("arm", sorted(ARMS))
def test_each_arm_drives_verl_to_the_loss_of_its_method(recipe, arm):
    """The loss verl computes from the arm's resolved actor config equals bandpo.policy_loss with the method
    the paper's script names, within float64 rounding (verl's `vanilla` for the fixed-clip arms)."""
    from verl.trainer.ppo import core_algos
    from verl.utils.config import omega_conf_to_dataclass

    config = omega_conf_to_dataclass(_arm(recipe, arm).actor_rollout_ref.actor)
    gen = torch.Generator().manual_seed(11)
    old_logp = torch.log(torch.rand(4, 7, generator=gen, dtype=torch.float64).clamp(min=1e-4))
    logp = (old_logp + torch.randn(4, 7, generator=gen, dtype=torch.float64)).clamp(max=0.0)
    advantages = torch.randn(4, 1, generator=gen, dtype=torch.float64).expand(4, 7).clone()
    mask = torch.ones(4, 7, dtype=torch.bool)
    mask[2, 4:] = False  # uneven lengths: seq-mean-token-mean and token-mean differ
    loss, _ = core_algos.get_policy_loss_fn(config.policy_loss.loss_mode)(
        old_log_prob=old_logp,
        log_prob=logp,
        advantages=advantages,
        response_mask=mask,
        loss_agg_mode=config.loss_agg_mode,
        config=config,
    )
    name, params, agg = ARM_LOSSES[arm]
    expected = _reference_loss(bandpo.get_method(name, **params), agg, logp, old_logp, advantages, mask)
    torch.testing.assert_close(loss, expected, rtol=1e-7, atol=1e-12)
    # these inputs tell the arms' losses apart, so the equality above singles out the arm's method
    for other_name, other_params, other_agg in ARM_LOSSES.values():
        other_method = bandpo.get_method(other_name, **other_params)
        if (other_method, other_agg) != (bandpo.get_method(name, **params), agg):
            other = _reference_loss(other_method, other_agg, logp, old_logp, advantages, mask)
            assert not torch.allclose(loss, other, rtol=1e-6, atol=0), (arm, other_name, other_params)


def _reference_loss(method, agg: str, logp, old_logp, advantages, mask):
    """bandpo.policy_loss with the paper's dual-clip c = 10 and verl's aggregation `agg`."""
    result = bandpo.policy_loss(
        logp, old_logp, advantages, mask, method=method, agg=agg.replace("-", "_"), dual_clip_c=10.0
    )
    return result.loss


@pytest.mark.parametrize("arm", sorted(ARMS))
def test_dynamic_sampling_reaches_verls_replay_buffer_only_in_the_filtering_arms(recipe, arm):
    """verl's own v1 trainer code resolves the group filter from the arm's config: `acc`, the field our
    reward returns, for dapo and bandpo_filter_groups; off elsewhere."""
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    cfg = _arm(recipe, arm)
    metric = PPOTrainer._resolve_filter_groups_metric(SimpleNamespace(config=cfg))
    assert metric == ("acc" if arm in FILTERING_ARMS else None)


def test_the_dapo_arm_builds_verls_dapo_reward_manager_with_the_overlong_penalty(recipe):
    from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls
    from verl.trainer.ppo.reward import get_custom_reward_fn

    cfg = _arm(recipe, "dapo")
    manager_cls = get_reward_manager_cls(cfg.reward.reward_manager.name)
    manager = manager_cls(cfg, tokenizer=None, compute_score=get_custom_reward_fn(cfg))
    assert type(manager).__name__ == "DAPORewardManager"
    assert manager.overlong_buffer_cfg.enable is True and manager.overlong_buffer_cfg.len == 512
    assert manager.overlong_buffer_cfg.penalty_factor == 1.0 and manager.max_resp_len == 4608
    assert manager.compute_score(data_source="amc23", solution_str="Answer: 34", ground_truth=34.0)["acc"]


def test_the_data_order_is_seeded_as_verl_reads_the_seed(recipe):
    """verl's own sampler, built from the recipe's data config, shuffles with seed 1: its first epoch is the
    order torch's RandomSampler gives with a generator seeded 1 (the paper's verl). Stock verl's config sets
    no seed, and its generator then keeps torch's fixed default seed: another order."""
    from torch.utils.data import RandomSampler
    from verl.trainer.ppo.utils import create_rl_sampler

    prompts = list(range(200))

    def order(data_config) -> list[int]:
        return list(create_rl_sampler(data_config, prompts))

    data = _arm(recipe, "bandpo").data
    assert data.seed == 1
    papers = list(RandomSampler(prompts, generator=torch.Generator().manual_seed(1)))
    assert order(data) == papers
    stock = recipe.OmegaConf.create(recipe.stock["data"])
    assert stock.seed is None and order(stock) != papers


@pytest.mark.parametrize("model", sorted(PAPER_MODELS))
def test_one_override_selects_each_of_the_papers_models(recipe, model):
    """`paper_model=<name>` sets the policy and the project name (and the verl keys that interpolate them,
    such as the checkpoint folder), nothing else: the paper ran the same settings on its four models."""
    chosen = _resolved(recipe, "bandpo", f"paper_model={model}")
    assert chosen["actor_rollout_ref.model.path"] == PAPER_MODELS[model]
    assert chosen["trainer.project_name"] == f"bandpo_math_{model}"
    changed = _differences(_resolved(recipe, "bandpo"), chosen)  # with verl's keys that interpolate them
    assert all(value == PAPER_MODELS[model] or f"bandpo_math_{model}" in value for value in changed.values())


# --- run.sh ------------------------------------------------------------------------------------------------


def test_run_script_composes_a_valid_job_with_the_paper_verifier():
    """Through verl's real main_ppo: a BandPO arm on the authors' data files, one of the paper's other models."""
    result = _run_script(
        "bandpo_tv",
        "paper_model=r1-distill-llama-8b",
        "--cfg",
        "job",
        DATA_DIR="/data/official",
        DATA_LAYOUT="official",
        NNODES="2",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout
    assert "_target_: bandpo.integrations.verl.BandPOPolicyLossConfig" in text
    assert "loss_mode: bandpo" in text and "divergence: tv" in text and "nnodes: 2" in text
    assert "/data/official/dapo_processed/modified/DAPO-Math-17k-Processed_modified.parquet" in text
    assert "/data/official/math-500/train/train_L3-5.parquet" in text
    assert "/data/official/amc2023_dapo/test.parquet" in text
    assert "path: deepseek-ai/DeepSeek-R1-Distill-Llama-8B" in text and "seed: 1" in text
    assert "name: compute_score\n" in text and "calculate_log_probs: false" in text


def test_run_script_selects_the_lenient_verifier():
    result = _run_script(
        "grpo", "--cfg", "job", VERIFIER="lenient", DATA_DIR="/data/ours", MODEL_PATH="/m/qwen"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "name: compute_score_lenient" in result.stdout and "loss_mode: vanilla" in result.stdout
    assert "/data/ours/dapo_math_17k.parquet" in result.stdout and "/data/ours/amc23.parquet" in result.stdout
    assert "path: /m/qwen" in result.stdout  # MODEL_PATH: a local copy of the weights


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("ppo",), {}, "unknown arm 'ppo'"),
        (("grpo",), {"VERIFIER": "math"}, "VERIFIER='math' is unknown"),
        (("grpo",), {"DATA_LAYOUT": "hf"}, "DATA_LAYOUT='hf' is unknown"),
    ],
)
def test_run_script_rejects_bad_choices(args, env, message):
    result = _run_script(*args, **env)
    assert result.returncode == 2
    assert message in result.stderr


def test_run_script_needs_bandpo_for_every_arm(tmp_path):
    python_without_bandpo = tmp_path / "python"
    python_without_bandpo.write_text("#!/bin/sh\nexit 1\n")
    python_without_bandpo.chmod(0o755)
    result = _run_script("grpo", PYTHON=str(python_without_bandpo))
    assert result.returncode == 2
    assert "reward.py needs bandpo" in result.stderr


@pytest.mark.parametrize("arm", sorted(ARMS))
def test_run_script_checks_the_verl_plugin_for_exactly_the_bandpo_loss_arms(tmp_path, arm):
    """An interpreter with bandpo's verifier but a failing plugin check: the bandpo-loss arms stop with exit
    2 before verl starts; the arms on verl's own loss go on to main_ppo (here: this stand-in, exit 7)."""
    python = tmp_path / "python"
    python.write_text(
        '#!/bin/sh\ncase "$2" in "import bandpo.integrations.math_dapo") exit 0;; esac\nexit 7\n'
    )
    python.chmod(0o755)
    result = _run_script(arm, PYTHON=str(python))
    if arm in VERL_LOSS_ARMS:
        assert result.returncode == 7, result.stderr
    else:
        assert result.returncode == 2 and "loss_mode=bandpo cannot run" in result.stderr


# --- the verifier ------------------------------------------------------------------------------------------


def _completions(count: int, seed: int = 0) -> list[tuple[str, str]]:
    """Completions mixing Answer lines, boxes, unit words, TeX and padding that pushes text out of the
    300- and 100-character windows, with references that they sometimes match."""
    pieces = [
        *("Answer", "answer", "ANSWER", ":", " : ", "\n", " ", "\\boxed{", "}", "{", "$", "\\$", "=", "x = "),
        *("42", "1,000", "\\frac12", "\\frac{1}{2}", "\\dfrac{1}{2}", "\\sqrt2", "0.5", "(A)", "-3", "5"),
        *("degrees", "\\text{", "\\textbf{", "an ", "a ", "^\\circ", ".", ",", "\\!", "The final answer is "),
        *("\\overline{", "\\fbox{", "units", "[INVALID]"),
    ]
    references = ["42", "1000", "1,000", "\\frac{1}{2}", "5", "-3", "(A)", "\\sqrt{2}", "0.5", "42 degrees"]
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        if rng.random() < 0.2:
            text = "w" * rng.randint(50, 400) + text + "." * rng.randint(0, 150)
        out.append((text, rng.choice(references)))
    out += [("So the sum is \\boxed{42}.", "42"), ("Adding gives 42.\nAnswer: 42", "42")]
    return out


def test_verifiers_match_verl_091_math_dapo():
    """verl 0.9.1's `compute_score` is the lenient one; its `is_correct_minerva` on the last 300 characters
    is the strict one (0.9.1 keeps the fork's normalisation and extraction, and adds only the fallback)."""
    from verl.utils.reward_score import math_dapo as verl_math_dapo

    disagreements = 0
    for completion, reference in _completions(4000):
        strict = math_dapo.score(completion, reference)
        lenient = math_dapo.score(completion, reference, verifier="lenient")
        assert lenient == verl_math_dapo.compute_score(completion, reference), (completion, reference)
        correct, pred = verl_math_dapo.is_correct_minerva(completion[-300:], reference)
        assert (strict["acc"], strict["pred"]) == (correct, pred), (completion, reference)
        disagreements += strict["score"] != lenient["score"]
    assert disagreements > 0  # the corpus reaches the fallback


def test_verl_091_scores_a_boxed_only_answer_as_correct_and_the_paper_does_not():
    """Pins the difference the recipe exists for: if verl drops its \\boxed{} fallback, this fails."""
    from verl.utils.reward_score import math_dapo as verl_math_dapo

    boxed_only = "Adding the two gives $\\boxed{42}$."
    assert verl_math_dapo.compute_score(boxed_only, "42")["score"] == 1.0
    assert math_dapo.score(boxed_only, "42")["score"] == -1.0


def test_reward_file_loads_through_verl_and_scores_like_the_paper(recipe):
    from verl.trainer.ppo.reward import get_custom_reward_fn

    boxed_only, answer_line = "So \\boxed{27}.", "So 27.\nAnswer: 27"
    cases = {"compute_score": (-1.0, 1.0), "compute_score_lenient": (1.0, 1.0)}
    for name, expected in cases.items():
        cfg = recipe.compose("grpo_math", (*RUN_OVERRIDES, f"reward.custom_reward_function.name={name}"))
        score = get_custom_reward_fn(cfg)  # verl's own loader, by path and name
        # 27 and 27.0: math-ai/amc23 stores AMC answers as floats (an AMC file built from it keeps them)
        for reference in (27, 27.0):
            got = tuple(
                score(data_source="amc23", solution_str=text, ground_truth=reference, extra_info={})["score"]
                for text in (boxed_only, answer_line)
            )
            assert got == expected, (name, reference)


# --- data preparation --------------------------------------------------------------------------------------


def _write_parquet(path: Path, rows: list[dict]) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


def _dapo_source_prompt(problem: str) -> list[dict[str, str]]:
    head = (
        "Solve the following math problem step by step. The last line of your response should be of the form "
    )
    head += "Answer: $Answer (without quotes) where $Answer is the answer to the problem."
    content = f'{head}\n\n{problem}\n\nRemember to put your answer on its own line after "Answer:".'
    return [{"content": content, "role": "user"}]


def test_data_preparation_builds_the_files_from_local_sources(tmp_path, capsys):
    prep = _load_example("prepare_data")
    dapo = [  # open-r1/DAPO-Math-17k-Processed's columns: `prompt` holds DAPO's whole instruction
        {
            "prompt": _dapo_source_prompt(p)[0]["content"],
            "solution": a,
            "data_source": "math_dapo",
            "source_prompt": _dapo_source_prompt(p),
            "ability": "MATH",
            "reward_model": {"ground_truth": a, "style": "rule-lighteval/MATH_v2"},
            "extra_info": {"index": str(i)},
        }
        for i, (p, a) in enumerate([("What is 6 times 7?", "42"), ("求 1+1 的值。", "2")])
    ]
    math_path = tmp_path / "math.jsonl"
    math_rows = [
        {"problem": "P3", "solution": "so \\boxed{3}", "answer": "3", "level": 3},
        {"problem": "P2", "solution": "so \\boxed{2}", "answer": "2", "level": 2},
        {"problem": "P5", "solution": "so \\boxed{\\frac{1}{5}}", "level": "Level 5"},
        {"problem": "P?", "solution": "so \\boxed{9}", "answer": "9", "level": "Level ?"},
    ]
    math_path.write_text("".join(json.dumps(row) + "\n" for row in math_rows))
    sources = {
        "--dapo": _write_parquet(tmp_path / "dapo.parquet", dapo),
        "--math": str(math_path),
        "--aime24": _write_parquet(tmp_path / "aime24.parquet", [{"problem": "A1", "answer": "204"}]),
        "--aime25": _write_parquet(tmp_path / "aime25.parquet", [{"problem": "A2", "answer": "70"}]),
        "--amc23": _write_parquet(tmp_path / "amc.parquet", [{"question": "Q", "answer": 27.0}]),
    }
    out = tmp_path / "out"
    argv = ["--out", str(out)] + [item for pair in sources.items() for item in pair]
    assert prep.main(argv) == 0

    printed = capsys.readouterr().out
    assert "dapo_math_17k.parquet: 2 rows" in printed and "math_level3to5.parquet: 2 rows" in printed
    assert "amc23.parquet: 1 rows" in printed
    assert "train: 4 prompts -> 0 steps per epoch" in printed and "(the paper's runs: 102, 1020)" in printed

    read = {name: prep.load_rows(str(out / name)) for name in (*prep.TRAIN_FILES, *prep.VAL_FILES)}
    dapo_out, math_out = read["dapo_math_17k.parquet"], read["math_level3to5.parquet"]
    # DAPO rows keep DAPO's own prompt message, unchanged and not wrapped twice
    assert [row["prompt"] for row in dapo_out] == [row["source_prompt"] for row in dapo]
    assert [row["reward_model"]["ground_truth"] for row in dapo_out] == ["42", "2"]
    # MATH levels 3-5 only; the reference is `answer`, else the solution's last box
    assert [row["reward_model"]["ground_truth"] for row in math_out] == ["3", "\\frac{1}{5}"]
    content = math_out[0]["prompt"][0]["content"]
    assert content.startswith(prep.PROMPT_HEAD + "\n\n P3 \n\n") and content.endswith(prep.PROMPT_TAIL)
    assert read["amc23.parquet"][0]["reward_model"]["ground_truth"] == "27"
    assert read["aime24.parquet"][0]["data_source"] == "aime24"
    assert {row["data_source"] for row in dapo_out} == {"dapo_math_17k"}


def test_data_preparation_wraps_a_bare_problem_once():
    prep = _load_example("prepare_data")
    (bare,) = prep.dapo_rows([{"prompt": "What is 2+2?", "solution": "4"}])
    (wrapped,) = prep.dapo_rows([{"prompt": bare["prompt"][0]["content"], "solution": "4"}])
    assert bare["prompt"] == wrapped["prompt"] == prep.dapo_prompt("What is 2+2?")
    with pytest.raises(ValueError, match="DAPO row 0 has no answer"):
        list(prep.dapo_rows([{"prompt": "What is 2+2?", "solution": ""}]))


def test_steps_per_epoch_drop_the_last_partial_batch():
    prep = _load_example("prepare_data")
    # the paper's logs: 1,020 steps in 10 epochs of 256 prompts
    assert prep.steps_per_epoch(17_398 + 8_888) == 102
    assert prep.steps_per_epoch(14_116 + 8_888) == 89
    assert (prep.steps_per_epoch(102 * 256), prep.steps_per_epoch(103 * 256 - 1)) == (102, 102)
