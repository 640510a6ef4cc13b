"""The bandit simulation: every seed and context of one method as one batch of tabular softmax policies, GRPO
groups, and `epochs x minibatches` SGD updates of `bandpo.losses.policy_loss` on the logits.

Each seed draws its environment from `torch.Generator(1000 + seed)` and its samples from
`torch.Generator(seed)`, by inverse-CDF sampling, so a seed's results do not depend on which other seeds run,
and all methods see the same random numbers (methods that take the same update follow the same trajectory,
bit for bit). The loss of one update is the sum over contexts of the token mean over that context's minibatch
samples, so contexts do not dilute each other.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from bandpo.experiments.bandit.scenarios import BanditScenario
from bandpo.metric_names import PROB_BIN_EDGES, PROB_BIN_LABELS

__all__ = [
    "BanditEnvironment",
    "BanditRun",
    "make_environment",
    "run_bandit",
    "sample_actions",
    "update_logits",
]

ENV_SEED_OFFSET = 1000


@dataclass(frozen=True)
class BanditEnvironment:
    """Initial logits and reward means of `seeds x contexts` independent contexts (float64)."""

    logits: torch.Tensor  # (S, C, K)
    mean: torch.Tensor  # (S, C, K) reward mean of each action
    best: torch.Tensor  # (S, C) index of the best action
    decoy: torch.Tensor  # (S, C) index of the decoy


@dataclass(frozen=True)
class BanditRun:
    """What one method did over all seeds of a scenario (CPU float64 tensors)."""

    seeds: tuple[int, ...]
    best_prob: torch.Tensor  # (steps + 1, S, C) pi(best) before each step and at the end
    expected_reward: torch.Tensor  # (steps + 1, S) E_pi[mean], averaged over contexts
    entropy: torch.Tensor  # (steps + 1, S) policy entropy in nats, averaged over contexts
    final_max_other: torch.Tensor  # (S, C) largest final probability of an action other than the best
    clip_up_by_bin: torch.Tensor  # (S, bins) A > 0 and ratio > ratio_high, fraction of tokens in the bin
    clip_down_by_bin: torch.Tensor  # (S, bins) A < 0 and ratio < ratio_low
    tokens_by_bin: torch.Tensor  # (S, bins) token-updates per p_old bin (the denominators)
    wall_time_s: float

    @property
    def steps(self) -> int:
        return self.best_prob.shape[0] - 1

    def steps_to_find(self, threshold: float) -> torch.Tensor:
        """(S, C) first step count at which pi(best) >= threshold; +inf where never."""
        reached = self.best_prob >= threshold  # (steps + 1, S, C)
        step_index = torch.arange(reached.shape[0], dtype=torch.float64).view(-1, 1, 1)
        first = torch.where(reached, step_index, torch.full_like(step_index, math.inf)).amin(dim=0)
        return first  # (S, C)


def make_environment(scenario: BanditScenario, seeds: Sequence[int]) -> BanditEnvironment:
    """Initial policy and reward means per seed: best at p0, decoy at its p, the rest softmax(N(0,1)), shuffled."""
    num_actions, contexts = scenario.num_actions, scenario.contexts
    logits, mean, best, decoy = [], [], [], []
    for seed in seeds:
        generator = torch.Generator().manual_seed(ENV_SEED_OFFSET + int(seed))
        rest = 1.0 - scenario.best_prob - scenario.decoy_prob
        other_probs = rest * torch.softmax(
            torch.randn(contexts, num_actions - 2, generator=generator, dtype=torch.float64), dim=-1
        )  # (C, K - 2)
        probs = torch.cat(
            [
                torch.full((contexts, 1), scenario.best_prob, dtype=torch.float64),
                torch.full((contexts, 1), scenario.decoy_prob, dtype=torch.float64),
                other_probs,
            ],
            dim=-1,
        )  # (C, K): best at 0, decoy at 1
        means = torch.cat(
            [
                torch.full((contexts, 1), scenario.best_mean, dtype=torch.float64),
                torch.full((contexts, 1), scenario.decoy_mean, dtype=torch.float64),
                scenario.other_mean_max
                * torch.rand(contexts, num_actions - 2, generator=generator, dtype=torch.float64),
            ],
            dim=-1,
        )  # (C, K)
        permutation = torch.stack(
            [torch.randperm(num_actions, generator=generator) for _ in range(contexts)]
        )  # (C, K): new position -> old index
        logits.append(probs.log().gather(1, permutation))
        mean.append(means.gather(1, permutation))
        inverse = permutation.argsort(dim=1)  # old index -> new position
        best.append(inverse[:, 0])
        decoy.append(inverse[:, 1])
    return BanditEnvironment(
        logits=torch.stack(logits), mean=torch.stack(mean), best=torch.stack(best), decoy=torch.stack(decoy)
    )


def sample_actions(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling: probs (B, K), uniforms (B, n) in [0, 1) -> action indices (B, n)."""
    cdf = probs.cumsum(dim=-1)  # (B, K)
    cdf = cdf / cdf[:, -1:]  # guard against a last entry a rounding error below 1
    actions = torch.searchsorted(cdf, uniforms, right=True)  # (B, n)
    return actions.clamp_(max=probs.shape[-1] - 1)


