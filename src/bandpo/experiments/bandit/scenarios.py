"""The bandit testbed's scenarios: each one plain scalars (so the resolved scenario is written as JSON), the
named registry `SCENARIOS` and the default trio `DEFAULT_SCENARIOS`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["DEFAULT_SCENARIOS", "SCENARIOS", "BanditScenario", "get_scenario", "list_scenarios"]


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
