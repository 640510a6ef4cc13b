"""GRPO-family advantages: hand values, equal-reward groups, group layout and input checks."""

from __future__ import annotations

import pytest
import torch

from bandpo.advantages import (
    ADVANTAGE_ESTIMATORS,
    compute_advantages,
    dr_grpo_advantages,
    grpo_advantages,
    rloo_advantages,
)


def test_grpo_hand_values() -> None:
    # mean 0.25, unbiased std √((0.75² + 3·0.25²)/3) = 0.5
    adv = grpo_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), 4, eps=0.0)
    assert adv.tolist() == pytest.approx([1.5, -0.5, -0.5, -0.5])


def test_grpo_matches_paper_log_max_advantage() -> None:
    # ±1 rewards, 1 of 16 correct: the official logs show a max advantage of 3.75
    rewards = torch.tensor([1.0] + [-1.0] * 15)
    assert grpo_advantages(rewards, 16).max().item() == pytest.approx(3.75, rel=1e-5)


def test_grpo_groups_are_independent_and_match_torch_std() -> None:
    rewards = torch.randn(5 * 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    adv = grpo_advantages(rewards, 8)
    grouped = rewards.view(5, 8)
    ref = (grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True) + 1e-6)
    assert torch.allclose(adv, ref.reshape(-1), rtol=1e-12)
    assert adv.dtype == torch.float64
    # changing one group leaves the others alone
    changed = rewards.clone()
    changed[:8] += 100
    assert torch.equal(grpo_advantages(changed, 8)[8:], adv[8:])


def test_dr_grpo_and_no_std_are_mean_centred() -> None:
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 4.0])
    expected = [0.5, -0.5, 0.0, 0.0, -1.0, 1.0]
    assert dr_grpo_advantages(rewards[:4], 2).tolist() == pytest.approx([0.5, -0.5, 0.0, 0.0])
    assert dr_grpo_advantages(rewards, 2).tolist() == pytest.approx(expected)
    assert compute_advantages(rewards, 2, "grpo_no_std").tolist() == pytest.approx(expected)
    assert compute_advantages(rewards, 2, "dr_grpo").tolist() == pytest.approx(expected)


def test_rloo_hand_values() -> None:
    # A_i = R_i - mean of the others
    adv = rloo_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0, 3.0, 1.0, 2.0, 2.0]), 4)
    assert adv.tolist() == pytest.approx([1.0, -1 / 3, -1 / 3, -1 / 3, 3 - 5 / 3, 1 - 7 / 3, 0.0, 0.0])


@pytest.mark.parametrize("estimator", ADVANTAGE_ESTIMATORS)
@pytest.mark.parametrize("value", [0.1, 1.0, -1.0, 0.0, 1e30])
def test_equal_rewards_give_exact_zero(estimator: str, value: float) -> None:
    # the mean of three 0.1s is not bit-equal to 0.1: the zero must be enforced, not hoped for
    rewards = torch.tensor([value] * 3 + [0.0, 1.0, 0.5], dtype=torch.float64)
    adv = compute_advantages(rewards, 3, estimator)
    assert (adv[:3] == 0).all()
    assert torch.isfinite(adv).all() and (adv[3:] != 0).any()


def test_group_size_one() -> None:
    assert torch.equal(grpo_advantages(torch.tensor([1.0, 0.0]), 1), torch.zeros(2))
    assert torch.equal(compute_advantages(torch.tensor([1.0, 0.0]), 1, "dr_grpo"), torch.zeros(2))
    with pytest.raises(ValueError, match=">= 2"):
        rloo_advantages(torch.tensor([1.0, 0.0]), 1)


def test_dtypes_and_empty_input() -> None:
    assert grpo_advantages(torch.tensor([1, 0, 1, 1]), 2).dtype == torch.float32
    assert grpo_advantages(torch.tensor([True, False]), 2).dtype == torch.float32
    assert grpo_advantages(torch.tensor([1.0, 0.0], dtype=torch.bfloat16), 2).dtype == torch.float32
    assert grpo_advantages([1.0, 0.0], 2).tolist() == pytest.approx([0.7071, -0.7071], abs=1e-4)
    for estimator in ADVANTAGE_ESTIMATORS:
        assert compute_advantages(torch.zeros(0), 4, estimator).shape == (0,)


def test_input_checks() -> None:
    with pytest.raises(ValueError, match="multiple of group_size"):
        grpo_advantages(torch.zeros(5), 4)
    with pytest.raises(ValueError, match="reshape"):
        grpo_advantages(torch.zeros(2, 4), 4)
    with pytest.raises(ValueError, match="group_size"):
        grpo_advantages(torch.zeros(4), 0)
    with pytest.raises(ValueError, match="valid estimators"):
        compute_advantages(torch.zeros(4), 2, "ppo")


def test_no_gradient_flows_into_rewards() -> None:
    rewards = torch.tensor([1.0, 0.0], requires_grad=True)
    assert not compute_advantages(rewards, 2).requires_grad


@pytest.mark.parametrize("group", [[1.0, 1.0, 1.0], [0.3, 0.3, 0.3, 0.3], [0.0, 0.0]])
def test_equal_rewards_with_eps_zero_give_zero_not_nan(group: list[float]) -> None:
    rewards = torch.tensor(group + [0.0, 1.0] * (len(group) // 2) + [0.5] * (len(group) % 2))
    adv = grpo_advantages(rewards, len(group), eps=0.0)
    assert torch.isfinite(adv).all()
    assert (adv[: len(group)] == 0).all() and (adv[len(group) :] != 0).any()
    assert (compute_advantages(rewards, len(group), "grpo", eps=0.0)[: len(group)] == 0).all()


@pytest.mark.parametrize("eps", [-1.0, -1e-9, float("nan"), float("inf"), True, "0.1"])
def test_bad_eps_is_refused(eps) -> None:
    # eps = -1 with a unit std would divide by 0 or flip the signs of a whole group
    with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
        grpo_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), 4, eps=eps)


@pytest.mark.parametrize("estimator", ADVANTAGE_ESTIMATORS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_rewards_are_refused(estimator: str, bad: float) -> None:
    rewards = torch.tensor([1.0, 0.0, 0.0, bad])
    with pytest.raises(ValueError, match=r"rewards must be finite, got .* at sample 3"):
        compute_advantages(rewards, 2, estimator)
