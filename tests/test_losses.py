"""The shared surrogate: equality with a few-line reference, the paper's point, edge cases, metrics."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from bandpo import metric_names as mn
from bandpo.losses import (
    AGG_MODES,
    DUAL_CLIP_C,
    PolicyLossOutput,
    aggregate_loss,
    band_metrics,
    bound_metrics,
    check_dual_clip_c,
    per_token_policy_loss,
    policy_loss,
    policy_metrics,
)
from bandpo.methods import get_method, list_methods

ALL_METRIC_KEYS = {
    mn.LOSS_POLICY,
    mn.CLIP_FRAC,
    mn.CLIP_FRAC_UP,
    mn.CLIP_FRAC_DOWN,
    mn.CLIP_FRAC_DUAL,
    mn.BOUND_BINDING_FRAC,
    mn.BOUNDS_LOW_MEAN,
    mn.BOUNDS_HIGH_MEAN,
    mn.RATIO_MEAN,
    mn.RATIO_MAX,
    mn.APPROX_KL_K1,
    mn.APPROX_KL_K3,
    *mn.CLIP_FRAC_UP_BINS,
    *mn.CLIP_FRAC_DOWN_BINS,
}


def make_batch(seed: int = 0, batch: int = 6, length: int = 9, dtype: torch.dtype = torch.float64):
    """Random (logp, old_logp, advantages, mask) with ratios spread over [0.2, 5] and every row non-empty."""
    gen = torch.Generator().manual_seed(seed)
    p_old = torch.rand(batch, length, generator=gen, dtype=torch.float64) ** 3  # many low-p tokens
    old_logp = p_old.clamp(min=1e-6).log()
    log_ratio = (torch.rand(batch, length, generator=gen, dtype=torch.float64) - 0.5) * 3.2
    logp = (old_logp + log_ratio).clamp(max=0.0)
    advantages = torch.randn(batch, generator=gen, dtype=torch.float64)
    mask = torch.rand(batch, length, generator=gen) < 0.7
    mask[:, 0] = True
    return logp.to(dtype), old_logp.to(dtype), advantages.to(dtype), mask


def reference_per_token(logp, old_logp, advantages, low, high, c):
    """The paper's per-token loss, written out naively."""
    ratio = torch.exp(logp - old_logp)
    a = advantages[:, None]
    loss = torch.max(-a * ratio, -a * torch.clamp(ratio, low, high))
    if c is not None:
        loss = torch.where(a < 0, torch.min(loss, -a * c), loss)
    return loss


def reference_agg(per_token, mask, agg, max_len=None):
    m = mask.to(per_token.dtype)
    if agg == "token_mean":
        return (per_token * m).sum() / m.sum()
    if agg == "seq_mean_token_mean":
        return ((per_token * m).sum(1) / m.sum(1)).mean()
    if agg == "seq_mean_token_sum":
        return (per_token * m).sum(1).mean()
    return ((per_token * m).sum(1) / (max_len or per_token.shape[1])).mean()


# --- equality with the reference --------------------------------------------------------------------


