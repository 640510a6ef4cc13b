"""The paper recipe of examples/verl against stock verl 0.9.1, on CPU and offline: every key it sets exists in
verl, both arms compose and validate, the verifier is the paper's (verl's own `math_dapo` as the oracle), and
the data preparation builds the expected files from tiny local sources.

Runs only in the verl environment (`.venv-verl/bin/python -m pytest -m verl ...`); verl is imported inside
fixtures and tests, never at module level.
"""

from __future__ import annotations

import dataclasses
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
from bandpo import math_dapo

pytestmark = pytest.mark.verl

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "verl"
CONFIGS = ("math_common.yaml", "grpo_math.yaml", "bandpo_math.yaml")

# what run.sh adds on the command line (data, reward), with placeholder paths
RUN_OVERRIDES = (
    "data.train_files=['/data/dapo_math_17k.parquet','/data/math_level3to5.parquet']",
    "data.val_files=['/data/aime24.parquet','/data/aime25.parquet','/data/amc23.parquet']",
    f"reward.custom_reward_function.path={EXAMPLES / 'reward.py'}",
    "reward.custom_reward_function.name=compute_score",
)


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

    def compose_arm(config_name: str, overrides: tuple[str, ...] = RUN_OVERRIDES):
        with initialize_config_dir(config_dir=str(EXAMPLES / "config"), version_base=None):
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


