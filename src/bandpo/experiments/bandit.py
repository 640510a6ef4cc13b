"""Tabular softmax GRPO testbed: the Band mechanism in seconds, with no language model; its scenarios, the
simulation, and `bandpo compare --task bandit` (every method x scenario) with its report.md and plots.

Each context is an independent softmax policy over K actions. One action (the "best") has a high Bernoulli reward
mean but starts rare; one "decoy" has a medium mean and may start likely; the other K - 2 actions share the rest of
the mass (softmax of N(0, 1) logits) and have means drawn from U(0, other_mu_max). The three default scenarios
(`DEFAULT_SCENARIOS`) are those that separated the methods in our first sweeps (docs/results/bandit/report.md):
trap, flat tail and one on-policy update per batch.

Every context has its own logits over K actions (no sharing, no generalisation). A step samples a GRPO group of n
actions per context, draws Bernoulli rewards, computes group-normalised advantages, computes each method's ratio
bounds once from the sampling log-probabilities, and then runs `epochs x minibatches` plain SGD updates of
`bandpo.losses.policy_loss` (the real loss, dual-clip c = 10) on the logits. The loss of one update is the sum over
contexts of the token mean over that context's minibatch samples, so contexts do not dilute each other.

All seeds and contexts of one method are one batch of shape (seeds * contexts, K). Each seed draws its environment
from `torch.Generator(1000 + seed)` and its samples from `torch.Generator(seed)`, by inverse-CDF sampling, so a
seed's results do not depend on which other seeds run, and all methods see the same random numbers (common random
numbers: methods that take the same update follow the same trajectory, bit for bit).

Departures from an LM setting, on purpose: logits are updated directly (SGD on a table, lr 1 by default), and the
"sequence" of a context is its n samples (one token each).

Per method and scenario the report gives, over seeds (mean ± standard error): the fraction of contexts that found
the best action (pi(best) reached the threshold at some step), the median number of steps to find it (pooled over
all contexts, "never" counted as infinite), the final expected reward E_pi[mean], the fraction of contexts locked
on a wrong action (some other action above 0.9 at the end), the policy entropy over steps, and the upward /
downward clip fractions by p_old bin (pooled over seeds). For a scenario where no method can clip (one on-policy
update per batch), it also checks that every method followed the same trajectory, bit for bit.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from bandpo._atomic import write_text_atomic
from bandpo.experiments.arms import MethodSpec
from bandpo.experiments.report import (
    clip_cell,
    format_values,
    import_pyplot,
    machine_info,
    machine_text,
    markdown_table,
    mean_and_spread,
    plot_curves,
    prob_bin_headers,
    save_figure,
)
from bandpo.experiments.stats import STATS_RULE, holm_verdicts, paired_difference
from bandpo.metric_names import PROB_BIN_EDGES, PROB_BIN_LABELS

__all__ = [
    "DEFAULT_SCENARIOS",
    "LOCKED_THRESHOLD",
    "SCENARIOS",
    "BanditEnvironment",
    "BanditRun",
    "BanditScenario",
    "get_scenario",
    "list_scenarios",
    "make_environment",
    "read_bandit_results",
    "run_bandit",
    "run_bandit_compare",
    "sample_actions",
    "summarize_run",
    "update_logits",
    "write_bandit_report",
]


@dataclass(frozen=True, kw_only=True)
class BanditScenario:
    """One bandit setting; every field is a plain scalar so the resolved scenario can be written as JSON."""

    name: str
    description: str
    num_actions: int = 100  # K
    best_prob: float = 0.02  # initial pi(best)
    best_mean: float = 0.9  # reward mean of the best action
    decoy_prob: float = 0.5  # initial pi(decoy)
    decoy_mean: float = 0.6  # reward mean of the decoy
    other_mean_max: float = 0.5  # the other actions' means are U(0, other_mean_max)
    bernoulli: bool = True  # False: the reward is the mean itself (deterministic)
    group_size: int = 8  # n samples per context per step (one GRPO group)
    epochs: int = 4  # passes over each rollout batch
    minibatches: int = 2  # minibatches per epoch (the n samples of each context are split)
    lr: float = 1.0  # plain SGD on the logits
    steps: int = 200
    contexts: int = 16  # contexts per seed
    found_threshold: float = 0.5  # a context "found" the best action once pi(best) reached this

    def __post_init__(self) -> None:
        if self.num_actions < 3:
            raise ValueError(f"num_actions={self.num_actions}: need at least 3 (best, decoy and one other)")
        for field in ("best_prob", "decoy_prob"):
            value = getattr(self, field)
            if not 0.0 < value < 1.0:
                raise ValueError(f"{field}={value}: must lie in (0, 1)")
        if self.best_prob + self.decoy_prob >= 1.0:
            raise ValueError(
                f"best_prob + decoy_prob = {self.best_prob + self.decoy_prob}: must be < 1 to leave mass "
                "for the other actions"
            )
        for field in ("group_size", "epochs", "minibatches", "steps", "contexts"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field}={getattr(self, field)}: must be >= 1")
        if self.group_size < 2:
            raise ValueError(f"group_size={self.group_size}: GRPO needs at least 2 samples per group")
        if self.group_size % self.minibatches:
            raise ValueError(
                f"group_size={self.group_size} is not divisible by minibatches={self.minibatches}: "
                "pick minibatches that divide the group"
            )
        if self.lr <= 0:
            raise ValueError(f"lr={self.lr}: must be > 0")
        if not 0.0 < self.found_threshold <= 1.0:
            raise ValueError(f"found_threshold={self.found_threshold}: must lie in (0, 1]")

    @property
    def minibatch_size(self) -> int:
        return self.group_size // self.minibatches

    @property
    def on_policy(self) -> bool:
        """One update per rollout batch: the ratio is exactly 1 there, so no method can clip."""
        return self.epochs == 1 and self.minibatches == 1

    def replace(self, **changes: object) -> BanditScenario:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


SCENARIOS: dict[str, BanditScenario] = {
    scenario.name: scenario
    for scenario in (
        BanditScenario(
            name="trap",
            description="best action rare (p=0.02, mean 0.9) beside a likely decoy (p=0.5, mean 0.6)",
        ),
        BanditScenario(
            name="flat_tail",
            description="no decoy: the 'decoy' is one more tail action (p=0.02, mean 0.5)",
            decoy_prob=0.02,
            decoy_mean=0.5,
        ),
        BanditScenario(
            name="on_policy",
            description="the trap with one on-policy update per batch (1 epoch x 1 minibatch): ratio = 1",
            epochs=1,
            minibatches=1,
        ),
        BanditScenario(
            name="large_k",
            description="the trap with K=1000 and the best action at p=0.01",
            num_actions=1000,
            best_prob=0.01,
        ),
        BanditScenario(
            name="not_rare",
            description="best action not rare (p=0.3) beside a decoy at p=0.4",
            best_prob=0.3,
            decoy_prob=0.4,
        ),
    )
}

DEFAULT_SCENARIOS: tuple[str, ...] = ("trap", "flat_tail", "on_policy")


def list_scenarios() -> list[str]:
    return list(SCENARIOS)


def get_scenario(name: str) -> BanditScenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown bandit scenario {name!r}; valid: {', '.join(SCENARIOS)}") from None


ENV_SEED_OFFSET = 1000
LOCKED_THRESHOLD = 0.9  # a context is "locked on a wrong action" when another action ends above this
ENTROPY_STEPS = (0, 10, 50)  # entropy columns of the table, plus the final step

Progress = Callable[[str], None]


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


# ---- `bandpo compare --task bandit`: every method on every scenario, and the report


def summarize_run(run: BanditRun, scenario: BanditScenario) -> dict[str, object]:
    """JSON-serialisable per-seed figures and curves of one method on one scenario."""
    steps_to_find = run.steps_to_find(scenario.found_threshold)  # (S, C)
    found = torch.isfinite(steps_to_find)  # (S, C)
    first = steps_to_find.flatten()
    median_steps = (
        float(first.median()) if first.numel() else math.nan
    )  # lower median; inf if half never found
    found_curve = torch.stack(
        [(steps_to_find <= step).to(torch.float64).mean(-1) for step in range(run.steps + 1)], dim=1
    )  # (S, steps + 1) fraction of contexts found by each step
    tokens = run.tokens_by_bin.sum(0)  # (bins,)

    def pooled(fraction: torch.Tensor) -> list[float | None]:
        counts = torch.nan_to_num(fraction) * run.tokens_by_bin  # (S, bins)
        values = counts.sum(0) / tokens.clamp(min=1.0)
        return [float(value) if total > 0 else None for value, total in zip(values, tokens, strict=True)]

    return {
        "seeds": list(run.seeds),
        "found": found.to(torch.float64).mean(-1).tolist(),  # (S,)
        "median_steps_to_find": median_steps,
        "mean_steps_to_find_if_found": float(first[torch.isfinite(first)].mean()) if found.any() else None,
        "final_expected_reward": run.expected_reward[-1].tolist(),  # (S,)
        "locked_wrong": (run.final_max_other > LOCKED_THRESHOLD).to(torch.float64).mean(-1).tolist(),
        "entropy": run.entropy.T.tolist(),  # (S, steps + 1)
        "expected_reward": run.expected_reward.T.tolist(),  # (S, steps + 1)
        "found_curve": found_curve.tolist(),  # (S, steps + 1)
        "clip_up_by_bin": pooled(run.clip_up_by_bin),
        "clip_down_by_bin": pooled(run.clip_down_by_bin),
        "token_share_by_bin": (tokens / tokens.sum().clamp(min=1.0)).tolist(),
        "wall_time_s": run.wall_time_s,
    }


def run_bandit_compare(
    scenarios: Sequence[BanditScenario],
    methods: Sequence[MethodSpec],
    seeds: Sequence[int],
    output_dir: Path,
    *,
    progress: Progress | None = None,
    svg: bool = False,
) -> dict[str, object]:
    """Run every method on every scenario (all seeds batched), write results.json, report.md and plots."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results: dict[str, object] = {
        "task": "bandit",
        "seeds": [int(seed) for seed in seeds],
        "machine": machine_info(),
        "scenarios": {},
    }
    for scenario in scenarios:
        runs: dict[str, BanditRun] = {}
        summaries: dict[str, dict[str, object]] = {}
        for spec in methods:
            if progress:
                progress(
                    f"bandit {scenario.name}: {spec.label} ({len(seeds)} seeds x {scenario.contexts} contexts)"
                )
            runs[spec.label] = run_bandit(scenario, spec.build(), seeds)
            summaries[spec.label] = summarize_run(runs[spec.label], scenario)
            if progress:
                summary = summaries[spec.label]
                progress(
                    f"  found {format_values(summary['found'], 2)}, final E[R] "
                    f"{format_values(summary['final_expected_reward'], 3)}, {runs[spec.label].wall_time_s:.1f} s"
                )
        labels = list(runs)
        identical = all(
            torch.equal(runs[labels[0]].best_prob, runs[label].best_prob)
            and torch.equal(runs[labels[0]].entropy, runs[label].entropy)
            for label in labels[1:]
        )
        results["scenarios"][scenario.name] = {
            "scenario": scenario.to_dict(),
            "methods": summaries,
            "all_methods_identical": identical,
        }
    results["wall_time_s"] = time.perf_counter() - start
    write_text_atomic(output_dir / "results.json", json.dumps(results, indent=1, allow_nan=True) + "\n")
    write_bandit_report(results, output_dir, svg=svg)
    return results


