"""Experiment tooling: compare methods at equal budget and show what Band does.

- `bandit`, `scenarios`, `bandit_compare`: the tabular softmax GRPO testbed (`bandpo compare --task bandit`).
- `lm_compare`: methods x seeds through `bandpo.training.train`, with a resumable plan (`bandpo compare`),
  built from `lm_plan` (the runs and which are done), `lm_execute` (training them, one progress bar),
  `lm_results` (per_seed.json, validated), `lm_reuse` (`--reuse`: finished runs of another per_seed.json),
  `lm_report` (report.md) and `lm_sweep` (`--sweep PARAM=...` and its plot).
- `stats`: every report's statistics: paired t and exact Wilcoxon signed-rank tests, exact Student-t
  intervals, Holm-Bonferroni per test.
- `confirmatory`: the preregistered confirmatory test of docs/experiments.md (`bandpo compare --confirmatory`).
- `bound_plots`: the paper's Fig. 1 and Fig. 2 for any divergences and radii (`bandpo plot bounds`).
- `report`: mean ± standard error over seeds, Markdown tables, line plots with a spread band.
- `methods_spec`: `name:key=value,...` method specs of the command line.

Importing this package is cheap; matplotlib and the training stack load when a report or a run needs them.
"""
