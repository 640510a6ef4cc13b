"""The tabular softmax GRPO testbed: vectorised update vs a per-sample loop, on-policy equality, seeds, scenarios."""

from __future__ import annotations

import math

import pytest
import torch

from bandpo.experiments.bandit import (
    BanditScenario,
    get_scenario,
    list_scenarios,
    make_environment,
    run_bandit,
    sample_actions,
    update_logits,
)
from bandpo.methods import get_method

TINY = dict(num_actions=12, contexts=3, steps=6, group_size=4)


def reference_update(logits, actions, advantages, low, high, orders, minibatches, lr, dual_clip_c=10.0):
    """The naive form: one context at a time, one sample at a time, the clipped surrogate written out."""
    old_logp = torch.log_softmax(logits, dim=-1)
    group_size = actions.shape[1]
    size = group_size // minibatches
    rows = []
    for b in range(logits.shape[0]):
        row = logits[b].clone()
        for order in orders:
            for start in range(0, group_size, size):
                row = row.detach().requires_grad_(True)
                logp = torch.log_softmax(row, dim=-1)
                total = torch.zeros((), dtype=logits.dtype)
                for j in order[b, start : start + size].tolist():
                    a = int(actions[b, j])
                    adv = advantages[b, j]
                    ratio = torch.exp(logp[a] - old_logp[b, a])
                    term = torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, low[b, j], high[b, j]))
                    if adv < 0:
                        term = torch.minimum(term, -adv * dual_clip_c)
                    total = total + term
                (grad,) = torch.autograd.grad(total / size, row)
                row = (row - lr * grad).detach()
        rows.append(row)
    return torch.stack(rows)


@pytest.mark.parametrize("method_name", ["clip", "band", "dcpo"])
def test_vectorised_update_equals_per_sample_loop(method_name: str) -> None:
    generator = torch.Generator().manual_seed(3)
    rows, num_actions, group_size, epochs, minibatches = 3, 7, 4, 3, 2
    logits = torch.randn(rows, num_actions, generator=generator, dtype=torch.float64) * 2
    actions = torch.randint(num_actions, (rows, group_size), generator=generator)
    advantages = torch.randn(rows, group_size, generator=generator, dtype=torch.float64)
    orders = torch.stack(
        [
            torch.stack([torch.randperm(group_size, generator=generator) for _ in range(rows)])
            for _ in range(epochs)
        ]
    )  # (epochs, B, n)
    method = get_method(method_name)
    lr = 4.0  # large steps so that the bounds bind
    new, counts = update_logits(
        logits, actions, advantages, method, lr=lr, orders=orders, minibatches=minibatches
    )
    low, high = method(torch.log_softmax(logits, -1).gather(1, actions))
    expected = reference_update(logits, actions, advantages, low, high, orders, minibatches, lr)
    torch.testing.assert_close(new, expected, rtol=1e-10, atol=1e-12)
    assert not torch.equal(new, logits)
    clipped = counts["clip_up"].sum() + counts["clip_down"].sum()
    assert clipped > 0, "the test case must exercise the clipped branch"
    assert counts["tokens"].sum() == rows * group_size * epochs


def test_on_policy_scenario_all_methods_bit_identical() -> None:
    scenario = get_scenario("on_policy").replace(steps=8, contexts=4)
    runs = [
        run_bandit(scenario, get_method(name), [0, 1]) for name in ("clip", "clip_higher", "dcpo", "band")
    ]
    runs.append(run_bandit(scenario, get_method("band_upper", delta=0.2), [0, 1]))
    for run in runs[1:]:
        assert torch.equal(run.best_prob, runs[0].best_prob)
        assert torch.equal(run.entropy, runs[0].entropy)
        assert torch.equal(run.expected_reward, runs[0].expected_reward)
        assert torch.equal(run.clip_up_by_bin.nan_to_num(), torch.zeros_like(run.clip_up_by_bin))
    # it did learn something: the policy moved
    assert not torch.equal(runs[0].best_prob[0], runs[0].best_prob[-1])


def test_off_policy_methods_differ_in_the_trap() -> None:
    scenario = get_scenario("trap").replace(steps=4, contexts=4)
    clip = run_bandit(scenario, get_method("clip"), [0])
    band = run_bandit(scenario, get_method("band"), [0])
    assert not torch.equal(clip.best_prob, band.best_prob)


