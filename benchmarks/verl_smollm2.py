"""Stock verl `main_ppo` with SmolLM2 on the CPU, `loss_mode=vanilla` and `loss_mode=bandpo` side by side:
``update_actor`` time per step, with the whole step for scale.

Runs in the verl environment (``.venv-verl``), through the CPU fixture of the test suite
(`tests/integrations/verl_cpu/`: a CPU platform and an HF-sampling rollout loaded by verl's
``VERL_USE_EXTERNAL_MODULES`` hook), on the cached SmolLM2 checkpoint (`bandpo prepare-model`; the
safetensors folder loads without ``gguf``) and Sums prompts in verl's parquet schema, rewarded by the Sums
verifier (`compute_score` below, verl's ``reward.custom_reward_function``). GRPO, 4 prompts x 4 samples,
prompts up to 64 tokens, responses up to 16, 2 minibatches, ``--steps`` steps per run; the two runs one
after the other. verl logs ``timing_s/update_actor`` and ``timing_s/step`` per step; the first step (warm-up)
is left out of the means.

What it costs: two Ray start-ups and about 30 s per step with a 135M model on 2 cores: 6 minutes for the
default 3 steps per run on a machine with a load average of 5 (20 minutes beside another heavy job).

    PYTHONPATH=src .venv-verl/bin/python benchmarks/verl_smollm2.py
    PYTHONPATH=src .venv-verl/bin/python benchmarks/verl_smollm2.py --steps 4 --json out.json
"""

from __future__ import annotations

import argparse
import random
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FIXTURE = REPO / "tests" / "integrations" / "verl_cpu"
DATA_SOURCE = "bandpo_sums"


def compute_score(
    data_source: str, solution_str: str, ground_truth: str, extra_info: dict | None = None
) -> float:
    """verl's custom reward: the Sums verifier (1 when the reply's last number is the sum)."""
    from bandpo.training.tasks.sums import score

    return score("", solution_str, ground_truth)


def build_data(path: Path, rows: int, seed: int) -> None:
    import pandas as pd

    from bandpo.training.tasks.sums import sample_train_problems

    records = [
        {
            "data_source": DATA_SOURCE,
            "prompt": [{"role": "user", "content": problem.prompt}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": problem.answer},
            "extra_info": {"index": index, "split": path.stem},
        }
        for index, problem in enumerate(sample_train_problems(rows, seed=seed))
    ]
    random.Random(seed).shuffle(records)
    pd.DataFrame.from_records(records).to_parquet(path)


def run_main_ppo(model: Path, data: dict[str, Path], out: Path, loss_mode: str, steps: int) -> list[dict]:
    from verl_cpu_run import main_ppo_on_cpu, read_step_metrics

    result = main_ppo_on_cpu(
        model=model,
        data=data,
        reward=Path(__file__).resolve(),
        out=out,
        steps=steps,
        learning_rate=1e-6,
        max_prompt_length=64,
        overrides=[f"actor_rollout_ref.actor.policy_loss.loss_mode={loss_mode}"],
    )
    if result.returncode != 0:
        raise SystemExit(f"main_ppo {loss_mode} failed:\n{(result.stdout + result.stderr)[-3000:]}")
    return read_step_metrics(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    sys.path[:0] = [str(HERE), str(FIXTURE)]
    from profile_train import cpu_model, write_json

    from bandpo.training.pretrained import resolve_model

    model = resolve_model(args.model)
    command = "PYTHONPATH=src .venv-verl/bin/python benchmarks/verl_smollm2.py " + shlex.join(sys.argv[1:])
    report: dict = {"command": command, "cpu": cpu_model(), "steps": args.steps, "runs": {}}
    with tempfile.TemporaryDirectory(prefix="verl-smollm2-") as scratch:
        root = Path(scratch)
        data = {"train": root / "train.parquet", "val": root / "val.parquet"}
        build_data(data["train"], 64, seed=0)
        build_data(data["val"], 4, seed=1)
        for loss_mode in ("vanilla", "bandpo"):
            steps = run_main_ppo(model, data, root / loss_mode, loss_mode, args.steps)
            timed = steps[1:] or steps
            report["runs"][loss_mode] = {
                "update_actor_s": [s.get("timing_s/update_actor") for s in steps],
                "step_s": [s.get("timing_s/step") for s in steps],
                "mean_update_actor_s": statistics.mean(s["timing_s/update_actor"] for s in timed),
                "mean_step_s": statistics.mean(s["timing_s/step"] for s in timed),
                "clip_frac": [s.get("actor/clip/frac", s.get("actor/pg_clipfrac")) for s in steps],
            }
            print(f"{loss_mode}: update_actor {report['runs'][loss_mode]['update_actor_s']} s", flush=True)
    vanilla, bandpo = report["runs"]["vanilla"], report["runs"]["bandpo"]
    report["update_actor_ratio"] = bandpo["mean_update_actor_s"] / vanilla["mean_update_actor_s"]
    print(
        f"{report['cpu']}; {command}\nupdate_actor per step (steps 2..{args.steps}): vanilla "
        f"{vanilla['mean_update_actor_s']:.1f} s, bandpo {bandpo['mean_update_actor_s']:.1f} s (ratio "
        f"{report['update_actor_ratio']:.3f}); whole step: {vanilla['mean_step_s']:.1f} s vs {bandpo['mean_step_s']:.1f} s"
    )
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