def _steps(value: float, limit: int) -> str:
    return f">{limit}" if not math.isfinite(value) else f"{value:.0f}"


def scenario_tables(name: str, result: dict[str, object]) -> str:
    """The Markdown tables of one scenario (main figures, then clip fractions by p_old bin)."""
    scenario = result["scenario"]
    steps = int(scenario["steps"])
    entropy_steps = [step for step in ENTROPY_STEPS if step < steps] + [steps]
    headers = [
        "method",
        f"found (π_best ≥ {scenario['found_threshold']:g})",
        "median steps to find",
        "final E[R]",
        f"locked on wrong (π > {LOCKED_THRESHOLD:g})",
        "entropy @ " + "/".join(str(step) for step in entropy_steps),
        "wall s",
    ]
    rows = []
    for label, summary in result["methods"].items():
        entropy = summary["entropy"]
        entropy_means = [mean_and_spread([seed[step] for seed in entropy])[0] for step in entropy_steps]
        rows.append(
            [
                label,
                format_values(summary["found"], 2),
                _steps(summary["median_steps_to_find"], steps),
                format_values(summary["final_expected_reward"], 3),
                format_values(summary["locked_wrong"], 2),
                "/".join(f"{value:.2f}" for value in entropy_means),
                f"{summary['wall_time_s']:.1f}",
            ]
        )
    clip_rows = []
    for label, summary in result["methods"].items():
        pairs = zip(summary["clip_up_by_bin"], summary["clip_down_by_bin"], strict=True)
        clip_rows.append([label, *(clip_cell(up, down) for up, down in pairs)])
    first = next(iter(result["methods"].values()))
    first_label = next(iter(result["methods"]))
    clip_rows.append(
        [
            f"share of token-updates ({first_label})",
            *(f"{share:.3f}" for share in first["token_share_by_bin"]),
        ]
    )
    parts = [
        markdown_table(headers, rows),
        "",
        "Clip fraction by p_old bin, upward/downward (up: A > 0 and ratio > ratio_high; down: A < 0 and ratio "
        "< ratio_low), pooled over seeds, per token-update:",
        "",
        markdown_table(["method", *prob_bin_headers()], clip_rows),
    ]
    return "\n".join(parts)


