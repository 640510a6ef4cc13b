"""The clipped policy-gradient surrogate shared by every method, its aggregation, and its diagnostics.

Every method (clip, Clip-Higher, DCPO, Band and its one-sided variants) differs only in the per-token ratio
bounds it makes (`bandpo.methods`); one loss consumes any bounds. Per valid token, with
r = exp(clamp(logp - old_logp, -20, 20)) and bounds [ratio_low, ratio_high] (docs/theory.md):

    loss = max(-A·r, -A·clamp(r, ratio_low, ratio_high))
    loss = min(loss, -A·c)            for A < 0 (dual-clip, c = 10 in the paper's scripts)

Where this departs from the naive formula, and why:
    - The log-ratio is clamped to [-20, 20] before `exp` (as the official code and verl do): a ratio of
      e^20 ≈ 5e8 is already "infinitely" off-policy, and the clamp keeps `exp` and its gradient finite in
      every dtype. Inside the clamp the loss and its gradient are exactly the naive ones.
    - Everything is computed in float32 at least (bf16/fp16 inputs are upcast; float64 stays float64), so
      the loss of bf16 log-probs is finite and the ratio is not quantised to bf16's 3 significant digits.
    - Masked positions are neutralised before any arithmetic (log-ratio 0, advantage 0), so padding that
      holds -inf or NaN log-probs can never turn into a NaN loss or gradient.

`policy_loss` composes three parts, each public so that an engine can use the ones it lacks (verl, for
instance, keeps its own `agg_loss`):

    terms = per_token_policy_loss(logp, old_logp, advantages, mask, bounds)   # the formula above, (B, T)
    loss = aggregate_loss(terms.per_token_loss, terms.mask, agg)               # a scalar
    metrics = policy_metrics(terms)                                            # from the same ratio

Gradients flow to `logp` only: `old_logp`, `advantages` and the bounds are detached.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from bandpo import metric_names as mn
from bandpo.loss_inputs import check_logp_pair, check_values, prepare_advantages, prepare_bounds, prepare_mask
from bandpo.methods import BoundMethod, RatioBounds, compute_dtype, resolve_method

__all__ = [
    "AGG_MODES",
    "DUAL_CLIP_C",
    "LOG_RATIO_CLAMP",
    "PerTokenPolicyLoss",
    "PolicyLossOutput",
    "aggregate_loss",
    "band_metrics",
    "bound_metrics",
    "check_dual_clip_c",
    "per_token_policy_loss",
    "policy_loss",
    "policy_metrics",
]

LOG_RATIO_CLAMP = 20.0
"""|logp - old_logp| is clamped to this before exp (official code and verl use the same value)."""

AGG_MODES: tuple[str, ...] = (
    "token_mean",
    "seq_mean_token_mean",
    "seq_mean_token_sum",
    "seq_mean_token_sum_norm",
)

DUAL_CLIP_C = 10.0
"""The dual-clip constant c of the paper's scripts: the default of every `dual_clip_c` (None disables it)."""


@dataclass(frozen=True)
class PolicyLossOutput:
    """Result of `policy_loss`.

    Attributes:
        loss: scalar to call `.backward()` on (already aggregated).
        per_token_loss: (B, T) loss per token; 0 at masked positions.
        metrics: diagnostics keyed by `bandpo.metric_names`, detached 0-dim float tensors (no host sync;
            call `.item()` when logging).
        bounds: the (ratio_low, ratio_high) used, (B, T) or broadcastable to it.
    """

    loss: Tensor
    per_token_loss: Tensor
    metrics: dict[str, Tensor] = field(repr=False)
    bounds: RatioBounds | None = field(default=None, repr=False)


