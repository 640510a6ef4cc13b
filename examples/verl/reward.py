"""Reward for examples/verl: verl's DAPO math verifier, +1 correct / -1 wrong, for every data source.

verl's default reward routes by `data_source` and has no route for AMC; this file scores every source with
the same verifier the paper used (`verl.utils.reward_score.math_dapo`), so validation metrics can keep one
`data_source` per benchmark (aime24, aime25, amc23). Selected with
`reward.custom_reward_function.path=examples/verl/reward.py` (run.sh does it).
"""

from __future__ import annotations

from typing import Any


def compute_score(
    data_source: str, solution_str: str, ground_truth: str, extra_info: Any = None, **kwargs: Any
) -> dict[str, Any]:
    """{"score": ±1.0, "acc": bool, "pred": extracted answer}; verl logs `acc` and uses `score`."""
    from verl.utils.reward_score import math_dapo

    return math_dapo.compute_score(solution_str, str(ground_truth))