def _labels(results: dict[str, object]) -> list[str]:
    """The methods of every scenario, in their first order."""
    return list(
        dict.fromkeys(label for result in results["scenarios"].values() for label in result["methods"])
    )


def headline_table(results: dict[str, object], key: str = "found", digits: int = 2) -> str:
    """Scenario x method table of one per-seed figure (mean ± standard error)."""
    labels = _labels(results)
    rows = []
    for name, result in results["scenarios"].items():
        row = [name]
        for label in labels:
            summary = result["methods"].get(label)
            row.append(format_values(summary[key], digits) if summary else "")
        rows.append(row)
    return markdown_table(["scenario", *labels], rows)


def verdict_tables(
    results: dict[str, object], reference: str, metrics: Sequence[tuple[str, int]]
) -> tuple[list[str], int]:
    """Scenario x method tables of the paired difference to `reference` (same seeds), one per (metric, digits),
    with the tests, signs and verdicts of `bandpo.experiments.stats`: one Holm family over every cell of every
    table. Returns (tables, family size)."""
    scenarios = results["scenarios"]
    labels = [label for label in _labels(results) if label != reference]
    cells = []  # (table, row, column, difference)
    for table, (key, _) in enumerate(metrics):
        for row, result in enumerate(scenarios.values()):
            base = result["methods"].get(reference)
            for column, label in enumerate(labels):
                summary = result["methods"].get(label)
                if summary and base:
                    cells.append((table, row, column, paired_difference(summary[key], base[key])))
    texts, family_size = holm_verdicts([cell[3] for cell in cells], [metrics[cell[0]][1] for cell in cells])
    grids = [[[name] + [""] * len(labels) for name in scenarios] for _ in metrics]
    for (table, row, column, _), text in zip(cells, texts, strict=True):
        grids[table][row][column + 1] = text
    headers = ["scenario", *(f"{label} − {reference}" for label in labels)]
    return [markdown_table(headers, grid) for grid in grids], family_size