@dataclass(frozen=True)
class PerTokenPolicyLoss:
    """Result of `per_token_policy_loss`: the per-token loss and the tensors its diagnostics read.

    All tensors are (B, T) in the compute dtype (float32 at least; float64 for float64 `logp`).

    Attributes:
        per_token_loss: the clipped surrogate per token, exactly 0 on padding; the only tensor with a graph
            (to `logp`). Aggregate it with `aggregate_loss` or an engine's own aggregation.
        ratio: exp(log_ratio), detached; 1 on padding.
        log_ratio: logp - old_logp clamped to ±`LOG_RATIO_CLAMP`, detached; 0 on padding.
        advantages: per-token advantages, detached; 0 on padding.
        mask: bool validity mask.
        bounds: the (ratio_low, ratio_high) used, detached.
        old_logp: the old log-probs as given (detached), for the per-p_old-bin diagnostics.
        dual_clip_c: the dual-clip constant used (None: off).
    """

    per_token_loss: Tensor
    ratio: Tensor = field(repr=False)
    log_ratio: Tensor = field(repr=False)
    advantages: Tensor = field(repr=False)
    mask: Tensor = field(repr=False)
    bounds: RatioBounds = field(repr=False)
    old_logp: Tensor = field(repr=False)
    dual_clip_c: float | None = None


# --- the dual-clip constant --------------------------------------------------------------------------


