"""Stock `python -m verl.trainer.main_ppo` (Ray local, GRPO) on the CPU, through this fixture's backend.

One command for everything that runs verl's own trainer here: the e2e test
(`tests/integrations/test_verl_e2e_on_cpu.py`) and the SmolLM2 benchmark (`benchmarks/verl_smollm2.py`). Each
caller passes what differs (model, data, reward, learning rate, prompt length, loss mode); the CPU settings
below are what verl 0.9.1 needs to run on a 2-core machine without a GPU, each with its reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

FIXTURE = Path(__file__).resolve().parent
REPO = FIXTURE.parents[2]


def main_ppo_on_cpu(
    *,
    model: Path,
    data: Mapping[str, Path],
    reward: Path,
    out: Path,
    steps: int,
    learning_rate: float,
    max_prompt_length: int,
    overrides: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run verl's trainer for `steps` GRPO steps (4 prompts x 4 samples, 2 minibatches); metrics go to
    out/metrics.jsonl (verl's ``file`` logger), stdout and stderr to out/*.log.

    `data` holds the ``train`` and ``val`` parquet files; `reward` is a file defining ``compute_score``
    (verl's ``reward.custom_reward_function``); `overrides` are appended (e.g. the loss mode).
    """
    out.mkdir(parents=True, exist_ok=True)
    pythonpath = os.pathsep.join([str(REPO / "src"), str(FIXTURE), os.environ.get("PYTHONPATH", "")])
    fixture_env = {
        "VERL_USE_EXTERNAL_MODULES": "verl_cpu_backend",  # verl's hook: the CPU platform and rollout
        "VERL_PLATFORM": "cpu",
        "VERL_ENGINE_DEVICE": "cuda",  # verl/workers/engine/base.py: select the FSDP engine on the CPU platform
        "PYTHONPATH": pythonpath,
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }
    ray_env = "+ray_kwargs.ray_init.runtime_env.env_vars"
    command = [
        sys.executable,
        "-m",
        "verl.trainer.main_ppo",
        "algorithm.adv_estimator=grpo",
        "algorithm.use_kl_in_reward=False",
        f"data.train_files={data['train']}",
        f"data.val_files={data['val']}",
        "data.train_batch_size=4",
        f"data.max_prompt_length={max_prompt_length}",
        "data.max_response_length=16",
        "data.dataloader_num_workers=0",
        f"actor_rollout_ref.model.path={model}",
        "+actor_rollout_ref.model.override_config.attn_implementation=sdpa",  # no FlashAttention on CPU
        "actor_rollout_ref.model.use_remove_padding=False",
        "actor_rollout_ref.model.enable_gradient_checkpointing=False",
        "actor_rollout_ref.actor.strategy=fsdp2",
        "actor_rollout_ref.actor.fsdp_config.strategy=fsdp2",
        "actor_rollout_ref.actor.use_torch_compile=False",
        f"actor_rollout_ref.actor.optim.lr={learning_rate}",
        "actor_rollout_ref.actor.ppo_mini_batch_size=2",  # 2 updates per step: the second sees ratio ≠ 1
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
        "actor_rollout_ref.actor.use_kl_loss=False",
        "actor_rollout_ref.rollout.name=hf_cpu",
        "actor_rollout_ref.rollout.n=4",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8",
        "actor_rollout_ref.rollout.calculate_log_probs=True",
        "actor_rollout_ref.rollout.agent.num_workers=1",
        "reward.num_workers=1",
        f"reward.custom_reward_function.path={reward}",
        "reward.custom_reward_function.name=compute_score",
        "trainer.device=cpu",
        "trainer.n_gpus_per_node=1",
        "trainer.nnodes=1",
        "trainer.logger=[console,file]",
        "trainer.val_before_train=False",
        "trainer.test_freq=-1",
        "trainer.save_freq=-1",
        f"trainer.total_training_steps={steps}",
        "trainer.total_epochs=1",
        f"trainer.default_local_dir={out / 'checkpoints'}",
        "transfer_queue.backend.SimpleStorage.num_data_storage_units=1",  # 8 storage actors hang 2 cores
        "+ray_kwargs.ray_init.num_cpus=16",  # logical CPUs for verl's many small actors
        "+ray_kwargs.ray_init.num_gpus=1",  # a logical "GPU" slot: verl's resource pools count GPUs only
        *(f"{ray_env}.{key}='{value}'" for key, value in fixture_env.items()),
        *overrides,
    ]
    run_env = {
        **os.environ,
        **fixture_env,
        "VERL_FILE_LOGGER_PATH": str(out / "metrics.jsonl"),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "RAY_DEDUP_LOGS": "0",
    }
    result = subprocess.run(
        command, capture_output=True, text=True, cwd=out, env=run_env, timeout=timeout_s, check=False
    )
    (out / "stdout.log").write_text(result.stdout)
    (out / "stderr.log").write_text(result.stderr)
    return result


def read_step_metrics(out: Path) -> list[dict[str, float]]:
    """verl's logged metrics of each step, in step order ([] when the run logged none)."""
    path = out / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    return [row["data"] for row in sorted(rows, key=lambda row: row["step"])]