def write_bandit_report(results: dict[str, object], output_dir: Path, *, svg: bool = False) -> Path:
    """report.md plus one PNG per scenario (found fraction, expected reward and entropy over steps)."""
    output_dir = Path(output_dir)
    seeds = results["seeds"]
    lines = [
        "# bandpo compare --task bandit",
        "",
        "Tabular softmax GRPO testbed (`bandpo.experiments.bandit`): independent logits per context, GRPO groups,",
        "several SGD minibatch updates per batch through `bandpo.losses.policy_loss`. Figures are the mean ± "
        f"standard error over {len(seeds)} seeds ({', '.join(map(str, seeds))}); each seed has its own contexts.",
        f"{machine_text(results['machine'])}; total wall time {results.get('wall_time_s', math.nan):.1f} s.",
        "",
        "## Fraction of contexts that found the best action",
        "",
        headline_table(results, "found", 2),
        "",
        "## Final expected reward E_π[mean]",
        "",
        headline_table(results, "final_expected_reward", 3),
    ]
    reference = next(iter(next(iter(results["scenarios"].values()))["methods"]), None)
    if reference is not None and len(next(iter(results["scenarios"].values()))["methods"]) > 1:
        tables, family_size = verdict_tables(results, reference, [("found", 2), ("final_expected_reward", 3)])
        lines += [
            "",
            f"## Against {reference}: paired differences over seeds",
            "",
            "Each seed runs every method on the same contexts with the same random numbers, so differences are "
            f"taken per seed: {STATS_RULE}. The family is every cell of both tables ({family_size} tested).",
            "",
            "Fraction found:",
            "",
            tables[0],
            "",
            "Final expected reward:",
            "",
            tables[1],
        ]
    plt = import_pyplot()
    for name, result in results["scenarios"].items():
        scenario = result["scenario"]
        lines += [
            "",
            f"## Scenario `{name}`",
            "",
            f"{scenario['description']}. K={scenario['num_actions']}, n={scenario['group_size']}, "
            f"{scenario['epochs']} epochs x {scenario['minibatches']} minibatches, SGD lr {scenario['lr']:g}, "
            f"{scenario['steps']} steps, {scenario['contexts']} contexts per seed, "
            f"{'Bernoulli' if scenario['bernoulli'] else 'deterministic'} rewards.",
            "",
        ]
        if len(result["methods"]) > 1:
            verdict = "yes" if result["all_methods_identical"] else "no"
            lines += [f"All methods followed bit-identical trajectories: **{verdict}**.", ""]
        lines += [scenario_tables(name, result), "", f"![{name}](bandit_{name}.png)"]
        fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
        steps = list(range(int(scenario["steps"]) + 1))
        for ax, key, title, ylabel in (
            (axes[0], "found_curve", "contexts that found the best action", "fraction found"),
            (axes[1], "expected_reward", "expected reward E_π[mean]", "E[R]"),
            (axes[2], "entropy", "policy entropy", "nats"),
        ):
            curves = {label: (steps, summary[key]) for label, summary in result["methods"].items()}
            plot_curves(ax, curves, title=title, ylabel=ylabel)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"bandit scenario '{name}' (mean ± s.e. over {len(seeds)} seeds)", y=1.02)
        save_figure(fig, output_dir / f"bandit_{name}.png", svg=svg)
    path = output_dir / "report.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


