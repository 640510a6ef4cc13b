"""Training: the embedded CPU default and `bandpo train`, on TRL's GRPOTrainer (`bandpo.integrations.trl`).

Public API (stable; `bandpo compare` builds on it):

- `TrainConfig`: every setting of a run (frozen, keyword-only, validated; presets "default" and "paper").
- `train(config, *, progress=True) -> TrainSummary`: runs it and writes the run directory.
- `TrainSummary`, `EvalResult`, `PromptResult`: what a run returns, with per-prompt evaluation results.

Submodules: `tasks` (the embedded tasks: Countdown, Reach, and Sums for a real model, with their registry),
`model` (the tiny model and its tokenizer), `warmup` (cached supervised warm-up), `pretrained` (real checkpoints
by short name: download, check, GGUF conversion, cache), `data` (dataset files), `rewards` (verifiers and the
failure guard), `evaluate`; a run is `runner` (its phases, top to bottom) over `config` (with `config_file`:
YAML/JSON settings files), `run_dir` (`RunDir`: the run directory's files, lock, settings, checks,
checkpoints), `summary` (the `TrainSummary` it returns), `policy` (model loading), `trl_args` (TRL arguments and
callback), `metrics_log` (metrics.jsonl: written, read, plotted) with `loggers` (``report_to``: TensorBoard,
Trackio, W&B, MLflow), `model_card` (the model folder's Hub card) and `processes` (several processes; offline,
threads, quiet). Importing this package is cheap; TRL and transformers load when a run starts.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["EvalResult", "PromptResult", "TrainConfig", "TrainSummary", "train"]

_EXPORTS = {
    "TrainConfig": "bandpo.training.config",
    "train": "bandpo.training.runner",
    "TrainSummary": "bandpo.training.summary",
    "EvalResult": "bandpo.training.evaluate",
    "PromptResult": "bandpo.training.evaluate",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bandpo.training' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


if TYPE_CHECKING:  # pragma: no cover
    from bandpo.training.config import TrainConfig
    from bandpo.training.evaluate import EvalResult, PromptResult
    from bandpo.training.runner import train
    from bandpo.training.summary import TrainSummary
