"""SkyRL's own GRPO loop on the CPU with bandpo's loss, the Python way in (the fixture's driver).

`python skyrl_cpu_run.py OUT [--no-register] KEY=VALUE ...` does what `bandpo.integrations.skyrl.main()` does
(register the loss, parse with `BandPOSkyRLConfig`, SkyRL's `validate_cfg` and `initialize_ray`), then runs
`skyrl_cpu_backend.cpu_entrypoint` (SkyRL's `BasePPOExp` with the CPU hooks) instead of SkyRL's
`skyrl_entrypoint`. `--no-register` skips the registration, to show that SkyRL then refuses bandpo.

`run_on_cpu` builds the command for tests: the CPU settings below (each with its reason), a tiny model, data
and metrics under OUT. Prints "weight updates: N" (the rollout actor's count) at the end.
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
PY311 = FIXTURE / "py311"  # the test-only sitecustomize that lets skyrl 0.3.0 import on Python 3.11

# What SkyRL 0.3.0 needs to run on a 2-core CPU without a GPU (skyrl_cpu_backend.py's docstring says why).
CPU_SETTINGS = (
    "trainer.strategy=fsdp",
    "trainer.flash_attn=false",  # sdpa attention: no FlashAttention on a CPU
    "trainer.remove_microbatch_padding=false",  # needs FlashAttention-2's varlen kernels
    "trainer.gradient_checkpointing=false",
    "trainer.placement.colocate_all=false",  # no vLLM to sleep and wake between phases
    "trainer.placement.policy_num_gpus_per_node=1",
    "trainer.enable_ray_gpu_monitor=false",
    "trainer.policy.fsdp_config.mixed_precision.param_dtype=fp32",  # trainer and rollout log-probs agree
    "trainer.bf16=false",
    "trainer.logger=console",
    "trainer.eval_before_train=false",
    "trainer.eval_interval=-1",
    "trainer.ckpt_interval=-1",
    "trainer.hf_save_interval=-1",
    "trainer.resume_mode=none",
    "trainer.algorithm.advantage_estimator=grpo",
    "trainer.algorithm.use_kl_loss=false",  # no reference model: one FSDP worker
    "generator.batched=true",  # one token-in token-out call per step to the HF rollout
    "generator.inference_engine.enable_ray_prometheus_stats=false",
    "data.dataloader.num_workers=0",
)


def run_on_cpu(
    *,
    assets: Mapping[str, Path],
    out: Path,
    overrides: Sequence[str] = (),
    register: bool = True,
    timeout_s: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """SkyRL's loop for len(train data) / 4 steps: 4 prompts x 4 samples, 2 mini-batches (the second sees
    ratio != 1), lr 1e-3; metrics to out/metrics.jsonl, stdout/stderr to out/*.log."""
    out.mkdir(parents=True, exist_ok=True)
    pythonpath = os.pathsep.join(
        [str(PY311), str(FIXTURE), str(REPO / "src"), os.environ.get("PYTHONPATH", "")]
    )
    command = [
        sys.executable,
        str(FIXTURE / "skyrl_cpu_run.py"),
        str(out),
        *([] if register else ["--no-register"]),
        f"trainer.policy.model.path={assets['model']}",
        f"data.train_data=['{assets['train']}']",
        "trainer.train_batch_size=4",
        "trainer.policy_mini_batch_size=2",
        "trainer.micro_train_batch_size_per_gpu=8",
        "trainer.micro_forward_batch_size_per_gpu=16",
        "trainer.max_prompt_length=32",
        "trainer.policy.optimizer_config.lr=1e-3",
        "trainer.policy.optimizer_config.num_warmup_steps=0",
        "generator.n_samples_per_prompt=4",
        "generator.sampling_params.max_generate_length=16",
        "generator.sampling_params.temperature=1.0",
        f"trainer.ckpt_path={out / 'ckpt'}",
        f"trainer.export_path={out / 'export'}",
        f"trainer.log_path={out / 'logs'}",
        *CPU_SETTINGS,
        *overrides,
    ]
    env = {
        **os.environ,
        "PYTHONPATH": pythonpath,
        "BANDPO_SKYRL_METRICS": str(out / "metrics.jsonl"),
        "BANDPO_SKYRL_TOKENIZER": str(assets["tokenizer"]),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        "RAY_DEDUP_LOGS": "0",
        "SKYRL_DUMP_INFRA_LOG_TO_STDOUT": "1",
    }
    result = subprocess.run(
        command, capture_output=True, text=True, cwd=out, env=env, timeout=timeout_s, check=False
    )
    (out / "stdout.log").write_text(result.stdout)
    (out / "stderr.log").write_text(result.stderr)
    return result


def read_step_metrics(out: Path) -> list[dict[str, float]]:
    """SkyRL's logged metrics of each step, in step order ([] when the run logged none)."""
    path = out / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    return [row["data"] for row in sorted(rows, key=lambda row: row["step"])]


def main(argv: list[str]) -> int:
    import ray
    from skyrl.train.utils import initialize_ray, validate_cfg

    from bandpo.integrations.skyrl import BandPOSkyRLConfig, register_bandpo_loss

    register = "--no-register" not in argv
    overrides = [arg for arg in argv[1:] if arg != "--no-register"]
    if register:
        register_bandpo_loss()  # the Python way: before validate_cfg and initialize_ray
    cfg = BandPOSkyRLConfig.from_cli_overrides(overrides)
    validate_cfg(cfg)
    # the CPU patches: before SkyRL's workers are imported and before initialize_ray's ray.init (importing them
    # after validate_cfg lets a refused config fail in seconds)
    import skyrl_cpu_backend

    initialize_ray(cfg)
    try:
        updates = ray.get(skyrl_cpu_backend.cpu_entrypoint.remote(cfg))
    finally:
        ray.shutdown()
    print(f"weight updates: {updates}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
