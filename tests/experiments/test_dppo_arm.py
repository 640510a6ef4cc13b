"""The DPPO-equivalent arm `band:ratio_max=inf`: it parses as a compare method, and its clipped surrogate passes a
gradient on exactly the tokens that verl's `dppo_kl` keeps (its binary-KL valid mask), re-implemented here."""

from __future__ import annotations

import math

import torch

from bandpo.experiments.arms import parse_method_specs
from bandpo.losses import policy_loss


def _dppo_kl_valid_mask(old_logp, logp, advantages, delta: float):
    """verl `compute_policy_loss_dppo_kl`'s valid mask, written out: the token's binary (two-point) KL from the
    old policy is within delta, or the update moves its probability against the advantage's direction."""
    prob, old_prob = logp.exp(), old_logp.exp()
    binary_kl = old_prob * (old_logp - logp) + (1 - old_prob) * torch.log((1 - old_prob) / (1 - prob))
    positive = (binary_kl <= delta) | (prob <= old_prob)
    negative = (binary_kl <= delta) | (prob >= old_prob)
    return torch.where(advantages > 0, positive, negative), binary_kl


def test_dppo_arm_parses_with_an_infinite_cap_and_its_own_dual_clip(tmp_path) -> None:
    from bandpo.experiments.lm_compare import build_config

    (spec,) = parse_method_specs(["band:ratio_max=inf,dual_clip_c=20"])
    assert spec.name == "band" and spec.params == {"ratio_max": math.inf, "dual_clip_c": 20}
    assert spec.build().ratio_max == math.inf  # dual_clip_c is a loss setting, not a method parameter
    assert spec.slug == "band__ratio_max=inf_dual_clip_c=20"
    config = build_config(spec, 0, tmp_path, {})
    assert config.method == "band" and config.ratio_max == math.inf and config.dual_clip_c == 20


def test_band_without_cap_keeps_the_tokens_dppo_kl_keeps() -> None:
    generator = torch.Generator().manual_seed(0)
    delta = 0.05
    old_p = torch.rand(4000, generator=generator, dtype=torch.float64) * 0.98 + 0.01  # (N,)
    # new probabilities spread on both sides of the old ones, up to 30x (beyond the usual cap of 10)
    ratio = torch.exp(torch.randn(4000, generator=generator, dtype=torch.float64) * 1.2)
    new_p = (old_p * ratio).clamp(1e-6, 1 - 1e-6)
    old_logp, logp = old_p.log()[None], new_p.log()[None]  # (1, N)
    advantages = torch.where(torch.rand(4000, generator=generator) < 0.5, 1.0, -1.0).double()[None]
    (spec,) = parse_method_specs(["band:ratio_max=inf"])
    logp = logp.clone().requires_grad_(True)
    out = policy_loss(
        logp,
        old_logp,
        advantages,
        torch.ones_like(logp, dtype=torch.bool),
        method=spec.build(),
        dual_clip_c=None,
    )
    out.loss.backward()
    band_keeps = logp.grad != 0
    dppo_keeps, binary_kl = _dppo_kl_valid_mask(old_logp, logp.detach(), advantages, delta)
    # away from the boundary (where the two solvers' rounding may fall on either side) the masks agree
    clear = (binary_kl - delta).abs() > 1e-4
    assert clear.float().mean() > 0.9 and (~dppo_keeps & clear).any() and (dppo_keeps & clear).any()
    assert torch.equal(band_keeps[clear], dppo_keeps[clear])
