"""Numerical helpers shared by the Band solvers (`bandpo.band.kl`, `bandpo.band.solver`).

`LOG_FLOOR` is the one cut-off both solvers use: a probability p or a complement 1 − p below e^−700 ≈ 1e−304
is read as exactly 0. It is also the end of the generic solver's logit bracket (`solver.X_MAX = −LOG_FLOOR`),
and the two must agree: for logp, log(1 − p) ≥ LOG_FLOOR, logit p = logp − log(1 − p) lies in
[LOG_FLOOR, −LOG_FLOOR], so the bracket [logit p, X_MAX] is never inverted, while σ(±700) is 1 to float64
precision and e^−700 is a normal float64 (no subnormal precision loss).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["LOG_FLOOR", "log1mexp"]

LOG_FLOOR = -700.0

_MINUS_LOG2 = -math.log(2.0)


def log1mexp(x: Tensor) -> Tensor:
    """log(1 − e^x) for x ≤ 0, accurate on both sides of −log 2 (−inf at x = 0, 0 at x = −inf)."""
    return torch.where(x > _MINUS_LOG2, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))