@pytest.mark.parametrize("name", list_methods())
@pytest.mark.parametrize("agg", AGG_MODES)
@pytest.mark.parametrize("c", [10.0, None])
def test_loss_and_gradient_equal_reference(name: str, agg: str, c: float | None) -> None:
    logp, old_logp, advantages, mask = make_batch(seed=1)
    low, high = get_method(name)(old_logp)
    logp_a = logp.clone().requires_grad_()
    out = policy_loss(logp_a, old_logp, advantages, mask, method=name, agg=agg, dual_clip_c=c)
    out.loss.backward()
    logp_b = logp.clone().requires_grad_()
    ref = reference_agg(reference_per_token(logp_b, old_logp, advantages, low, high, c), mask, agg)
    ref.backward()
    assert out.loss.item() == pytest.approx(ref.item(), rel=1e-12, abs=1e-12)
    assert torch.allclose(logp_a.grad, logp_b.grad, rtol=1e-10, atol=1e-12)
    expected_tokens = torch.where(mask, reference_per_token(logp, old_logp, advantages, low, high, c), 0.0)
    assert torch.allclose(out.per_token_loss.detach(), expected_tokens, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", list_methods())
@pytest.mark.parametrize("agg", AGG_MODES)
def test_policy_loss_is_per_token_then_aggregate_then_metrics(name: str, agg: str) -> None:
    logp, old_logp, advantages, mask = make_batch(seed=10)
    bounds = get_method(name)(old_logp)
    logp_a, logp_b = logp.clone().requires_grad_(), logp.clone().requires_grad_()
    out = policy_loss(logp_a, old_logp, advantages, mask, bounds=bounds, agg=agg)
    terms = per_token_policy_loss(logp_b, old_logp, advantages, mask, bounds)
    loss = aggregate_loss(terms.per_token_loss, terms.mask, agg)
    # the same operations on the same tensors in one process: equal, not merely close
    assert torch.equal(out.loss, loss) and torch.equal(out.per_token_loss, terms.per_token_loss)
    assert torch.equal(out.bounds.ratio_low, terms.bounds.ratio_low)
    metrics = policy_metrics(terms)
    assert set(out.metrics) == set(metrics) | {mn.LOSS_POLICY}
    assert all(torch.equal(out.metrics[key], value) for key, value in metrics.items())
    out.loss.backward()
    loss.backward()
    assert torch.equal(logp_a.grad, logp_b.grad)
    # the per-token part carries the graph; what the metrics read does not
    assert terms.per_token_loss.requires_grad
    assert not any(t.requires_grad for t in (terms.ratio, terms.log_ratio, terms.advantages, *terms.bounds))


def test_policy_metrics_read_the_ratio_they_are_given() -> None:
    logp, old_logp, advantages, mask = make_batch(seed=11)
    terms = per_token_policy_loss(logp, old_logp, advantages, mask, (0.8, 1.2))
    doubled = dataclasses.replace(terms, ratio=terms.ratio * 2)
    ratio_mean = policy_metrics(terms)[mn.RATIO_MEAN]
    assert policy_metrics(doubled)[mn.RATIO_MEAN].item() == pytest.approx(2 * ratio_mean.item(), rel=1e-12)


def test_validate_false_skips_the_value_checks() -> None:
    logp, old_logp, advantages, mask = make_batch(batch=3, length=4)
    half = mask.double() * 0.5
    with pytest.raises(ValueError, match="mask must hold only 0 and 1"):
        per_token_policy_loss(logp, old_logp, advantages, half, (0.8, 1.2))
    terms = per_token_policy_loss(logp, old_logp, advantages, half, (0.8, 1.2), validate=False)
    assert torch.equal(terms.mask, mask)  # read as mask != 0, unchecked
    crossed = per_token_policy_loss(logp, old_logp, advantages, mask, (1.2, 0.8), validate=False)
    assert torch.isfinite(crossed.per_token_loss).all()


def test_clip_higher_with_equal_eps_equals_clip() -> None:
    logp, old_logp, advantages, mask = make_batch(seed=2)
    a = policy_loss(logp, old_logp, advantages, mask, method=get_method("clip_higher", eps_high=0.2))
    b = policy_loss(logp, old_logp, advantages, mask, method="clip")
    assert torch.equal(a.loss, b.loss) and torch.equal(a.per_token_loss, b.per_token_loss)
    # and differs at the default eps_high 0.28 on this batch (the test can fail)
    c = policy_loss(logp, old_logp, advantages, mask, method="clip_higher")
    assert not torch.equal(c.loss, b.loss)


def test_precomputed_bounds_equal_method() -> None:
    logp, old_logp, advantages, mask = make_batch(seed=3)
    by_name = policy_loss(logp, old_logp, advantages, mask, method="band")
    precomputed = policy_loss(
        logp, old_logp, advantages, mask, method="clip", bounds=get_method("band")(old_logp)
    )
    assert torch.equal(by_name.loss, precomputed.loss)
    as_floats = policy_loss(logp, old_logp, advantages, mask, bounds=(0.8, 1.2))
    assert torch.allclose(as_floats.loss, policy_loss(logp, old_logp, advantages, mask, method="clip").loss)
    method_object = policy_loss(logp, old_logp, advantages, mask, method=get_method("band", delta=0.2))
    assert not torch.equal(method_object.loss, by_name.loss)


def test_token_advantages_equal_sequence_advantages() -> None:
    logp, old_logp, advantages, mask = make_batch(seed=4)
    a = policy_loss(logp, old_logp, advantages, mask)
    b = policy_loss(logp, old_logp, advantages[:, None].expand_as(logp).clone(), mask)
    c = policy_loss(logp, old_logp, advantages[:, None], mask)
    assert torch.equal(a.loss, b.loss) and torch.equal(a.loss, c.loss)


@pytest.mark.parametrize("name", list_methods())
def test_gradients_reach_logp_only(name: str) -> None:
    logp, old_logp, advantages, mask = make_batch(seed=5)
    logp.requires_grad_()
    old_logp.requires_grad_()
    advantages.requires_grad_()
    low, high = get_method(name)(old_logp.detach())
    low.requires_grad_()
    high.requires_grad_()
    out = policy_loss(logp, old_logp, advantages, mask, bounds=(low, high))
    out.loss.backward()
    assert logp.grad is not None and logp.grad.abs().sum() > 0
    assert old_logp.grad is None and advantages.grad is None and low.grad is None and high.grad is None
    assert all(not v.requires_grad for v in out.metrics.values())
    assert logp.grad[~mask].abs().sum() == 0  # padding gets no gradient


# --- the paper's point ------------------------------------------------------------------------------


def single_token_grad(name: str, p_old: float, ratio: float, advantage: float) -> float:
    old_logp = torch.tensor([[math.log(p_old)]], dtype=torch.float64)
    logp = (old_logp + math.log(ratio)).requires_grad_()
    out = policy_loss(
        logp,
        old_logp,
        torch.tensor([advantage], dtype=torch.float64),
        torch.ones(1, 1, dtype=torch.bool),
        method=name,
    )
    out.loss.backward()
    return logp.grad.item()


def test_rare_token_with_positive_advantage_keeps_gradient_under_band_only() -> None:
    # p_old = 0.08, A > 0, ratio 1.5: Band-KL(0.05) allows up to ≈ 2.41, clip 1.2, Clip-Higher 1.28
    for name in ("band", "band_upper", "dcpo"):
        assert single_token_grad(name, 0.08, 1.5, 1.0) == pytest.approx(-1.5)  # d(-A·r)/d logp = -A·r
    for name in ("clip", "clip_higher", "band_lower"):
        assert single_token_grad(name, 0.08, 1.5, 1.0) == 0.0


def test_likely_token_is_held_tighter_by_band_than_by_clip() -> None:
    # p_old = 0.9, A > 0, ratio 1.1: Band-KL's upper ≈ 1.076 < 1.1 < clip's 1.2
    for name in ("band", "band_upper"):
        assert single_token_grad(name, 0.9, 1.1, 1.0) == 0.0
    for name in ("clip", "clip_higher"):
        assert single_token_grad(name, 0.9, 1.1, 1.0) == pytest.approx(-1.1)


def test_band_lower_side_lets_negative_advantage_push_rare_tokens_down() -> None:
    # p_old = 0.01, A < 0, ratio 0.5: Band's lower ≈ 0.0025 keeps pushing; a fixed lower 0.8 stops it
    for name in ("band", "band_lower"):
        assert single_token_grad(name, 0.01, 0.5, -1.0) == pytest.approx(0.5)
    for name in ("band_upper", "clip", "clip_higher"):
        assert single_token_grad(name, 0.01, 0.5, -1.0) == 0.0


# --- dual clip and the log-ratio clamp ---------------------------------------------------------------


def test_dual_clip_caps_negative_advantage_loss() -> None:
    old_logp = torch.tensor([[math.log(0.001)]], dtype=torch.float64)
    logp = (old_logp + math.log(15.0)).requires_grad_()
    args = (old_logp, torch.tensor([-2.0], dtype=torch.float64), torch.ones(1, 1, dtype=torch.bool))
    out = policy_loss(logp, *args, method="clip", dual_clip_c=10.0)
    assert out.loss.item() == pytest.approx(20.0)  # -A·c
    out.loss.backward()
    assert logp.grad.item() == 0.0
    assert out.metrics[mn.CLIP_FRAC_DUAL].item() == 1.0
    for off in (None, math.inf):
        free = policy_loss(logp, *args, method="clip", dual_clip_c=off)
        assert free.loss.item() == pytest.approx(30.0)  # -A·r
        assert free.metrics[mn.CLIP_FRAC_DUAL].item() == 0.0


@pytest.mark.parametrize("c", [1.0, 0.5, -3.0, float("nan"), True, "10"])
def test_bad_dual_clip_raises(c) -> None:
    logp, old_logp, advantages, mask = make_batch()
    with pytest.raises(ValueError, match="dual_clip_c"):
        policy_loss(logp, old_logp, advantages, mask, dual_clip_c=c)


def test_dual_clip_validator_has_one_off_value() -> None:
    assert check_dual_clip_c(None) is None and check_dual_clip_c(math.inf) is None
    assert check_dual_clip_c(10) == 10.0 and isinstance(check_dual_clip_c(10), float)
    for bad in (1, 0.5, -math.inf, math.nan, False, "10"):
        with pytest.raises(ValueError, match=r"^policy_loss\.dual_clip_c must be a number > 1 .* or None"):
            check_dual_clip_c(bad, "policy_loss.dual_clip_c")
    assert DUAL_CLIP_C == 10.0


def test_log_ratio_is_clamped_to_20() -> None:
    old_logp = torch.tensor([[-40.0, -1.0]], dtype=torch.float64)
    logp = torch.tensor([[-1.0, -40.0]], dtype=torch.float64, requires_grad=True)
    out = policy_loss(
        logp,
        old_logp,
        torch.tensor([1.0], dtype=torch.float64),
        torch.ones(1, 2, dtype=torch.bool),
        method=get_method("band", ratio_max=math.inf),
        dual_clip_c=None,
    )
    assert out.metrics[mn.RATIO_MAX].item() == pytest.approx(math.exp(20.0))
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(logp.grad).all()


# --- aggregation ------------------------------------------------------------------------------------


HAND_LOSS = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
HAND_MASK = torch.tensor([[True, True, True], [True, False, False]])


@pytest.mark.parametrize(
    ("agg", "expected"),
    [
        ("token_mean", 2.5),
        ("seq_mean_token_mean", 3.0),
        ("seq_mean_token_sum", 5.0),
        ("seq_mean_token_sum_norm", 10 / 6),
    ],
)
def test_aggregation_hand_values(agg: str, expected: float) -> None:
    assert aggregate_loss(HAND_LOSS, HAND_MASK, agg).item() == pytest.approx(expected)
    # an extra fully masked row holding garbage changes nothing
    loss = torch.cat([HAND_LOSS, torch.tensor([[math.nan, math.inf, 9.0]])])
    mask = torch.cat([HAND_MASK, torch.zeros(1, 3, dtype=torch.bool)])
    assert aggregate_loss(loss, mask, agg).item() == pytest.approx(expected)
    assert aggregate_loss(HAND_LOSS, HAND_MASK.float(), agg).item() == pytest.approx(expected)


def test_dr_grpo_max_len() -> None:
    assert aggregate_loss(HAND_LOSS, HAND_MASK, "seq_mean_token_sum_norm", max_len=5).item() == pytest.approx(
        1.0
    )
    with pytest.raises(ValueError, match="max_len"):
        aggregate_loss(HAND_LOSS, HAND_MASK, "seq_mean_token_sum_norm", max_len=0)


def test_unknown_aggregation_raises() -> None:
    with pytest.raises(ValueError, match="seq_mean_token_mean"):
        aggregate_loss(HAND_LOSS, HAND_MASK, "seq-mean-token-mean")
    logp, old_logp, advantages, mask = make_batch()
    with pytest.raises(ValueError, match="valid modes"):
        policy_loss(logp, old_logp, advantages, mask, agg="mean")


# --- edge cases in every method and mode -----------------------------------------------------------


@pytest.mark.parametrize("name", list_methods())
@pytest.mark.parametrize("agg", AGG_MODES)
@pytest.mark.parametrize(
    "case", ["empty_batch", "no_tokens", "all_masked", "masked_row_and_garbage", "zero_adv"]
)
def test_edge_cases_are_finite_in_every_method(name: str, agg: str, case: str) -> None:
    logp, old_logp, advantages, mask = make_batch(seed=6, batch=4, length=5)
    if case == "empty_batch":
        logp, old_logp, advantages, mask = logp[:0], old_logp[:0], advantages[:0], mask[:0]
    elif case == "no_tokens":
        logp, old_logp, mask = logp[:, :0], old_logp[:, :0], mask[:, :0]
    elif case == "all_masked":
        mask = torch.zeros_like(mask)
    elif case == "masked_row_and_garbage":
        mask[1] = False
        logp[1] = -math.inf
        old_logp[1, :2] = math.nan
        advantages = advantages.clone()
    else:
        advantages = torch.zeros_like(advantages)  # a zero-variance group
    logp = logp.clone().requires_grad_()
    out = policy_loss(logp, old_logp, advantages, mask, method=name, agg=agg)
    assert isinstance(out, PolicyLossOutput)
    assert out.loss.shape == () and torch.isfinite(out.loss)
    out.loss.backward()
    assert torch.isfinite(logp.grad).all()
    assert set(out.metrics) == ALL_METRIC_KEYS
    assert all(torch.isfinite(v) and v.shape == () for v in out.metrics.values())
    if case in ("empty_batch", "no_tokens", "all_masked", "zero_adv"):
        assert out.loss.item() == 0.0 and (logp.grad == 0).all()
    if case in ("empty_batch", "no_tokens", "all_masked"):
        assert all(v.item() == 0.0 for v in out.metrics.values())
    if case == "masked_row_and_garbage":
        keep = torch.ones(4, dtype=torch.bool)
        keep[1] = False
        clean = policy_loss(
            logp.detach()[keep], old_logp[keep], advantages[keep], mask[keep], method=name, agg=agg
        )
        assert out.loss.item() == pytest.approx(clean.loss.item(), rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", list_methods())
def test_low_precision_inputs(name: str, dtype: torch.dtype) -> None:
    logp, old_logp, advantages, mask = make_batch(seed=7, dtype=dtype)
    logp.requires_grad_()
    out = policy_loss(logp, old_logp, advantages, mask, method=name)
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    out.loss.backward()
    assert logp.grad.dtype == dtype and torch.isfinite(logp.grad).all()
    full = policy_loss(logp.detach().double(), old_logp.double(), advantages.double(), mask, method=name)
    assert out.loss.item() == pytest.approx(full.loss.item(), rel=0.05, abs=0.02)


# --- metrics ----------------------------------------------------------------------------------------


def test_metrics_on_a_hand_made_batch() -> None:
    # clip [0.8, 1.2]; tokens: (p_old, ratio, A)
    tokens = [
        (0.005, 1.5, 1.0),  # up-clipped, bin p0_001
        (0.05, 0.5, -1.0),  # down-clipped, bin p001_01
        (0.3, 1.5, -1.0),  # outside the bound but not clipped (A < 0 above): binding only
        (0.7, 1.0, 1.0),  # inside
        (0.95, 1.1, 1.0),  # inside, bin p09_1
        (0.3, 15.0, -1.0),  # dual-clipped (ratio > 10) and binding
    ]
    p_old = torch.tensor([[t[0] for t in tokens] + [0.5]], dtype=torch.float64)
    ratio = torch.tensor([[t[1] for t in tokens] + [3.0]], dtype=torch.float64)
    adv = torch.tensor([[t[2] for t in tokens] + [1.0]], dtype=torch.float64)
    mask = torch.tensor([[True] * len(tokens) + [False]])  # the last token is padding and must not count
    old_logp = p_old.log()
    logp = old_logp + ratio.log()
    m = policy_loss(logp, old_logp, adv, mask, method="clip").metrics
    n = len(tokens)
    assert m[mn.CLIP_FRAC_UP].item() == pytest.approx(1 / n)
    assert m[mn.CLIP_FRAC_DOWN].item() == pytest.approx(1 / n)
    assert m[mn.CLIP_FRAC].item() == pytest.approx(2 / n)
    assert m[mn.CLIP_FRAC_DUAL].item() == pytest.approx(1 / n)
    assert m[mn.BOUND_BINDING_FRAC].item() == pytest.approx(4 / n)
    assert m[mn.clip_frac_up_bin("p0_001")].item() == 1.0
    assert m[mn.clip_frac_down_bin("p001_01")].item() == 1.0
    assert m[mn.clip_frac_up_bin("p01_05")].item() == 0.0  # 2 tokens, none up-clipped
    assert m[mn.clip_frac_up_bin("p05_09")].item() == 0.0 and m[mn.clip_frac_up_bin("p09_1")].item() == 0.0
    assert m[mn.BOUNDS_LOW_MEAN].item() == pytest.approx(0.8) and m[
        mn.BOUNDS_HIGH_MEAN
    ].item() == pytest.approx(1.2)
    r = ratio[0, :n]
    assert m[mn.RATIO_MEAN].item() == pytest.approx(r.mean().item())
    assert m[mn.RATIO_MAX].item() == pytest.approx(15.0)
    assert m[mn.APPROX_KL_K1].item() == pytest.approx((-r.log()).mean().item())
    assert m[mn.APPROX_KL_K3].item() == pytest.approx((r - 1 - r.log()).mean().item())
    assert m[mn.LOSS_POLICY].item() == pytest.approx(
        policy_loss(logp, old_logp, adv, mask, method="clip").loss.item()
    )


def test_metrics_per_bin_split_and_bound_metrics_agree() -> None:
    logp, old_logp, advantages, mask = make_batch(seed=8, batch=16, length=32)
    bounds = get_method("clip")(old_logp)
    out = policy_loss(logp, old_logp, advantages, mask, bounds=bounds)
    standalone = bound_metrics(logp, old_logp, advantages, mask, bounds)
    assert set(standalone) == (ALL_METRIC_KEYS - {mn.LOSS_POLICY}) | set(mn.CLIP_TOKENS_BINS)
    assert not set(mn.CLIP_TOKENS_BINS) & set(out.metrics)  # counts are bound_metrics' own
    for key, value in standalone.items():
        if key not in mn.CLIP_TOKENS_BINS:
            assert torch.equal(value, out.metrics[key]), key
    # the per-bin fractions, weighted by bin size, add up to the overall fraction
    p = old_logp.exp()
    edges = mn.PROB_BIN_EDGES
    total = 0.0
    for i, key in enumerate(mn.CLIP_FRAC_UP_BINS):
        upper_ok = p <= edges[i + 1] if i == len(mn.CLIP_FRAC_UP_BINS) - 1 else p < edges[i + 1]
        in_bin = mask & (p >= edges[i]) & upper_ok
        assert standalone[mn.CLIP_TOKENS_BINS[i]].item() == in_bin.sum().item()
        total += out.metrics[key].item() * in_bin.sum().item()
    assert total / mask.sum().item() == pytest.approx(out.metrics[mn.CLIP_FRAC_UP].item())
    assert out.metrics[mn.CLIP_FRAC_UP].item() > 0


def test_bound_metrics_bin_counts_tell_an_empty_bin_from_an_unclipped_one() -> None:
    """An empty p_old bin reports fraction 0.0 (documented) and count 0; a populated one its count."""
    logp = torch.log(torch.tensor([[0.5, 0.5, 0.5, 0.5]], dtype=torch.float64))
    old_logp = torch.log(torch.tensor([[0.2, 0.3, 0.95, 0.2]], dtype=torch.float64))  # bins p01_05, p09_1
    mask = torch.tensor([[True, True, True, False]])
    m = bound_metrics(logp, old_logp, torch.tensor([1.0]), mask, (0.8, 1.2))
    counts = {label: m[mn.clip_tokens_bin(label)].item() for label in mn.PROB_BIN_LABELS}
    assert counts == {"p0_001": 0.0, "p001_01": 0.0, "p01_05": 2.0, "p05_09": 0.0, "p09_1": 1.0}
    assert m[mn.clip_frac_up_bin("p01_05")].item() == 1.0  # ratios 2.5 and 1.67 > 1.2
    assert m[mn.clip_frac_up_bin("p09_1")].item() == 0.0  # populated, nothing clipped
    assert m[mn.clip_frac_up_bin("p0_001")].item() == 0.0  # empty: 0.0, told apart by its count
    for key in mn.CLIP_TOKENS_BINS:
        assert m[key].dtype == torch.float64 and m[key].dim() == 0


# --- input checks -----------------------------------------------------------------------------------


def test_shape_errors_say_how_to_fix() -> None:
    logp, old_logp, advantages, mask = make_batch(batch=3, length=4)
    with pytest.raises(ValueError, match="unsqueeze"):
        policy_loss(logp[0], old_logp[0], advantages, mask[0])
    with pytest.raises(ValueError, match="old_logp must have the same shape"):
        policy_loss(logp, old_logp[:, :3], advantages, mask)
    with pytest.raises(ValueError, match="mask must have the same shape"):
        policy_loss(logp, old_logp, advantages, mask[:, :3])
    with pytest.raises(ValueError, match=r"advantages must have shape \(B,\)"):
        policy_loss(logp, old_logp, advantages[:2], mask)
    with pytest.raises(ValueError, match=r"bounds\.ratio_high"):
        policy_loss(logp, old_logp, advantages, mask, bounds=(0.8, torch.ones(5)))
    with pytest.raises(TypeError, match="RatioBounds"):
        policy_loss(logp, old_logp, advantages, mask, bounds=torch.ones(3, 4))
    with pytest.raises(TypeError, match="floating-point"):
        policy_loss(logp.long(), old_logp, advantages, mask)
    with pytest.raises(ValueError, match="valid methods"):
        policy_loss(logp, old_logp, advantages, mask, method="ppo")


# --- values refused ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0.5, math.nan, 2.0, -1.0])
def test_mask_values_other_than_0_and_1_are_refused(bad: float) -> None:
    logp, old_logp, advantages, mask = make_batch(batch=3, length=4)
    float_mask = mask.double()
    float_mask[1, 2] = bad
    with pytest.raises(ValueError, match="mask must hold only 0 and 1"):
        policy_loss(logp, old_logp, advantages, float_mask)
    with pytest.raises(ValueError, match="mask must hold only 0 and 1"):
        aggregate_loss(torch.ones(3, 4), float_mask, "token_mean")
    # 0/1 floats and ints are fine and equal the bool mask
    ref = policy_loss(logp, old_logp, advantages, mask).loss
    assert torch.equal(policy_loss(logp, old_logp, advantages, mask.double()).loss, ref)
    assert torch.equal(policy_loss(logp, old_logp, advantages, mask.long()).loss, ref)


def test_crossed_or_nan_bounds_are_refused() -> None:
    logp, old_logp, advantages, mask = make_batch(batch=3, length=4)
    with pytest.raises(ValueError, match=r"ratio_low <= ratio_high.*\[1.2, 0.8\]"):
        policy_loss(logp, old_logp, advantages, mask, bounds=(1.2, 0.8))
    low = torch.full((3, 4), 0.8, dtype=torch.float64)
    low[0, 0] = math.nan  # token 0 is valid in every row
    with pytest.raises(ValueError, match="ratio_low <= ratio_high"):
        policy_loss(logp, old_logp, advantages, mask, bounds=(low, 1.2))
    # a NaN old_logp on a valid token would give NaN bounds: refused, not a silent NaN loss
    nan_old = old_logp.clone()
    nan_old[0, 0] = math.nan
    with pytest.raises(ValueError, match="ratio_low <= ratio_high"):
        policy_loss(logp, nan_old, advantages, mask, method="band")
    # crossed bounds on padding only are ignored
    low[0, 0] = 0.8
    pad = (~mask).nonzero()[0].tolist()
    low[pad[0], pad[1]] = 5.0
    assert torch.isfinite(policy_loss(logp, old_logp, advantages, mask, bounds=(low, 1.2)).loss)


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_non_finite_advantages_are_refused(bad: float) -> None:
    logp, old_logp, advantages, mask = make_batch(batch=3, length=4)
    advantages = advantages.clone()
    advantages[1] = bad
    with pytest.raises(ValueError, match=r"advantages must be finite on valid tokens.*row 1"):
        policy_loss(logp.requires_grad_(), old_logp, advantages, mask)
    # on padding only (a per-token advantage) it is ignored
    per_token = advantages[:, None].expand(3, 4).clone()
    per_token[1] = 0.0
    pad = (~mask).nonzero()[0].tolist()
    per_token[pad[0], pad[1]] = bad
    assert torch.isfinite(policy_loss(logp, old_logp, per_token, mask).loss)


# --- low-precision inputs: bounds, ratio and comparison in float32 ----------------------------------


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", list_methods())
def test_low_precision_log_probs_get_float32_bounds_and_ratio(
    name: str, dtype: torch.dtype, autocast: bool
) -> None:
    """As under verl's bf16 mixed precision, where CPU autocast hands the loss bf16 log-probs."""
    logp, old_logp, advantages, mask = make_batch(seed=9, dtype=dtype)
    logp.requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = policy_loss(logp, old_logp, advantages, mask, method=name)
    reference = get_method(name)(old_logp.float())  # the same inputs, upcast first
    for used, ref in zip(out.bounds, reference, strict=True):
        assert used.dtype == torch.float32
        assert torch.equal(used, ref)
    assert out.loss.dtype == torch.float32 and out.per_token_loss.dtype == torch.float32
    # the loss equals the float32 computation of the same (exactly representable) inputs
    full = policy_loss(logp.detach().float(), old_logp.float(), advantages.float(), mask, method=name)
    assert torch.allclose(out.per_token_loss.detach(), full.per_token_loss, rtol=0, atol=0)
    for key, value in full.metrics.items():
        assert value.dtype == torch.float32
        assert torch.equal(out.metrics[key], value), key


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_ratio_inside_the_float32_bound_is_not_clipped(dtype: torch.dtype) -> None:
    # clip eps 0.05: ratio e^0.046875 = 1.048 lies inside [0.95, 1.05] but above bf16's 1.046875
    old_logp = torch.tensor([[-1.0]], dtype=dtype)
    logp = torch.tensor([[-0.953125]], dtype=dtype, requires_grad=True)
    method = get_method("clip", eps_low=0.05, eps_high=0.05)
    out = policy_loss(logp, old_logp, torch.tensor([1.0]), torch.ones(1, 1, dtype=torch.bool), method=method)
    assert out.bounds.ratio_high.item() == torch.tensor(1.05).item()
    assert out.bounds.ratio_low.item() == torch.tensor(0.95).item()
    assert out.metrics[mn.CLIP_FRAC_UP].item() == 0.0
    out.loss.backward()
    assert logp.grad.item() == pytest.approx(-math.exp(0.046875), rel=1e-2)  # d(-A·r)/d logp, not 0


def test_band_metrics_is_the_former_name_of_bound_metrics() -> None:
    import bandpo

    assert band_metrics is bound_metrics and bandpo.band_metrics is bandpo.bound_metrics is bound_metrics
