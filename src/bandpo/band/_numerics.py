"""Numerical helpers shared by the Band solvers (`bandpo.band.kl`, `bandpo.band.generic_solver`).

`LOG_FLOOR` is the one cut-off both solvers use: a probability p or a complement 1 − p below e^−700 ≈ 1e−304
is read as exactly 0. It is also the end of the generic solver's logit bracket (`generic_solver.X_MAX = −LOG_FLOOR`),
and the two must agree: for logp, log(1 − p) ≥ LOG_FLOOR, logit p = logp − log(1 − p) lies in
[LOG_FLOOR, −LOG_FLOOR], so the bracket [logit p, X_MAX] is never inverted, while σ(±700) is 1 to float64
precision and e^−700 is a normal float64 (no subnormal precision loss).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["LOG_FLOOR", "log1mexp", "round_once"]

LOG_FLOOR = -700.0

_MINUS_LOG2 = -math.log(2.0)


def log1mexp(x: Tensor) -> Tensor:
    """log(1 − e^x) for x ≤ 0, accurate on both sides of −log 2 (−inf at x = 0, 0 at x = −inf)."""
    return torch.where(x > _MINUS_LOG2, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def round_once(x: Tensor, dtype: torch.dtype) -> Tensor:
    """Float64 `x` rounded once, to nearest, to `dtype` (float64, float32, bfloat16 or float16).

    torch converts float64 to bfloat16/float16 through float32, i.e. rounds twice: a value just below a
    bfloat16 midpoint can become the midpoint in float32 and then round up. Here the float32 step rounds to
    odd instead (an inexact result gets an odd last bit), which keeps enough information for the second
    rounding to be the correct one (16 and 13 spare bits, subnormals included); NaN and ±inf pass through.
    """
    if dtype == torch.float64:
        return x
    single = x.to(torch.float32)
    if dtype == torch.float32:
        return single
    bits = single.view(torch.int32)
    inexact = (single.to(torch.float64) != x) & torch.isfinite(single)  # NaN and overflow to inf excluded
    step = torch.where(single.abs().to(torch.float64) < x.abs(), 1, -1).to(torch.int32)  # towards x
    bits = torch.where(inexact & ((bits & 1) == 0), bits + step, bits)
    return bits.view(torch.float32).to(dtype)