def _grpo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """rewards (B, n), one group per row -> (B, n) GRPO advantages."""
    from bandpo.advantages import grpo_advantages

    return grpo_advantages(rewards.reshape(-1), rewards.shape[1]).reshape(rewards.shape)


def _bin_index(old_prob: torch.Tensor) -> torch.Tensor:
    edges = torch.tensor(PROB_BIN_EDGES[1:-1], dtype=old_prob.dtype)
    return torch.bucketize(old_prob, edges, right=True)  # [lo, hi) bins, p = 1 in the last


def update_logits(
    logits: torch.Tensor,
    actions: torch.Tensor,
    advantages: torch.Tensor,
    method,
    *,
    lr: float,
    orders: torch.Tensor,
    minibatches: int,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One GRPO step of SGD on tabular logits with `bandpo.losses.policy_loss`.

    Args:
        logits: (B, K) logits of the sampling (old) policy.
        actions: (B, n) sampled actions; advantages: (B, n).
        method: a `bandpo.methods` method object; its bounds come from the old log-probs, once per batch.
        orders: (epochs, B, n) per-epoch permutation of each row's samples; minibatch j of an epoch takes the
            j-th contiguous slice of the permuted samples.

    Returns:
        The updated logits (B, K) and per-row diagnostics: `clip_up`, `clip_down`, `tokens`, each (B, bins),
        counting token-updates by p_old bin (bins of `metric_names.PROB_BIN_EDGES`).

    Notes:
        The loss of one minibatch is `sum over rows of the mean over the row's samples`, which is
        `policy_loss(..., agg="seq_mean_token_mean") * B`. Its naive per-sample form is tested against.
    """
    from bandpo.losses import policy_loss
    from bandpo.methods import RatioBounds

    num_rows, group_size = actions.shape
    minibatch_size = group_size // minibatches
    old_logp = torch.log_softmax(logits, dim=-1).gather(1, actions)  # (B, n)
    bounds = method(old_logp)  # (B, n) each, computed once per rollout batch
    bins = _bin_index(old_logp.exp())  # (B, n)
    num_bins = len(PROB_BIN_LABELS)
    clip_up = torch.zeros(num_rows, num_bins, dtype=torch.float64)
    clip_down = torch.zeros_like(clip_up)
    tokens = torch.zeros_like(clip_up)
    params = logits.detach().clone().requires_grad_(True)
    mask = torch.ones(num_rows, minibatch_size, dtype=logits.dtype)
    for order in orders:  # (B, n) one epoch
        for start in range(0, group_size, minibatch_size):
            index = order[:, start : start + minibatch_size]  # (B, m)
            logp = torch.log_softmax(params, dim=-1).gather(1, actions.gather(1, index))  # (B, m)
            mb_old = old_logp.gather(1, index)
            mb_adv = advantages.gather(1, index)
            mb_low = bounds.ratio_low.gather(1, index)
            mb_high = bounds.ratio_high.gather(1, index)
            out = policy_loss(
                logp,
                mb_old,
                mb_adv,
                mask,
                method=method,
                agg="seq_mean_token_mean",
                bounds=RatioBounds(mb_low, mb_high),
            )
            (grad,) = torch.autograd.grad(out.loss * num_rows, params)
            with torch.no_grad():
                ratio = torch.exp(torch.clamp(logp - mb_old, -20.0, 20.0))  # (B, m)
                mb_bins = bins.gather(1, index)
                ones = torch.ones_like(ratio)
                tokens.scatter_add_(1, mb_bins, ones)
                clip_up.scatter_add_(1, mb_bins, ((mb_adv > 0) & (ratio > mb_high)).to(ratio.dtype))
                clip_down.scatter_add_(1, mb_bins, ((mb_adv < 0) & (ratio < mb_low)).to(ratio.dtype))
                params -= lr * grad
    return params.detach(), {"clip_up": clip_up, "clip_down": clip_down, "tokens": tokens}


def run_bandit(
    scenario: BanditScenario,
    method,
    seeds: Sequence[int],
    *,
    progress: Callable[[int, int], None] | None = None,
) -> BanditRun:
    """Train one method on every seed of a scenario at once; `progress(step, steps)` is called after each step."""
    from bandpo.regularizers import entropy_from_logits

    start = time.perf_counter()
    seeds = tuple(int(seed) for seed in seeds)
    env = make_environment(scenario, seeds)
    num_seeds, contexts, num_actions = env.logits.shape
    group_size = scenario.group_size
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    logits = env.logits.reshape(num_seeds * contexts, num_actions).clone()  # (B, K)
    mean = env.mean.reshape(num_seeds * contexts, num_actions)
    best = env.best.reshape(-1, 1)  # (B, 1)

    best_prob, expected_reward, entropy = [], [], []

    def record(current: torch.Tensor) -> None:
        probs = torch.softmax(current, dim=-1)  # (B, K)
        best_prob.append(probs.gather(1, best).view(num_seeds, contexts))
        expected_reward.append((probs * mean).sum(-1).view(num_seeds, contexts).mean(-1))
        entropy.append(
            entropy_from_logits(current, chunk_size=current.shape[0]).view(num_seeds, contexts).mean(-1)
        )

    num_bins = len(PROB_BIN_LABELS)
    totals = {
        key: torch.zeros(num_seeds, num_bins, dtype=torch.float64)
        for key in ("clip_up", "clip_down", "tokens")
    }
    record(logits)
    for step in range(scenario.steps):
        # per-seed random numbers, drawn in a fixed order so they do not depend on the method
        uniforms, reward_uniforms, orders = [], [], []
        for generator in generators:
            uniforms.append(torch.rand(contexts, group_size, generator=generator, dtype=torch.float64))
            reward_uniforms.append(torch.rand(contexts, group_size, generator=generator, dtype=torch.float64))
            orders.append(
                torch.stack(
                    [torch.randperm(group_size, generator=generator) for _ in range(scenario.epochs)]
                )  # (epochs, n), shared by the contexts of the seed
            )
        probs = torch.softmax(logits, dim=-1)
        actions = sample_actions(probs, torch.cat(uniforms))  # (B, n)
        action_mean = mean.gather(1, actions)
        rewards = (
            (torch.cat(reward_uniforms) < action_mean).to(torch.float64)
            if scenario.bernoulli
            else action_mean
        )
        advantages = _grpo_advantages(rewards)
        order = torch.stack(orders).repeat_interleave(contexts, dim=0).transpose(0, 1)  # (epochs, B, n)
        logits, counts = update_logits(
            logits,
            actions,
            advantages,
            method,
            lr=scenario.lr,
            orders=order.contiguous(),
            minibatches=scenario.minibatches,
        )
        for key, value in counts.items():
            totals[key] += value.view(num_seeds, contexts, num_bins).sum(1)
        record(logits)
        if progress is not None:
            progress(step + 1, scenario.steps)

    final_probs = torch.softmax(logits, dim=-1).scatter(1, best, 0.0)  # best masked out
    tokens = totals["tokens"]
    safe = tokens.clamp(min=1.0)
    return BanditRun(
        seeds=seeds,
        best_prob=torch.stack(best_prob),
        expected_reward=torch.stack(expected_reward),
        entropy=torch.stack(entropy),
        final_max_other=final_probs.amax(-1).view(num_seeds, contexts),
        clip_up_by_bin=torch.where(tokens > 0, totals["clip_up"] / safe, torch.nan),
        clip_down_by_bin=torch.where(tokens > 0, totals["clip_down"] / safe, torch.nan),
        tokens_by_bin=tokens,
        wall_time_s=time.perf_counter() - start,
    )