@pytest.mark.slow  # two methods x two seeds of the trap: over a minute on 2 busy cores
def test_band_upper_finds_the_rare_best_action_where_clip_does_not() -> None:
    """The mechanism, on a shortened trap (deterministic given the seeds): Band's upper side lets pi(best) grow."""
    scenario = get_scenario("trap").replace(steps=20, contexts=8)
    clip = run_bandit(scenario, get_method("clip"), [0, 1])
    band_upper = run_bandit(scenario, get_method("band_upper"), [0, 1])
    found_clip = torch.isfinite(clip.steps_to_find(0.5)).double().mean()
    found_upper = torch.isfinite(band_upper.steps_to_find(0.5)).double().mean()
    assert found_upper > found_clip + 0.3


def test_results_of_a_seed_do_not_depend_on_the_other_seeds() -> None:
    scenario = BanditScenario(name="t", description="t", **TINY)
    both = run_bandit(scenario, get_method("band"), [0, 1])
    alone = run_bandit(scenario, get_method("band"), [1])
    assert torch.equal(both.best_prob[:, 1], alone.best_prob[:, 0])
    assert torch.equal(both.entropy[:, 1], alone.entropy[:, 0])


def test_environment_has_the_requested_initial_probabilities() -> None:
    scenario = get_scenario("trap").replace(contexts=5)
    env = make_environment(scenario, [0, 3])
    probs = torch.softmax(env.logits, -1)  # (S, C, K)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 5, dtype=torch.float64))
    torch.testing.assert_close(
        probs.gather(2, env.best.unsqueeze(-1)).squeeze(-1), torch.full((2, 5), 0.02, dtype=torch.float64)
    )
    torch.testing.assert_close(
        probs.gather(2, env.decoy.unsqueeze(-1)).squeeze(-1), torch.full((2, 5), 0.5, dtype=torch.float64)
    )
    assert torch.all(env.mean.gather(2, env.best.unsqueeze(-1)) == 0.9)
    others = env.mean.scatter(2, env.best.unsqueeze(-1), 0.0).scatter(2, env.decoy.unsqueeze(-1), 0.0)
    assert others.max() < 0.5
    assert not torch.equal(env.best[0], env.best[1]) or not torch.equal(env.mean[0], env.mean[1])


def test_sample_actions_inverse_cdf() -> None:
    probs = torch.tensor([[0.1, 0.2, 0.7], [0.5, 0.5, 0.0]], dtype=torch.float64)
    uniforms = torch.tensor(
        [[0.0, 0.1, 0.29, 0.31, 0.999999], [0.49, 0.5, 0.99, 0.0, 0.999999]], dtype=torch.float64
    )
    actions = sample_actions(probs, uniforms)
    assert actions.tolist() == [[0, 1, 1, 2, 2], [0, 1, 1, 0, 1]]


def test_steps_to_find_marks_never_as_inf() -> None:
    scenario = BanditScenario(name="t", description="t", **TINY)
    run = run_bandit(scenario, get_method("clip"), [0])
    first = run.steps_to_find(1.0)
    assert torch.all(first == math.inf)
    assert torch.all(run.steps_to_find(0.0) == 0)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"num_actions": 2}, "num_actions"),
        ({"best_prob": 0.0}, "best_prob"),
        ({"best_prob": 0.6, "decoy_prob": 0.5}, "best_prob + decoy_prob"),
        ({"group_size": 8, "minibatches": 3}, "group_size"),
        ({"group_size": 1, "minibatches": 1}, "group_size"),
        ({"lr": 0.0}, "lr"),
        ({"steps": 0}, "steps"),
    ],
)
def test_scenario_validation_names_the_field(changes: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field.replace("+", r"\+")):
        BanditScenario(name="bad", description="bad", **changes)


def test_unknown_scenario_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="trap"):
        get_scenario("nope")
    assert {"trap", "flat_tail", "on_policy"} <= set(list_scenarios())


def test_entropy_curve_is_the_entropy_of_the_policy() -> None:
    scenario = BanditScenario(name="t", description="t", **TINY)
    run = run_bandit(scenario, get_method("clip"), [0, 1])
    logp = torch.log_softmax(make_environment(scenario, [0, 1]).logits, dim=-1)  # (S, C, K)
    naive = -(logp.exp() * logp).sum(-1).mean(-1)  # (S,)
    torch.testing.assert_close(run.entropy[0], naive, rtol=1e-12, atol=1e-12)
    assert run.entropy.dtype == torch.float64
