"""Reward for examples/verl: the DAPO math verifier for every data source, +1 correct / -1 wrong.

- `compute_score` (the default): the verifier of the BandPO paper's runs, `bandpo.integrations.math_dapo` "strict". The
  answer is the last "Answer: ..." line; a completion without one scores -1, even with a correct \\boxed{}.
- `compute_score_lenient`: verl 0.9.1's own `math_dapo`, which falls back to the last \\boxed{} when there is no
  "Answer:" line. Rewards and validation accuracy are then higher than the paper's for the same completions.

verl's default reward routes by `data_source` and has no route for AMC; this file scores every source with one
verifier, so validation metrics keep one `data_source` per benchmark (aime24, aime25, amc23). Selected with
`reward.custom_reward_function.path=examples/verl/reward.py` and `.name=compute_score` or
`compute_score_lenient` (run.sh: `VERIFIER=strict` or `lenient`). docs/verl.md says why it matters.
"""

from __future__ import annotations

from typing import Any

from bandpo.integrations import math_dapo


def compute_score(
    data_source: str, solution_str: str, ground_truth: str | float, extra_info: Any = None, **kwargs: Any
) -> dict[str, Any]:
    """The paper's verifier: {"score": ±1.0, "acc": bool, "pred": answer}; verl logs `acc`, uses `score`.

    A number as reference (an AMC file that kept math-ai/amc23's floats) is compared as the data files write
    it: 34.0 as "34" (`bandpo.integrations.math_dapo.reference_text`).
    """
    return math_dapo.score(solution_str, ground_truth, verifier="strict")


def compute_score_lenient(
    data_source: str, solution_str: str, ground_truth: str | float, extra_info: Any = None, **kwargs: Any
) -> dict[str, Any]:
    """verl 0.9.1's verifier: as `compute_score`, with the \\boxed{} fallback."""
    return math_dapo.score(solution_str, ground_truth, verifier="lenient")
