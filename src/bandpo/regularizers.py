"""The KL and entropy terms that sit beside the policy loss: a KL penalty to a reference policy and the entropy.

Both return per-token values ((B, T) in, (B, T) out, float32 at least); aggregate them with
`bandpo.losses.aggregate_loss` like the policy loss, e.g.

    loss = policy_loss(...).loss + beta * aggregate_loss(kl_penalty(logp, ref_logp), mask, agg)

Pure torch, like the rest of the maths: tensors in, tensors out, no host sync.
"""

from __future__ import annotations

import torch
import torch.utils.checkpoint
from torch import Tensor

from bandpo.losses import LOG_RATIO_CLAMP
from bandpo.methods import compute_dtype

__all__ = ["K3_CLAMP", "KL_KINDS", "entropy_from_logits", "kl_penalty"]

K3_CLAMP = 10.0
"""The k3 KL estimate per token is clamped to [-K3_CLAMP, K3_CLAMP] (as verl's low_var_kl)."""

KL_KINDS: tuple[str, ...] = ("k1", "k2", "k3", "low_var_kl")


def kl_penalty(logp: Tensor, ref_logp: Tensor, kind: str = "k3") -> Tensor:
    """Per-token estimate of KL(π_θ‖π_ref) from tokens sampled from π_θ (Schulman's k1/k2/k3).

    With d = logp - ref_logp:
        k1 = d (unbiased, high variance, can be negative),
        k2 = d²/2,
        k3 = "low_var_kl" = exp(-d) + d - 1 (unbiased, >= 0; the BandPO paper uses it with weight 0.001).

    Notes:
        For k3, -d is clamped to [-20, 20] before exp and the result to [-10, 10], as verl's low_var_kl
        does: a token 20 nats off the reference would otherwise give a loss of e^20. The result is per
        token, shape of `logp`, in float32 at least; aggregate it with `aggregate_loss`. Gradients flow to
        `logp` only (`ref_logp` is detached).
    """
    if kind not in KL_KINDS:
        raise ValueError(f"unknown KL estimator {kind!r}; valid kinds: {list(KL_KINDS)}")
    for name, t in (("logp", logp), ("ref_logp", ref_logp)):
        if not isinstance(t, Tensor) or not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor of per-token log-probabilities")
    if ref_logp.shape != logp.shape:
        raise ValueError(
            f"ref_logp must have the same shape as logp {tuple(logp.shape)}, got {tuple(ref_logp.shape)}"
        )
    dtype = compute_dtype(logp.dtype)
    d = logp.to(dtype) - ref_logp.detach().to(dtype)
    if kind == "k1":
        return d
    if kind == "k2":
        return 0.5 * d.square()
    neg = (-d).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return (neg.exp() - neg - 1.0).clamp(-K3_CLAMP, K3_CLAMP)


def _entropy_chunk(logits: Tensor, dtype: torch.dtype) -> Tensor:
    x = logits.to(dtype)  # (n, V)
    logprobs = torch.log_softmax(x, dim=-1)
    probs = logprobs.exp()
    # tokens with logit -inf (e.g. top-k masked) have p = 0 and contribute 0, not 0·(-inf) = NaN
    return -(probs * logprobs.masked_fill(probs == 0, 0.0)).sum(dim=-1)  # (n,)


def entropy_from_logits(logits: Tensor, chunk_size: int = 256) -> Tensor:
    """Entropy of softmax(logits) over the last dim, computed `chunk_size` tokens at a time.

    Args:
        logits: (..., V) unnormalised logits, any floating dtype.
        chunk_size: tokens per chunk of the flattened leading dims. Peak extra memory is about
            4 × chunk_size × V × 4 bytes (≈ 0.6 GB at the default 256 for a 150k vocabulary) instead of the
            same for all tokens at once.

    Returns:
        (...) entropy in nats, in float32 (float64 for float64 logits).

    Notes:
        Equals the naive `-(softmax(x) * log_softmax(x)).sum(-1)` (tested). When gradients are needed, each
        chunk is recomputed in backward (activation checkpointing) so the memory bound still holds.
        Logits of -inf are allowed (zero-probability tokens contribute 0).
    """
    if not isinstance(logits, Tensor) or not logits.is_floating_point() or logits.dim() < 1:
        raise TypeError("logits must be a floating-point tensor of shape (..., V)")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    dtype = compute_dtype(logits.dtype)
    lead = logits.shape[:-1]
    flat = logits.reshape(-1, logits.shape[-1])  # (N, V)
    need_grad = torch.is_grad_enabled() and logits.requires_grad
    parts = []
    for start in range(0, flat.shape[0], chunk_size):
        chunk = flat[start : start + chunk_size]
        if need_grad:
            parts.append(torch.utils.checkpoint.checkpoint(_entropy_chunk, chunk, dtype, use_reentrant=False))
        else:
            parts.append(_entropy_chunk(chunk, dtype))
    if not parts:
        return torch.zeros(lead, dtype=dtype, device=logits.device)
    return torch.cat(parts).reshape(lead)  # (...)