def check_dual_clip_c(value: float | None, name: str = "dual_clip_c") -> float | None:
    """The one validator of the dual-clip constant c: a number > 1, or None to disable dual-clip.

    Every place that takes c (`policy_loss`, `bound_metrics`, `TrainConfig`, the TRL and verl configs) calls
    this, so they all accept the same values and share one "off" value: None (JSON null). `math.inf` (a cap
    that never binds, and how a command line spells "off") is accepted and returned as None, so it is never
    written to a JSON file as the non-standard `Infinity`.

    Args:
        value: c, None or math.inf.
        name: the field name used in the error (e.g. "policy_loss.dual_clip_c" in a verl config).

    Returns:
        float(c), or None when dual-clip is off.

    Raises:
        ValueError: a bool, a non-number, NaN or c <= 1, naming `field`, the value and the fix.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value) or value <= 1:
        raise ValueError(
            f"{name} must be a number > 1 (dual-clip caps the loss of A < 0 tokens at -A·c; the paper uses "
            f"{DUAL_CLIP_C:g}) or None to disable dual-clip, got {value!r}"
        )
    return None if math.isinf(value) else float(value)


# --- aggregation -------------------------------------------------------------------------------------


def aggregate_loss(per_token_loss: Tensor, mask: Tensor, agg: str, *, max_len: int | None = None) -> Tensor:
    """Reduce a (B, T) per-token loss over the valid tokens of `mask` to a scalar.

    Modes:
        token_mean: sum over all valid tokens / number of valid tokens (DAPO).
        seq_mean_token_mean: mean over tokens within each sequence, then mean over sequences (GRPO; the
            BandPO paper's default).
        seq_mean_token_sum: sum over tokens within each sequence, then mean over sequences.
        seq_mean_token_sum_norm: Dr.GRPO: sum over tokens within each sequence divided by the constant
            `max_len` (default T, the padded length), then mean over sequences. Equals TRL's "dr_grpo"
            normalisation sum / (B · max_len) when no row is fully masked.

    Notes:
        Sequence means run over the rows with at least one valid token; a fully masked row (e.g. a
        truncated or filtered sample) contributes nothing and does not dilute the mean. An empty batch, or
        a batch with no valid token, gives exactly 0.0: still a tensor connected to the graph, so
        `.backward()` works and gives zero gradients. Masked positions are ignored even if they hold NaN.
    """
    if per_token_loss.dim() != 2:
        raise ValueError(f"per_token_loss must have shape (B, T), got {tuple(per_token_loss.shape)}")
    mask = prepare_mask(mask, per_token_loss.shape)
    if agg not in AGG_MODES:
        raise ValueError(f"unknown aggregation {agg!r}; valid modes: {list(AGG_MODES)}")
    masked = torch.where(mask, per_token_loss, 0.0)  # (B, T)
    if agg == "token_mean":
        return masked.sum() / mask.sum().clamp(min=1)
    tokens_per_seq = mask.sum(dim=-1)  # (B,)
    seq_sum = masked.sum(dim=-1)  # (B,)
    if agg == "seq_mean_token_mean":
        seq_loss = seq_sum / tokens_per_seq.clamp(min=1)
    elif agg == "seq_mean_token_sum":
        seq_loss = seq_sum
    else:
        horizon = max(per_token_loss.shape[-1], 1) if max_len is None else max_len
        if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
            raise ValueError(
                f"max_len must be a positive int (the constant Dr.GRPO divisor), got {max_len!r}"
            )
        seq_loss = seq_sum / horizon
    has_tokens = tokens_per_seq > 0  # (B,)
    return seq_loss.sum() / has_tokens.sum().clamp(min=1)  # rows without tokens have seq_loss exactly 0


# --- the surrogate -----------------------------------------------------------------------------------


def per_token_policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    bounds: RatioBounds | tuple[Tensor | float, Tensor | float],
    *,
    dual_clip_c: float | None = DUAL_CLIP_C,
    validate: bool = True,
) -> PerTokenPolicyLoss:
    """The clipped surrogate per token, before any aggregation (see the module docstring for the formula).

    Args:
        logp: (B, T) log-probs of the sampled tokens under the current policy; the only input that gets
            gradients.
        old_logp: (B, T) log-probs under the sampling (old) policy.
        advantages: (B,) per sequence or (B, T) per token.
        mask: (B, T) bool (or 0/1) marking valid completion tokens.
        bounds: (ratio_low, ratio_high), e.g. `method(old_logp)` computed once per rollout batch; tensors
            of shape (B, T) (or broadcastable) or floats. Upcast to the compute dtype, never rounded down.
        dual_clip_c: dual-clip constant c > 1 for A < 0 tokens; None disables it (`check_dual_clip_c`).
        validate: refuse, with one host sync, a mask with values other than 0/1 (bool masks need no
            check), and on valid tokens a non-finite advantage or NaN or crossed bounds (ratio_low >
            ratio_high). With `validate=False` nothing syncs and such values propagate.

    Returns:
        `PerTokenPolicyLoss`: the (B, T) per-token loss (0 on padding) and the detached ratio, log-ratio,
        advantages, mask and bounds that `policy_metrics` reads (nothing is recomputed there).
    """
    check_logp_pair(logp, old_logp, "old_logp")
    shape = logp.shape
    dtype = compute_dtype(logp.dtype)
    mask = prepare_mask(mask, shape, validate=validate)
    adv = prepare_advantages(advantages, shape, dtype)
    c = check_dual_clip_c(dual_clip_c)
    zero = torch.zeros((), dtype=dtype, device=logp.device)
    low, high = prepare_bounds(bounds, shape, zero)  # detached, (B, T) views
    if validate:
        check_values(adv, low, high, mask)
    adv = torch.where(mask, adv, zero)  # (B, T)

    diff = logp.to(dtype) - old_logp.detach().to(dtype)  # (B, T)
    log_ratio = torch.where(mask, diff, zero).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = log_ratio.exp()  # (B, T)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, low, high)
    per_token = torch.maximum(unclipped, clipped)
    if c is not None:
        per_token = torch.where(adv < 0, torch.minimum(per_token, -adv * c), per_token)
    per_token = torch.where(mask, per_token, zero)  # (B, T), exactly 0 on padding
    return PerTokenPolicyLoss(
        per_token_loss=per_token,
        ratio=ratio.detach(),
        log_ratio=log_ratio.detach(),
        advantages=adv,
        mask=mask,
        bounds=RatioBounds(low, high),
        old_logp=old_logp.detach(),
        dual_clip_c=c,
    )


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    method: str | BoundMethod = "band",
    agg: str = "seq_mean_token_mean",
    dual_clip_c: float | None = DUAL_CLIP_C,
    bounds: RatioBounds | tuple[Tensor | float, Tensor | float] | None = None,
    max_len: int | None = None,
    validate: bool = True,
) -> PolicyLossOutput:
    """Clipped policy-gradient loss with per-token ratio bounds (PPO/GRPO surrogate, BandPO's bounds).

    The composition `per_token_policy_loss` → `aggregate_loss` → `policy_metrics`.

    Args:
        logp: (B, T) log-probs of the sampled tokens under the current policy; the only input that gets
            gradients.
        old_logp: (B, T) log-probs under the sampling (old) policy.
        advantages: (B,) per sequence or (B, T) per token.
        mask: (B, T) bool (or 0/1) marking valid completion tokens.
        method: a registered method name (its defaults) or a method object (`bandpo.get_method`).
            Ignored when `bounds` is given.
        agg: aggregation mode, one of `AGG_MODES` (see `aggregate_loss`).
        dual_clip_c: dual-clip constant c > 1 for A < 0 tokens; None disables it (`check_dual_clip_c`).
        bounds: precomputed (ratio_low, ratio_high), e.g. `method(old_logp)` computed once per rollout
            batch; tensors of shape (B, T) (or broadcastable) or floats.
        max_len: constant divisor of `seq_mean_token_sum_norm` (default T).
        validate: see `per_token_policy_loss`.

    Returns:
        PolicyLossOutput with the scalar loss, the (B, T) per-token loss (0 where masked), the metrics
        (see `bound_metrics`, plus `loss/policy`) and the bounds used.
    """
    if agg not in AGG_MODES:
        raise ValueError(f"unknown aggregation {agg!r}; valid modes: {list(AGG_MODES)}")
    check_logp_pair(logp, old_logp, "old_logp")
    if bounds is None:
        bounds = resolve_method(method)(old_logp)
    terms = per_token_policy_loss(
        logp, old_logp, advantages, mask, bounds, dual_clip_c=dual_clip_c, validate=validate
    )
    loss = aggregate_loss(terms.per_token_loss, terms.mask, agg, max_len=max_len)
    metrics = policy_metrics(terms)
    metrics[mn.LOSS_POLICY] = loss.detach()
    return PolicyLossOutput(
        loss=loss, per_token_loss=terms.per_token_loss, metrics=metrics, bounds=terms.bounds
    )


# --- diagnostics -------------------------------------------------------------------------------------


@torch.no_grad()
def policy_metrics(terms: PerTokenPolicyLoss, *, bin_counts: bool = False) -> dict[str, Tensor]:
    """The clipping diagnostics of a `per_token_policy_loss` result, from its ratio (not recomputed).

    Keys (`bandpo.metric_names`): clip fractions (`clip/frac`, `_up`, `_down`, `_dual`), the fraction of
    tokens whose bound binds (ratio outside the interval, either sign of A), the upward/downward clip
    fraction per p_old bin (`PROB_BIN_EDGES`), mean bounds, ratio mean and max, and the approximate
    KL(π_old‖π_θ) estimators k1 = mean(-log r) and k3 = mean(r - 1 - log r). All are means over valid tokens
    (per bin: over the valid tokens of that bin) returned as detached 0-dim tensors, computed in a few fused
    reductions with no host sync. `bin_counts` adds the number of valid tokens in each p_old bin
    (`clip/tokens_<bin>`, `metric_names.CLIP_TOKENS_BINS`), so that a caller averaging the per-bin fractions
    over micro-batches can skip (or weight by) the micro-batches where a bin is empty.

    Notes:
        "up" = A > 0 and r > ratio_high; "down" = A < 0 and r < ratio_low: exactly the tokens whose
        gradient the clip removes. An empty selection (no valid token, or an empty p_old bin) gives 0.0,
        never NaN; a per-bin fraction of 0.0 with a bin count of 0 means "no such token", not "no clip".
    """
    ratio, log_ratio, adv, mask = terms.ratio, terms.log_ratio, terms.advantages, terms.mask
    low, high = terms.bounds
    c = terms.dual_clip_c
    dtype = ratio.dtype
    up = (adv > 0) & (ratio > high)  # (B, T): clipped term active above, no gradient (False on padding)
    down = (adv < 0) & (ratio < low)  # (B, T): clipped term active below, no gradient
    if c is None:
        dual = torch.zeros_like(mask)
    else:
        dual = (adv < 0) & (torch.maximum(ratio, torch.clamp(ratio, low, high)) > c)
    binding = ((ratio > high) | (ratio < low)) & mask
    events = torch.stack([up, down, up | down, dual, binding, mask]).reshape(6, -1).to(dtype)  # (6, N)
    counts = events.sum(dim=-1)  # (6,)
    fractions = counts[:5] / counts[5].clamp(min=1)  # (5,), 0.0 when no valid token
    values = torch.stack([low, high, ratio, -log_ratio, ratio - 1.0 - log_ratio]).reshape(5, -1)  # (5, N)
    means = torch.where(mask.reshape(1, -1), values, 0.0).sum(dim=-1) / counts[5].clamp(min=1)  # (5,)
    # ratio > 0, so zeros on padding never win the max; no valid token gives 0.0
    ratio_max = torch.where(mask, ratio, 0.0).amax() if ratio.numel() else ratio.new_zeros(())

    # p_old bins [e0, e1), [e1, e2), ..., [e_{n-1}, 1]: bin index = number of inner edges <= p_old, so
    # p_old >= 1 (old_logp >= 0) lands in the last bin; padding goes to an extra dump bin
    n_bins = len(mn.PROB_BIN_LABELS)
    p_old = terms.old_logp.to(dtype).exp().reshape(-1)  # (N,)
    index = torch.zeros_like(p_old, dtype=torch.long)
    for edge in mn.PROB_BIN_EDGES[1:-1]:
        index += p_old >= edge
    index = torch.where(mask.reshape(-1), index, n_bins)  # (N,)
    per_bin = torch.zeros(3, n_bins + 1, dtype=dtype, device=ratio.device)
    per_bin.scatter_add_(1, index.expand(3, -1), events[[0, 1, 5]])  # (3, n_bins + 1): up, down, valid
    bin_up, bin_down = per_bin[:2, :n_bins] / per_bin[2, :n_bins].clamp(min=1)  # 0.0 for an empty bin

    out: dict[str, Tensor] = {
        mn.CLIP_FRAC_UP: fractions[0],
        mn.CLIP_FRAC_DOWN: fractions[1],
        mn.CLIP_FRAC: fractions[2],
        mn.CLIP_FRAC_DUAL: fractions[3],
        mn.BOUND_BINDING_FRAC: fractions[4],
        mn.BOUNDS_LOW_MEAN: means[0],
        mn.BOUNDS_HIGH_MEAN: means[1],
        mn.RATIO_MEAN: means[2],
        mn.RATIO_MAX: ratio_max,
        mn.APPROX_KL_K1: means[3],
        mn.APPROX_KL_K3: means[4],
    }
    for i, label in enumerate(mn.PROB_BIN_LABELS):
        out[mn.clip_frac_up_bin(label)] = bin_up[i]
        out[mn.clip_frac_down_bin(label)] = bin_down[i]
        if bin_counts:
            out[mn.clip_tokens_bin(label)] = per_bin[2, i]
    return out


@torch.no_grad()
def bound_metrics(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    bounds: RatioBounds | tuple[Tensor | float, Tensor | float],
    *,
    dual_clip_c: float | None = DUAL_CLIP_C,
    validate: bool = True,
) -> dict[str, Tensor]:
    """The clipping diagnostics of `policy_loss` under any method's bounds, for callers that compute the loss
    themselves (e.g. TRL). `band_metrics` is its former name, kept as an alias.

    `policy_metrics(per_token_policy_loss(...), bin_counts=True)` without a graph: the keys of
    `policy_loss`'s metrics (less `loss/policy`) plus the per-bin token counts `clip/tokens_<bin>`. A
    caller that already has a `per_token_policy_loss` result calls `policy_metrics` on it instead.
    """
    terms = per_token_policy_loss(
        logp.detach(), old_logp, advantages, mask, bounds, dual_clip_c=dual_clip_c, validate=validate
    )
    return policy_metrics(terms, bin_counts=True)


band_metrics = bound_metrics  # the former name (it works for any method, not Band only)
