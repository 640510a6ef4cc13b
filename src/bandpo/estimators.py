"""Sampling-based evaluation metrics: mean@k, unbiased pass@k (Chen et al. 2021) and maj@k.

Each prompt is answered by n sampled completions. The functions take one prompt's samples (a 1-D list,
tuple or tensor); `mean_at_k` and `pass_at_k_from_correct` also take a batch, (prompts, samples) as a list of
lists (ragged allowed) or a 2-D tensor, and then return the mean over prompts. Plain Python floats out.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import torch

__all__ = ["distinct_correct", "maj_at_k", "mean_at_k", "pass_at_k", "pass_at_k_from_correct"]


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a single integer, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or int(value) != value:
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k: probability that at least one of k samples drawn without replacement from the n
    generated ones is correct, given that c of the n are correct (Chen et al. 2021, "Evaluating Large
    Language Models Trained on Code", eq. 1): 1 - C(n-c, k) / C(n, k).

    Notes:
        Computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i), which avoids the huge binomials; exact 1.0 when
        n - c < k (every k-subset holds a correct sample) and exact 0.0 when c = 0.

    Raises:
        ValueError: unless 0 <= c <= n and 1 <= k <= n.
    """
    n, c, k = _as_int(n, "n"), _as_int(c, "c"), _as_int(k, "k")
    if n < 1 or not 0 <= c <= n:
        raise ValueError(f"pass_at_k needs n >= 1 samples and 0 <= c <= n correct ones, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 1 <= k <= n, got k={k} with n={n}; sample at least k completions")
    if n - c < k:
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def _rows(correct: Any) -> tuple[list[list[float]], bool]:
    """Per-prompt lists of 0/1 floats and whether the input was a batch (2-D)."""
    if isinstance(correct, torch.Tensor):
        if correct.dim() not in (1, 2):
            raise ValueError(
                f"correct must be 1-D (samples) or 2-D (prompts, samples), got shape {tuple(correct.shape)}"
            )
        batched = correct.dim() == 2
        data = correct.detach().cpu().to(torch.float64).tolist()
        return (data if batched else [data]), batched
    if not isinstance(correct, Sequence) or isinstance(correct, str):
        raise TypeError(f"correct must be a sequence of booleans or a tensor, got {type(correct).__name__}")
    batched = len(correct) > 0 and all(
        (isinstance(row, Sequence) and not isinstance(row, str))
        or (isinstance(row, torch.Tensor) and row.dim() > 0)
        for row in correct
    )
    rows = (
        [list(row.tolist() if isinstance(row, torch.Tensor) else row) for row in correct]
        if batched
        else [correct]
    )
    return [[float(bool(x)) for x in row] for row in rows], batched


def mean_at_k(correct: Any) -> float:
    """mean@k: the fraction of correct samples (average accuracy over the k samples of a prompt).

    Args:
        correct: one prompt's per-sample correctness (1-D), or a batch (prompts, samples); for a batch,
            the mean over prompts of each prompt's mean@k.
    """
    rows, _ = _rows(correct)
    if not rows or any(len(row) == 0 for row in rows):
        raise ValueError("mean_at_k needs at least one prompt with at least one sample")
    return sum(sum(row) / len(row) for row in rows) / len(rows)


def pass_at_k_from_correct(correct: Any, k: int) -> float:
    """Unbiased pass@k from per-sample correctness: `pass_at_k(n=len, c=sum, k)`; a batch gives the mean."""
    rows, _ = _rows(correct)
    if not rows:
        raise ValueError("pass_at_k_from_correct needs at least one prompt")
    return sum(pass_at_k(len(row), int(sum(row)), k) for row in rows) / len(rows)


def maj_at_k(
    answers: Sequence[Hashable | None],
    correct_answer: Hashable | None = None,
    *,
    correctness: Sequence[bool] | None = None,
) -> float:
    """maj@k: is the most frequent answer among the k samples correct?

    Give either `correct_answer` (compared with ==) or `correctness` (per-sample flags, e.g. from a math
    verifier; an answer is as correct as the mean flag of its samples).

    Notes:
        - Answers are voted on as given: canonicalise them first (e.g. "1/2" vs "0.5").
        - `None` (no answer extracted) abstains; if every sample abstains the result is 0.0.
        - Ties are broken uniformly at random *in expectation*: the result is the mean correctness of the
          tied top answers, so it is deterministic and can be fractional (two tied answers, one right: 0.5).
    """
    if (correct_answer is None) == (correctness is None):
        raise ValueError("maj_at_k needs exactly one of correct_answer or correctness")
    answers = list(answers)
    if correctness is not None:
        flags = [
            float(bool(x))
            for x in (correctness.tolist() if isinstance(correctness, torch.Tensor) else correctness)
        ]
        if len(flags) != len(answers):
            raise ValueError(
                f"correctness has {len(flags)} entries for {len(answers)} answers; give one per sample"
            )
    else:
        flags = [float(a is not None and a == correct_answer) for a in answers]
    votes: dict[Hashable, list[float]] = {}
    for answer, flag in zip(answers, flags, strict=True):
        if answer is not None:
            votes.setdefault(answer, []).append(flag)
    if not votes:
        return 0.0
    top = max(len(v) for v in votes.values())
    tied = [sum(v) / len(v) for v in votes.values() if len(v) == top]
    return sum(tied) / len(tied)


def distinct_correct(answers: Sequence[Hashable | None], correctness: Sequence[bool]) -> int:
    """Number of distinct answers among the correct samples of one prompt (`None` answers are not counted)."""
    flags = correctness.tolist() if isinstance(correctness, torch.Tensor) else list(correctness)
    answers = list(answers)
    if len(flags) != len(answers):
        raise ValueError(
            f"correctness has {len(flags)} entries for {len(answers)} answers; give one per sample"
        )
    return len({a for a, ok in zip(answers, flags, strict=True) if ok and a is not None})
