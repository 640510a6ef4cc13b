"""The evaluation before RL, shared by the runs that start from the same policy (`TrainConfig.eval_before_file`).

Before RL, a run's policy depends on its model (or the embedded model's warm-up) and seed, not on its method;
its held-out evaluation depends on that policy, the evaluation prompts and the sampling settings. So the arms
of one seed of `bandpo compare` evaluate the same policy on the same prompts with the same seed: the first
computes it, the others read it (a real model's 256 x 8 samples take minutes of CPU each time).

The file holds the result with what determined it (`evaluation_key`: the policy's source, the sampling
settings, the bandpo version) and the prompts evaluated; a run reads it only when both are its own, and
otherwise evaluates and replaces it. Runs of one seed never start together in `bandpo compare`, so the first
one's file is there for the others.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bandpo.training._atomic import write_text_atomic
from bandpo.training.config import TrainConfig
from bandpo.training.evaluate import EvalResult

__all__ = ["evaluation_key", "read_shared", "write_shared"]


def evaluation_key(config: TrainConfig) -> dict[str, Any]:
    """Everything the evaluation before RL depends on besides its prompts (compared one by one)."""
    from bandpo import __version__

    policy = dataclasses.asdict(config.policy_source)
    for machine_only in ("cache_dir", "num_threads"):
        policy.pop(machine_only)
    key = {
        "policy": policy,
        "seed": config.seed,
        "eval_samples": config.eval_samples,
        "temperature": config.temperature,
        "max_new_tokens": config.resolved_max_completion_length,
        "reward": config.resolved_reward,
        "bandpo": __version__,
    }
    return json.loads(json.dumps(key, default=str))


def read_shared(path: Path, config: TrainConfig, prompts: Sequence[str]) -> EvalResult | None:
    """The shared evaluation at `path` when it was computed for this key and these prompts, else None."""
    try:
        data = json.loads(Path(path).read_text())
        result = EvalResult.from_dict(data["result"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or unreadable: evaluate (and replace it)
    if data.get("key") != evaluation_key(config) or [row.prompt for row in result.prompts] != list(prompts):
        return None
    return result


def write_shared(path: Path, config: TrainConfig, result: EvalResult) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps({"key": evaluation_key(config), "result": result.to_dict()}))
