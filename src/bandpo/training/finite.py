"""Non-finite numbers end a run with one line, not a traceback from deep inside sampling.

A policy whose logits overflow (finite weights too large for float32, or a run diverging at a learning rate
far too high) makes ``torch.multinomial`` raise "probability tensor contains either inf, nan or element < 0"
inside transformers' ``generate``, or makes the loss NaN and every weight after it NaN. `watch_logits` checks
each forward pass's output through a public PyTorch hook (one max-reduction over the logits or TRL's log-probs,
small beside the matmul that made them) and raises `NonFiniteError`; `check_finite_logs` does the same for the
loss and gradient norm the HF Trainer logs (from a `TrainerCallback`, before that step's checkpoint is written).
The runner turns the error into one line naming the step, the likely cause and the last good checkpoint.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

__all__ = ["NonFiniteError", "check_finite_logs", "watch_logits"]

# outputs of a causal LM's forward pass that hold its numbers: transformers' logits, or TRL's fused-head log-probs
_WATCHED_OUTPUTS = ("logits", "log_probs")
_WATCHED_LOGS = ("loss", "grad_norm")


class NonFiniteError(ValueError):
    """The policy produced inf or NaN: in `what` (its logits, the loss, ...), at `rl_step` when known."""

    def __init__(self, what: str, rl_step: int | None = None) -> None:
        super().__init__(f"the policy's {what} became non-finite (inf or NaN)")
        self.what = what
        self.rl_step = rl_step


def _overflowed(values: Any) -> bool:
    """NaN or +inf anywhere (a max-reduction propagates NaN); -inf log-probs and masked logits are allowed."""
    import torch

    peak = values.detach().amax()
    return bool(torch.isnan(peak) or torch.isposinf(peak))


@contextlib.contextmanager
def watch_logits(model: Any) -> Iterator[None]:
    """Within the block, a forward pass of `model` whose logits (or log-probs) hold NaN or +inf raises
    `NonFiniteError` (sampling, evaluation and training alike); the hook is removed on exit."""

    def check(module: Any, args: Any, output: Any) -> None:
        for name in _WATCHED_OUTPUTS:
            values = getattr(output, name, None)
            if values is not None and values.numel() and _overflowed(values):
                raise NonFiniteError(name.replace("_", "-"))

    handle = model.register_forward_hook(check)
    try:
        yield
    finally:
        handle.remove()


def check_finite_logs(logs: dict[str, Any], rl_step: int) -> None:
    """`NonFiniteError` when the loss or gradient norm the HF Trainer logged for `rl_step` is inf or NaN."""
    for key in _WATCHED_LOGS:
        value = logs.get(key)
        if isinstance(value, int | float) and not math.isfinite(value):
            raise NonFiniteError(key.replace("_", " "), rl_step)
