"""Tabular softmax GRPO testbed: the Band mechanism in seconds, with no language model; its scenarios, the
simulation, and `bandpo compare --task bandit` (every method x scenario) with its report.md and plots.

One module per job: `scenarios` (the settings), `simulation` (the environment and the SGD updates),
`results` (results.json: per-seed figures, read back and checked), `report` (report.md and plots) and
`compare` (the driver: every method on every scenario).

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

from bandpo.experiments.bandit.compare import run_bandit_compare
from bandpo.experiments.bandit.report import (
    headline_table,
    scenario_tables,
    verdict_tables,
    write_bandit_report,
)
from bandpo.experiments.bandit.results import (
    LOCKED_THRESHOLD,
    RESULTS_FILE,
    SUMMARY_KEYS,
    read_bandit_results,
    summarize_run,
)
from bandpo.experiments.bandit.scenarios import (
    DEFAULT_SCENARIOS,
    SCENARIOS,
    BanditScenario,
    get_scenario,
    list_scenarios,
)
from bandpo.experiments.bandit.simulation import (
    BanditEnvironment,
    BanditRun,
    make_environment,
    run_bandit,
    sample_actions,
    update_logits,
)

__all__ = [
    "DEFAULT_SCENARIOS",
    "LOCKED_THRESHOLD",
    "RESULTS_FILE",
    "SCENARIOS",
    "SUMMARY_KEYS",
    "BanditEnvironment",
    "BanditRun",
    "BanditScenario",
    "get_scenario",
    "headline_table",
    "list_scenarios",
    "make_environment",
    "read_bandit_results",
    "run_bandit",
    "run_bandit_compare",
    "sample_actions",
    "scenario_tables",
    "summarize_run",
    "update_logits",
    "verdict_tables",
    "write_bandit_report",
]
