"""`TrainSummary`: what `bandpo.training.train` returns (and writes as the run's summary.json)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bandpo import metric_names as mn
from bandpo.training.config import TrainConfig
from bandpo.training.evaluate import EvalResult
from bandpo.training.run_dir import to_json

__all__ = ["TrainSummary", "clip_by_bin", "mean_present"]


@dataclass(frozen=True)
class TrainSummary:
    """What a run produced. `before` / `after` hold per-prompt samples and correctness (see `EvalResult`).

    Attributes:
        run_dir: the run directory.
        config: the resolved config.
        before, after: held-out evaluation before and after training (None when there are no eval prompts).
        final_metrics: the last training record of metrics.jsonl (catalogued keys).
        clip_by_bin: upward/downward clip fraction per p_old bin, averaged over those of the last 10% of RL
            steps that had tokens in the bin (None when none had: no such token is not "never clipped").
        steps: RL steps completed.
        wall_time_s: seconds of this call (a resumed run counts only its own part).
        warmup: warm-up statistics of the embedded model (None with --model).
        paths: config, metrics, tensorboard, checkpoints, model, plots, eval_before, eval_after, summary.
        world_size: processes that trained (torchrun / accelerate launch; 1 without a launcher).
        reward_failures: training samples whose reward failed (raised, non-finite or timed out) and scored
            0: ``errors``, ``timeouts`` among them, ``samples`` scored, ``last_error`` (this call's samples;
            in several processes, the main process's share).
    """

    run_dir: Path
    config: TrainConfig
    before: EvalResult | None
    after: EvalResult | None
    final_metrics: dict[str, float]
    clip_by_bin: dict[str, float | None]
    steps: int
    wall_time_s: float
    warmup: dict[str, Any] | None = None
    paths: dict[str, str] = field(default_factory=dict)
    world_size: int = 1
    reward_failures: dict[str, Any] | None = None

    def to_dict(self, *, per_prompt: bool = False) -> dict[str, Any]:
        """JSON-ready dict; per-prompt evaluation results only when `per_prompt`."""

        def evaluation(result: EvalResult | None) -> dict[str, Any] | None:
            if result is None:
                return None
            return result.to_dict() if per_prompt else {"metrics": result.metrics, "k": result.k}

        return {
            "run_dir": str(self.run_dir),
            "config": json.loads(to_json(self.config.to_dict())),  # standard JSON: an "off" inf is null
            "before": evaluation(self.before),
            "after": evaluation(self.after),
            "final_metrics": self.final_metrics,
            "clip_by_bin": self.clip_by_bin,
            "steps": self.steps,
            "wall_time_s": self.wall_time_s,
            "warmup": self.warmup,
            "paths": self.paths,
            "world_size": self.world_size,
            "reward_failures": self.reward_failures,
        }


def mean_present(records: list[dict[str, Any]], key: str) -> float | None:
    """Mean of `key` over the records that have it; None when none has (an absent key is missing, not 0)."""
    values = [float(r[key]) for r in records if r.get(key) is not None]
    return sum(values) / len(values) if values else None


def clip_by_bin(records: list[dict[str, Any]]) -> dict[str, float | None]:
    """Upward/downward clip fraction per p_old bin over the last 10% of the training `records`."""
    tail = records[-max(1, len(records) // 10) :] if records else []
    return {key: mean_present(tail, key) for key in (*mn.CLIP_FRAC_UP_BINS, *mn.CLIP_FRAC_DOWN_BINS)}