def _unknown_keys(yaml_path: Path, stock) -> list[str]:
    """Keys set in a recipe file that stock verl's ppo_trainer does not have.

    Hydra merges a config file over ppo_trainer without complaint when a key is new, and verl's plain
    sections (data, trainer, ...) keep it unread: a key renamed by a verl upgrade would be ignored silently.
    The extra fields of bandpo's own policy-loss config (selected by its `_target_`) are allowed.
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
    assert _unknown_keys(EXAMPLES / "config" / name, recipe.stock) == []


def test_the_key_check_catches_a_renamed_key(recipe, tmp_path):
    text = (EXAMPLES / "config" / "math_common.yaml").read_text()
    renamed = text.replace("  shuffle: true", "  shuffle_data: true").replace(
        "    n: 16", "    num_samples: 16"
    )
    assert renamed != text
    (tmp_path / "math_common.yaml").write_text(renamed)
    assert sorted(_unknown_keys(tmp_path / "math_common.yaml", recipe.stock)) == [
        "actor_rollout_ref.rollout.num_samples",
        "data.shuffle_data",
    ]


@pytest.mark.parametrize("arm", ["grpo_math", "bandpo_math"])
def test_both_arms_compose_validate_and_build_verl_configs(recipe, arm):
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import omega_conf_to_dataclass, validate_config

    cfg = recipe.compose(arm)
    validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    # built as verl's workers build them: an unknown or renamed field raises here
    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    rollout = omega_conf_to_dataclass(cfg.actor_rollout_ref.rollout)
    algorithm = omega_conf_to_dataclass(cfg.algorithm)
    assert actor.policy_loss.loss_mode == ("bandpo" if arm == "bandpo_math" else "vanilla")
    assert rollout.calculate_log_probs is False and rollout.n == 16 and rollout.val_kwargs.n == 32
    assert algorithm.adv_estimator == "grpo" and algorithm.norm_adv_by_std_in_grpo is True


def test_arms_differ_only_in_the_policy_loss_and_carry_the_paper_settings(recipe):
    configs = {}
    for name in ("grpo_math", "bandpo_math"):
        cfg = recipe.compose(name, (*RUN_OVERRIDES, "trainer.experiment_name=same"))
        configs[name] = recipe.OmegaConf.to_container(cfg, resolve=True)
    grpo, band = configs["grpo_math"], configs["bandpo_math"]
    grpo_actor, band_actor = grpo["actor_rollout_ref"]["actor"], band["actor_rollout_ref"]["actor"]
    assert grpo_actor.pop("policy_loss")["loss_mode"] == "vanilla"
    band_loss = band_actor.pop("policy_loss")
    assert grpo == band
    assert band_loss["_target_"] == "bandpo.integrations.verl.BandPOPolicyLossConfig"
    assert (band_loss["method"], band_loss["divergence"], band_loss["delta"]) == ("band", "kl", 0.05)
    assert (band_loss["ratio_max"], band_loss["relax"]) == (10.0, False)

    # the settings of the paper's scripts (docs/verl.md, "Example: GRPO vs BandPO on math")
    data, rollout = band["data"], band["actor_rollout_ref"]["rollout"]
    assert (data["train_batch_size"], data["max_prompt_length"], data["max_response_length"]) == (
        256,
        1024,
        4096,
    )
    assert (rollout["n"], rollout["temperature"], rollout["val_kwargs"]["n"]) == (16, 1.0, 32)
    assert rollout["calculate_log_probs"] is False
    assert (band_actor["ppo_mini_batch_size"], band_actor["ppo_micro_batch_size_per_gpu"]) == (64, 8)
    assert band_actor["optim"]["lr"] == 1e-6
    assert (band_actor["kl_loss_type"], band_actor["kl_loss_coef"], band_actor["entropy_coeff"]) == (
        "low_var_kl",
        0.001,
        0,
    )
    assert (band_actor["clip_ratio_c"], band_actor["loss_agg_mode"]) == (10.0, "seq-mean-token-mean")
    assert band["trainer"]["total_epochs"] == 10
    assert band["actor_rollout_ref"]["model"]["path"] == "Qwen/Qwen2.5-3B-Instruct"


def test_the_bandpo_arm_drives_the_loss(recipe):
    from verl.trainer.ppo import core_algos
    from verl.utils.config import omega_conf_to_dataclass

    config = omega_conf_to_dataclass(recipe.compose("bandpo_math").actor_rollout_ref.actor)
    gen = torch.Generator().manual_seed(11)
    old_logp = torch.log(torch.rand(4, 7, generator=gen, dtype=torch.float64).clamp(min=1e-4))
    logp = (old_logp + torch.randn(4, 7, generator=gen, dtype=torch.float64)).clamp(max=0.0)
    advantages = torch.randn(4, 1, generator=gen, dtype=torch.float64).expand(4, 7).clone()
    mask = torch.ones(4, 7, dtype=torch.bool)
    loss, _ = core_algos.get_policy_loss_fn("bandpo")(
        old_log_prob=old_logp,
        log_prob=logp,
        advantages=advantages,
        response_mask=mask,
        loss_agg_mode=config.loss_agg_mode,
        config=config,
    )
    method = bandpo.get_method("band", delta=0.05, ratio_max=10.0)
    ref = bandpo.policy_loss(
        logp, old_logp, advantages, mask, method=method, agg="seq_mean_token_mean", dual_clip_c=10.0
    )
    torch.testing.assert_close(loss, ref.loss, rtol=1e-7, atol=1e-12)


# --- run.sh ------------------------------------------------------------------------------------------------


def test_run_script_composes_a_valid_job_with_the_paper_verifier():
    result = _run_script("bandpo", "--cfg", "job", DATA_DIR="/data/bandpo_math", NNODES="2")
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout
    assert "_target_: bandpo.integrations.verl.BandPOPolicyLossConfig" in text
    assert "loss_mode: bandpo" in text and "nnodes: 2" in text
    assert "/data/bandpo_math/dapo_math_17k.parquet" in text
    assert "name: compute_score\n" in text and "calculate_log_probs: false" in text


def test_run_script_selects_the_lenient_verifier():
    result = _run_script("grpo", "--cfg", "job", VERIFIER="lenient")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "name: compute_score_lenient" in result.stdout and "loss_mode: vanilla" in result.stdout


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("ppo",), {}, "unknown method 'ppo'"),
        (("grpo",), {"VERIFIER": "math"}, "VERIFIER='math' is unknown"),
    ],
)
def test_run_script_rejects_bad_choices(args, env, message):
    result = _run_script(*args, **env)
    assert result.returncode == 2
    assert message in result.stderr


def test_run_script_needs_bandpo_for_either_arm(tmp_path):
    python_without_bandpo = tmp_path / "python"
    python_without_bandpo.write_text("#!/bin/sh\nexit 1\n")
    python_without_bandpo.chmod(0o755)
    result = _run_script("grpo", PYTHON=str(python_without_bandpo))
    assert result.returncode == 2
    assert "reward.py needs bandpo" in result.stderr


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
        got = tuple(
            score(data_source="amc23", solution_str=text, ground_truth=27, extra_info={})["score"]
            for text in (boxed_only, answer_line)
        )
        assert got == expected, name


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