# what the report reads of each method's summary (`summarize_run`)
SUMMARY_KEYS = (
    "found",
    "final_expected_reward",
    "locked_wrong",
    "median_steps_to_find",
    "entropy",
    "found_curve",
    "expected_reward",
    "clip_up_by_bin",
    "clip_down_by_bin",
    "wall_time_s",
)


def read_bandit_results(path: Path) -> dict[str, object]:
    """A bandit comparison's results.json, checked before a report is built from it: a file of another kind
    (a benchmark's results.json, a truncated write) is named with what is wrong, not met as a KeyError."""
    path = Path(path)
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(results, dict) or results.get("task") != "bandit":
        found = results.get("task") if isinstance(results, dict) else type(results).__name__
        raise ValueError(
            f"{path}: not the results.json of `bandpo compare --task bandit` (task {found!r}, expected 'bandit')"
        )
    seeds, scenarios = results.get("seeds"), results.get("scenarios")
    if not isinstance(seeds, list) or not seeds or not all(isinstance(seed, int) for seed in seeds):
        raise ValueError(f"{path}: 'seeds' must be a non-empty list of integers, got {seeds!r}")
    if not isinstance(scenarios, dict) or not scenarios:
        raise ValueError(f"{path}: 'scenarios' must be a non-empty object of scenario results")
    for name, result in scenarios.items():
        methods = result.get("methods") if isinstance(result, dict) else None
        if (
            not isinstance(methods, dict)
            or not methods
            or not isinstance(result.get("scenario"), dict)
            or "all_methods_identical" not in result
        ):
            raise ValueError(
                f"{path}: scenario {name!r} needs its 'scenario' settings, 'methods' results and "
                "'all_methods_identical'"
            )
        for label, summary in methods.items():
            missing = [key for key in SUMMARY_KEYS if not isinstance(summary, dict) or key not in summary]
            if missing:
                raise ValueError(f"{path}: scenario {name!r}, method {label!r} lacks {', '.join(missing)}")
            found = summary["found"]
            if not isinstance(found, list) or len(found) != len(seeds):
                raise ValueError(
                    f"{path}: scenario {name!r}, method {label!r}: 'found' must hold one value per seed "
                    f"({len(seeds)}), got {found!r}"
                )
    return results
